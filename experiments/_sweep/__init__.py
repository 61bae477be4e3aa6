"""Shared machinery of the ablation sweeps (Ray Tune trials, MLflow parent/child runs, result tables).

`experiments/` is not an installed package: the scripts put their own folder on `sys.path` and the
driver hands it to Ray workers through the runtime environment's PYTHONPATH.
"""

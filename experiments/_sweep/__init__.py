"""Shared machinery of the ablation sweeps (Ray Tune trials, MLflow parent/child runs, result tables).

How a row of a table reaches its trial: the table script (`experiments/ablate_*.py`) builds typed
`TrialSpec`s (`spec.py`: row label, seed, work function, pretraining overrides or baseline, probe
features); `runner.run_sweep` builds one `SweepContext` (tracking, data, pretraining config, probe
settings; saved in `sweep.json` for `--resume`) and hands both to Ray Tune; each trial
(`trial.run_trial`) calls `spec.work(TrialContext)`, a function of `work.py` or of the table script.

`experiments/` is not an installed package: run as `python experiments/<script>.py`, a script's folder
is on `sys.path`, so `_sweep` imports as is; Ray ships `_sweep` and the scripts' modules to its workers
through the runtime environment (`py_modules`, `runner.worker_modules`).
"""

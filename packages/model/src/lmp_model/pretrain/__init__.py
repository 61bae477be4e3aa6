"""LMP pretraining: DeepSpeed engine, checkpoints and resume, MLflow tracking, export (`lmp-pretrain`).

from lmp_model.pretrain import load_pretrain_config, run
result = run(load_pretrain_config("experiments/configs/pretrain/demo.yaml", ["train.steps=10"]))
"""

from lmp_model.pretrain.config import (
    ConfigError,
    DataConfig,
    MlflowConfig,
    PretrainConfig,
    TrainConfig,
    config_to_dict,
    config_to_yaml,
    load_pretrain_config,
    with_overrides,
)
from lmp_model.pretrain.train import NonFiniteLossError, PretrainResult, run

__all__ = [
    "ConfigError",
    "DataConfig",
    "MlflowConfig",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainResult",
    "TrainConfig",
    "config_to_dict",
    "config_to_yaml",
    "load_pretrain_config",
    "run",
    "with_overrides",
]

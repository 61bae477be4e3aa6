"""lmp_model: the LMP model (paper Sec. 3), its three losses, and pretraining.

from lmp_model import LMP, ModelConfig
model = LMP(ModelConfig(), dims={"video": Dv, "audio": Da, "text": Dl})
out = model(batch)            # LMPOutput(loss, terms)
feats = model.encode(batch)   # v_base, a_base, v_ctx, a_ctx, l_ctx, v_cross_a, v_cross_l, masks
"""

from lmp_model.config import (
    CrossModalConfig,
    EncoderConfig,
    LossConfig,
    MaskingConfig,
    ModelConfig,
    ProjectionConfig,
    load_model_config,
)
from lmp_model.model import LMP, LMPOutput

__all__ = [
    "LMP",
    "CrossModalConfig",
    "EncoderConfig",
    "LMPOutput",
    "LossConfig",
    "MaskingConfig",
    "ModelConfig",
    "ProjectionConfig",
    "load_model_config",
]

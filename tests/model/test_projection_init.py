"""ProjectionConfig.init: the orthogonal default is an isometry of the base features."""

import pytest
import torch

from lmp_model.config import ModelConfig, ProjectionConfig, load_model_config
from lmp_model.modules.embedding import ModalityEmbedding


@pytest.mark.parametrize("dim_in,d", [(24, 16), (16, 16), (12, 16)])
def test_orthogonal_projection_preserves_geometry(dim_in, d):
    torch.manual_seed(0)
    emb = ModalityEmbedding(dim_in, d, 8, ProjectionConfig(token_norm=False))
    w = emb.proj.weight.detach()
    gram = w @ w.T if d <= dim_in else w.T @ w  # orthonormal rows (d <= dim_in) or columns
    assert torch.allclose(gram, torch.eye(min(d, dim_in)), atol=1e-5)
    assert torch.count_nonzero(emb.proj.bias) == 0
    if d >= dim_in:  # nothing of the base features is lost: distances are kept exactly
        x = torch.randn(5, dim_in)
        assert torch.allclose(torch.cdist(emb.proj(x), emb.proj(x)), torch.cdist(x, x), atol=1e-4)
    s = torch.linalg.svdvals(w)
    assert s.max() / s.min() == pytest.approx(1.0, abs=1e-4)


def test_default_init_is_pytorchs_and_badly_conditioned():
    torch.manual_seed(0)
    w = ModalityEmbedding(128, 128, 8, ProjectionConfig(init="default")).proj.weight.detach()
    assert w.abs().max() <= 128**-0.5  # nn.Linear's uniform(-1/sqrt(in), 1/sqrt(in))
    s = torch.linalg.svdvals(w)
    assert s.max() / s.min() > 20  # why it is not the default (ProjectionConfig.init)


def test_unknown_init_is_a_named_error():
    with pytest.raises(ValueError, match=r"ModelConfig.projection.init: expected 'orthogonal' or 'default'"):
        ModelConfig(projection=ProjectionConfig(init="xavier"))
    assert load_model_config(None, ["projection.init=default"]).projection.init == "default"

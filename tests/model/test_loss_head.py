"""`loss.head`: SimCLR-style heads between the features and the per-shot terms; probes read before them."""

import sys
from pathlib import Path

import pytest
import torch

from lmp_model.losses import info_nce, masked_token_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import build, make_batch, tiny  # noqa: E402


def test_terms_read_the_heads_outputs():
    """intra/video = Eq. 1 on head(contextual output); inter/v2a and cross/a2l = InfoNCE on the heads'."""
    model = build(tiny("loss.window=0", "loss.head=mlp"))
    assert set(model.loss_head) == {"video", "audio", "text", "cross_audio", "cross_text"}
    got = {}
    for name in ("video", "audio", "cross_audio", "cross_text"):
        model.loss_head[name].register_forward_hook(lambda m, i, o, n=name: got.__setitem__(n, o))
    model.embed["video"].register_forward_hook(lambda m, i, o: got.__setitem__("v_target", o[1]))
    batch = make_batch()
    masked = model.sample_masks(batch, torch.Generator().manual_seed(3))
    out = model(batch, masked=masked)
    mc, tau, sm = model.cfg.masking, model.cfg.loss.temperature, batch["shot_mask"]
    sel = masked["video"]
    ref = masked_token_loss(got["video"][sel], got["v_target"][sel], mc.temperature, mc.normalize)
    assert out.terms["intra/video"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out.terms["inter/v2a"].item() == pytest.approx(
        info_nce(got["video"][sm], got["audio"][sm], tau).item(), rel=1e-6
    )
    pairs = sm & batch["text_mask"].any(dim=1, keepdim=True)
    assert out.terms["cross/a2l"].item() == pytest.approx(
        info_nce(got["cross_audio"][pairs], got["cross_text"][pairs], tau).item(), rel=1e-6
    )


def test_probed_features_do_not_depend_on_the_heads_and_the_heads_train():
    model = build(tiny("loss.head=mlp"))
    batch = make_batch()
    model.eval()
    with torch.no_grad():
        before = model.encode(batch)
        for p in model.loss_head.parameters():
            p.add_(1.0)
        after = model.encode(batch)
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.train()
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.loss_head.parameters())


def test_no_head_by_default_and_bad_kind_is_named():
    assert not hasattr(build(tiny()), "loss_head")
    with pytest.raises(ValueError, match="loss.head"):
        build(tiny("loss.head=deep"))

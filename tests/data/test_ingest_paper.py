"""The `paper` encoders load small randomly initialised checkpoints through the same path as real weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lmp_data.ingest import WeightsError
from lmp_data.ingest.encoders import build, load_config
from lmp_data.ingest.encoders.vggish import VGGish
from lmp_data.ingest.media import write_movie
from lmp_data.ingest.pipeline import IngestConfig, ingest
from lmp_data.store import FeatureStore

W2V = {
    "encoder_embed_dim": 32,
    "encoder_num_layers": 1,
    "encoder_num_heads": 2,
    "encoder_ff_interm_features": 64,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 2,
    "extractor_conv_layer_config": [[16, 10, 5], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 2, 2], [16, 2, 2]],
}


def _weights(tmp_path):
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from torchaudio.models import wav2vec2_model
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet
    from transformers import BartConfig, BartModel, PreTrainedTokenizerFast

    from lmp_data.ingest.encoders.paper import WAV2VEC2_BASE

    torch.manual_seed(0)
    torch.save(
        VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [1, 1, 1, 1], R2Plus1dStem).state_dict(),
        tmp_path / "v.pth",
    )
    save_file(VGGish(hidden=16).state_dict(), str(tmp_path / "vggish.safetensors"))
    torch.save(wav2vec2_model(**{**WAV2VEC2_BASE, **W2V}).state_dict(), tmp_path / "w2v.pt")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["the key the storm the night train"],
        trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    bart = BartModel(
        BartConfig(
            vocab_size=tok.get_vocab_size(),
            d_model=24,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
        )
    )
    bart.save_pretrained(tmp_path / "bart")
    fast.save_pretrained(tmp_path / "bart")
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(f"""
video: {{name: r2plus1d, weights: {{model: {tmp_path}/v.pth}}, options: {{layers: [1, 1, 1, 1], frames_per_shot: 4}}}}
audio:
  name: vggish_wav2vec2
  weights: {{vggish: {tmp_path}/vggish.safetensors, wav2vec2: {tmp_path}/w2v.pt}}
  options: {{vggish_hidden: 16, wav2vec2_arch: {W2V}}}
text: {{name: bart, weights: {{model: {tmp_path}/bart}}, options: {{max_length: 32}}}}
batch_size: 4
device: cpu
""")
    return cfg


def test_paper_encoders_from_small_checkpoints(tmp_path):
    cfg = _weights(tmp_path)
    enc = build(load_config(cfg))
    rec = enc.record()
    assert (rec["video"]["dim"], rec["audio"]["dim"], rec["text"]["dim"]) == (512, 128 + 32, 24)
    assert rec["video"]["checksum"] == hashlib.sha256((tmp_path / "v.pth").read_bytes()).hexdigest()
    movie = write_movie(tmp_path / "movies" / "m1.mp4", [1.0, 1.4, 1.2], seed=3, speech=False)
    summary = ingest(tmp_path / "movies", tmp_path / "store", IngestConfig(progress=False), encoders=enc)
    assert summary.results[0].status == "done", summary.format()
    store = FeatureStore.open(tmp_path / "store")
    assert store.info["encoders"]["audio"]["name"] == "vggish_wav2vec2"
    m = store.read_movie("m1")
    assert m["video"].shape == (3, 512) and m["audio"].shape == (3, 160) and np.abs(m["audio"]).sum() > 0
    assert m["text"].shape[1] == 24 and len(m["text"]) > 0 and movie["srt"].exists()
    # the same checkpoint loads into a fresh set with identical results (frozen, deterministic)
    frames = torch.randint(0, 255, (2, 4, 112, 112, 3), dtype=torch.uint8)
    torch.testing.assert_close(enc.video.encode(frames), build(load_config(cfg)).video.encode(frames))


def test_missing_and_mismatched_weight_files_are_named(tmp_path):
    cfg = _weights(tmp_path)
    (tmp_path / "w2v.pt").unlink()
    with pytest.raises(WeightsError, match=r"w2v\.pt: weights file for audio encoder wav2vec 2\.0"):
        build(load_config(cfg))
    torch.save({"not": torch.zeros(1)}, tmp_path / "w2v.pt")
    with pytest.raises(WeightsError, match=r"w2v\.pt: weights do not fit the wav2vec2_base architecture"):
        build(load_config(cfg))

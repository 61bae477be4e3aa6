"""Does a pretraining recipe learn labels that live only in shot order, and does it keep weak content?

Synthetic movies, no files: each shot shows one of Z setups (a prototype per modality + noise); a movie's
*order* label picks its editing regime, a doubly stochastic Markov chain (so every regime has the same
setup histogram and a time average of base features cannot see it); its *content* label adds a weak
persistent vector to every shot. The script pretrains LMP (plain PyTorch loop, the model config's losses)
and prints each term against its chance level and a linear probe of both labels on time-averaged
`v_ctx + a_ctx` of held-out movies. Measured in docs/results.md ("Before and after").

    .venv/bin/python experiments/diagnostics/order_vs_content.py --steps 100
    .venv/bin/python experiments/diagnostics/order_vs_content.py --steps 100 --lr 1e-3 \
        --model-file experiments/configs/model/paper_literal.yaml       # the paper's literal choices
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from lmp_model.config import load_model_config
from lmp_model.model import LMP

REPO = Path(__file__).resolve().parents[2]


def make_world(rng: np.random.Generator, z: int = 16, dims=(64, 32, 32), classes: int = 8) -> dict:
    protos = {m: rng.standard_normal((z, d)) for m, d in zip(("video", "audio", "text"), dims)}
    regimes = []
    for _ in range(classes):  # a mix of two permutations plus a little uniform mass: doubly stochastic
        perms = [np.eye(z)[rng.permutation(z)] for _ in range(2)]
        regimes.append(0.8 * sum(perms) / 2 + 0.2 / z)
    content = {m: rng.standard_normal((classes, protos[m].shape[1])) for m in protos}
    return {"protos": protos, "regimes": regimes, "content": content, "z": z, "classes": classes}


def movie(rng, world, shots: int, noise: float = 1.5, content_amp: float = 0.1):
    order, content = int(rng.integers(world["classes"])), int(rng.integers(world["classes"]))
    setup = np.empty(shots, int)
    setup[0] = rng.integers(world["z"])
    for i in range(1, shots):
        setup[i] = rng.choice(world["z"], p=world["regimes"][order][setup[i - 1]])
    feats = {}
    for m, p in world["protos"].items():
        x = (
            p[setup]
            + content_amp * world["content"][m][content]
            + noise * rng.standard_normal((shots, p.shape[1]))
        )
        feats[m] = x.astype(np.float32)
    return feats, order, content


def batch(movies, k: int, idx, starts) -> dict:
    """One language token per shot (the simplest alignment)."""
    n = len(idx)
    get = {
        m: np.stack([movies[j][0][m][s : s + k] for j, s in zip(idx, starts)])
        for m in ("video", "audio", "text")
    }
    return {
        "video": torch.from_numpy(get["video"]),
        "audio": torch.from_numpy(get["audio"]),
        "shot_mask": torch.ones(n, k, dtype=torch.bool),
        "text": torch.from_numpy(get["text"]),
        "text_mask": torch.ones(n, k, dtype=torch.bool),
        "token_shot": torch.eye(k, dtype=torch.bool).expand(n, k, k).clone(),
        "movie": [int(j) for j in idx],
    }


def probe(model, movies, k: int, features=("v_ctx", "a_ctx"), n_train: int = 200) -> list[float]:
    xs = []
    model.eval()
    with torch.no_grad():
        for mv in movies:
            n = len(mv[0]["video"]) // k
            e = model.encode(batch([mv] * n, k, [0] * n, [i * k for i in range(n)]))
            xs.append(torch.cat([e[f].mean(dim=(0, 1)) for f in features]).numpy())
    model.train()
    x = np.array(xs)
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    out = []
    for y in (np.array([m[1] for m in movies]), np.array([m[2] for m in movies])):
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(x[:n_train], y[:n_train])
        out.append(float(clf.score(x[n_train:], y[n_train:])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--model-file", default=str(REPO / "experiments/configs/model/demo.yaml"))
    p.add_argument("overrides", nargs="*", help="ModelConfig key=value overrides")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    world = make_world(np.random.default_rng(123))
    rng_train, rng_eval = np.random.default_rng(1), np.random.default_rng(2)
    train = [movie(rng_train, world, 400) for _ in range(100)]
    held_out = [movie(rng_eval, world, 60) for _ in range(300)]
    model = LMP(
        load_model_config(a.model_file, a.overrides), {m: v.shape[1] for m, v in world["protos"].items()}
    )
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    from transformers.optimization import get_cosine_schedule_with_warmup

    sched = get_cosine_schedule_with_warmup(opt, 10, a.steps)
    k, n, rng = 30, 32, np.random.default_rng(0)
    print(
        f"init: probe order/content {probe(model, held_out, k)} (chance {1 / world['classes']:.3f})",
        flush=True,
    )
    t0 = time.time()
    for step in range(1, a.steps + 1):
        movies = np.repeat(rng.integers(len(train), size=n // 2), 2)  # two windows per movie (data.views)
        out = model(batch(train, k, movies, rng.integers(0, 400 - k, size=n)))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == a.steps:
            ratio = " ".join(f"{t}={out.terms[t].item() / out.chance[t].item():.2f}" for t in out.terms)
            print(f"step {step} ({time.time() - t0:.0f} s) loss/chance: {ratio}", flush=True)
    print(f"step {a.steps}: probe order/content {probe(model, held_out, k)}", flush=True)


if __name__ == "__main__":
    main()

"""Training throughput: images/s of sdekit's training loop (sdekit.tasks.train.train, what `sdekit train`
runs) vs a plain PyTorch loop with the same network, loss, batch and optimiser.

The plain loop is forward + loss + backward + Adam step and nothing else; sdekit's loop adds the
learning-rate warm-up, gradient clipping, EMA, logging and its final checkpoint. Both run the same
number of steps from the first one, alternating which goes first; the ratio sdekit / plain is the price of those extras (< 1).

    python benchmarks/bench_train.py [--steps 10] [--batch 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, save_json, save_text  # noqa: E402

# the bundled digits model's recipe (src/sdekit/assets/digits/config.json)
RECIPE = dict(data="digits", sde="vp", loss="edm", P_mean=-0.8, P_std=1.4, lr=5e-4, warmup=200, class_cond=True,
              label_dropout=0.15, ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn=(8,), dropout=0.1)


def plain_loop(cfg, steps: int) -> float:
    """images/s of the bare loop with sdekit's network and loss function."""
    from sdekit.data.datasets import load_dataset
    from sdekit.tasks.losses import get_loss
    from sdekit.tasks.train import build_model
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.data, seed=cfg.seed)
    model = build_model(cfg, data)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = get_loss(cfg.loss)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.time()
    for _ in range(steps):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
        labels = data.labels[idx].clone()
        labels[torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout] = -1     # no label
        loss = loss_fn(model, model.sde, data.x[idx], labels, P_mean=cfg.P_mean, P_std=cfg.P_std,
                       sigma_data=cfg.sigma_data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * cfg.batch_size / (time.time() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is reported")
    ap.add_argument("--out", default="train")
    args = ap.parse_args(argv)
    from sdekit.tasks.train import TrainConfig, train
    ours, plain = [], []
    for r in range(args.rounds):                       # alternate which loop goes first (warm caches, drift)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(out=str(Path(tmp) / "run"), steps=args.steps, batch_size=args.batch, sample_every=0,
                              ckpt_every=0, log_every=args.steps, progress=False,
                              threads=torch.get_num_threads(), **RECIPE)      # the plain loop's threads
            if r % 2:
                plain.append(plain_loop(cfg, args.steps))
            ours.append(float(train(cfg)["img_per_s"]))
        if not r % 2:
            plain.append(plain_loop(cfg, args.steps))
        print(f"round {r}: sdekit {ours[-1]:.1f} img/s, plain {plain[-1]:.1f} img/s", flush=True)
    o, p = sorted(ours)[len(ours) // 2], sorted(plain)[len(plain) // 2]
    command = "python benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{command.strip()}`", "", f"Machine: {machine()}", "",
                      f"Network and loss: the bundled digits recipe (U-Net ch 32, EDM loss, class-conditional), "
                      f"batch {args.batch}, {args.steps} steps per round, {args.rounds} rounds (median).", "",
                      md_table(["loop", "images / s", "ratio to plain"],
                               [["**sdekit train**", f"{o:.1f}", f"{o / p:.3f}"], ["plain PyTorch loop", f"{p:.1f}", "1.000"]])]) + "\n"
    save_json(args.out, {"command": command, "machine": machine(), "sdekit": ours, "plain": plain})
    save_text(f"{args.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()

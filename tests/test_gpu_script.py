"""benchmarks/gpu.py, the script prepared for a lent GPU, run on the CPU with --quick: every step runs and writes
what a device run brings back (env.json, steps.json, the bench table with sdekit's row and diffusers' or the reason
it is missing, the runs packed into parts), the half-precision rows stay within the network's rounding, and the
checkpoints it wrote, unpacked from the parts, are ones `sdekit train --resume` continues. Also: the optimiser's
batch rules, and --device cuda without a GPU stopping at once."""
import gzip
import io
import json
import math
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
gpu = pytest.importorskip("gpu")

SHARED = [p / "shared" / "data" for p in (ROOT, ROOT.parent)]


def _shared(name: str, probe: str):
    return next((d / name for d in SHARED if (d / name / probe).is_file()), None)


def _tiny_mnist(root: Path) -> Path:
    """MNIST's four idx files with a few random digits (64 training, 300 test images)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for part, n in (("train", 64), ("t10k", 300)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            with gzip.open(root / f"{part}-{kind}-ubyte.gz", "wb") as f:
                f.write(head + arr.astype(np.uint8).tobytes())
    return root


def _tiny_emoji(root: Path) -> Path:
    """The emoji folder's layout (emoji.json, twemoji-64/, noto-64/) with 8 random training-split emoji."""
    from PIL import Image
    codes = [f"{c:X}" for c in range(0x1F600, 0x1F700) if zlib.crc32(f"{c:X}".encode()) % 10 != 0][:8]
    root.mkdir()
    (root / "emoji.json").write_text(json.dumps([{"unified": c, "image": f"{c.lower()}.png", "category": "Food & Drink"}
                                                 for c in codes]))
    rng = np.random.default_rng(0)
    for style in ("twemoji-64", "noto-64"):
        (root / style).mkdir()
        for c in codes:
            Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA").save(root / style / f"{c.lower()}.png")
    return root


def test_the_optimiser_follows_the_batch_by_the_documented_rules():
    from sdekit.tasks.train.recipes import recipe
    r = recipe("emoji")                                   # batch 64, lr 5e-4, EMA 0.9995, warm-up 200
    assert gpu.scaled(r, r["batch_size"]) == {"batch_size": 64, "lr": r["lr"], "ema": r["ema"], "warmup": r["warmup"]}
    s = gpu.scaled(r, 256)
    assert s["lr"] == pytest.approx(2 * r["lr"]) and s["warmup"] == 50
    half_life = lambda ema, batch: batch * math.log(0.5) / math.log(ema)       # in images
    assert half_life(s["ema"], 256) == pytest.approx(half_life(r["ema"], 64))


def test_cuda_without_a_gpu_stops_at_once_with_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu.main(["--device", "cuda", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cuda" in err[0] and "no cuda device" in err[0]
    assert "error" in json.loads((tmp_path / "env.json").read_text())
    assert not (tmp_path / "runs").exists()


def test_quick_run_writes_every_result_and_resumable_checkpoints(tmp_path):
    emoji = _shared("emoji", "emoji.json") or _tiny_emoji(tmp_path / "emoji")
    mnist = _shared("mnist", "t10k-images-idx3-ubyte.gz") or _tiny_mnist(tmp_path / "mnist")
    out, runs = tmp_path / "out", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu", "--out", str(out),
           "--runs", str(runs), "--minutes", "2", "--emoji", str(emoji), "--mnist", str(mnist)]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]

    info = json.loads((out / "env.json").read_text())
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and info["quick"] is True
    steps = json.loads((out / "steps.json").read_text())["steps"]
    assert list(steps) == list(gpu.STEPS)
    assert all(r["status"] == "ok" and r["wall_s"] > 0 for r in steps.values()), steps
    for name in ("train-emoji", "distil"):
        assert steps[name]["step"] == gpu.QUICK.emoji_steps == gpu.QUICK.cd_steps
        assert steps[name]["optimiser"]["batch_size"] == gpu.QUICK.batch

    md = (out / "bench.md").read_text()
    assert "| sdekit dpm_solver | " in md
    assert "| diffusers DPM-Solver++(2M) | " in md or "- diffusers DPM-Solver++(2M): " in md
    bench = json.loads((out / "bench.json").read_text())
    rel = {r["dtype"]: np.mean(r["rel_rms_vs_float32"]) for r in bench["half"]}
    assert rel["float32"] == 0 and 0 < rel["float16"] < 0.03 and 0 < rel["bfloat16"] < 0.15   # the network's rounding

    parts = sorted(out.glob("runs.tar.gz.*"))
    assert parts and all(q.stat().st_size <= 15.5 * 2 ** 20 for q in parts)
    assert len(list(out.iterdir())) <= 8                  # what the device machine brings back
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(b"".join(q.read_bytes() for q in parts)), mode="r:gz") as t:
        t.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    from sdekit.apps.cli import main as sdekit_main
    from sdekit.tasks.train import read_checkpoint
    for run in ("emoji-gpu", "mnist-cd-gpu"):
        folder = unpacked / "runs" / run
        assert (folder / "checkpoint.safetensors").read_bytes() == (runs / run / "checkpoint.safetensors").read_bytes()
        assert (folder / "model" / "model.safetensors").is_file() and not (folder / ".lock").exists()
        assert sdekit_main(["train", "--out", str(folder), "--resume", "--steps", "3", "--no-progress"]) == 0
        assert read_checkpoint(folder / "checkpoint.safetensors").step == 3

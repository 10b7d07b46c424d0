"""The training loop: exact resume after SIGKILL, DDP over 2 gloo processes, bad input."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdekit.apps.cli import main
from sdekit.core.errors import UserError
from sdekit.tasks.train import EMA, Batches, TrainConfig, train

PY = sys.executable
TINY = ["--data", "digits", "--sde", "vp", "--loss", "edm", "--class-cond", "--label-dropout", "0.2",
        "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--attn", "8", "--batch-size", "16",
        "--warmup", "5", "--log-every", "5", "--sample-every", "0", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args, **kw):
    return subprocess.run([PY, "-m", "sdekit.apps.cli", "train", *args], env=ENV, capture_output=True, text=True, **kw)


def _tensors(run):
    return load_file(str(Path(run) / "checkpoint.safetensors"))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).rglob("*") if p.is_file() and p.name != ".lock"}   # the run lock: bookkeeping


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    steps = "40"
    ref = _cli(*TINY, "--steps", steps, "--ckpt-every", "5", "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    p = subprocess.Popen([PY, "-m", "sdekit.apps.cli", "train", *TINY, "--steps", steps, "--ckpt-every", "5",
                          "--out", str(run)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "log.csv"
    deadline = time.time() + 1800          # generous: a busy machine may take minutes to start Python
    while time.time() < deadline and p.poll() is None:
        if log.exists() and any(line.startswith("10,") for line in log.read_text().splitlines()):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(load_file(str(run / "checkpoint.safetensors"))["opt.0.step"].item())
    assert 5 <= killed_at < 40
    res = _cli(*TINY, "--steps", steps, "--ckpt-every", "5", "--out", str(run), "--resume")
    assert res.returncode == 0, res.stderr
    a, b = _tensors(tmp_path / "ref"), _tensors(run)
    assert a.keys() == b.keys()
    for k in a:
        if not k.startswith("rng."):
            assert torch.equal(a[k], b[k]), k
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(5, 41, 5)]


def test_ddp_two_gloo_processes_match_one_process_on_the_union_batch(tmp_path):
    args = ["--data", "toy:gmm8", "--sde", "ve", "--loss", "dsm", "--hidden", "48", "--depth", "2",
            "--batch-size", "32", "--steps", "4", "--warmup", "0", "--dropout", "0", "--log-every", "1",
            "--sample-every", "0", "--ckpt-every", "0", "--no-progress", "--lr", "1e-2"]
    one = _cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(Path(PY).parent / "torchrun"), "--nproc_per_node=2", "--master_port=29533",
                          "-m", "sdekit.apps.cli", "train", *args, "--out", str(tmp_path / "two")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("trained 4 steps") == 1                       # only rank 0 reports
    a, b = _tensors(tmp_path / "one"), _tensors(tmp_path / "two")
    moved = 0
    for k in a:
        if k.startswith(("model.", "ema.", "opt.")):
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
            moved += 1
    assert moved > 10
    # and a different batch split (or the full batch on each rank) would not match:
    half = _cli(*[v if v != "32" else "16" for v in args], "--out", str(tmp_path / "half"))
    c = _tensors(tmp_path / "half")
    assert not torch.allclose(a["model.net.out.weight"], c["model.net.out.weight"], rtol=1e-5, atol=1e-6)


def test_batches_are_epochs_of_permutations():
    b = Batches(10, 4, seed=0)
    first = torch.cat([b.indices(k) for k in range(5)])               # 20 positions = 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(Batches(10, 4, seed=0).indices(3), b.indices(3))


def test_ema_warmup_and_average():
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, 0.9)
    assert ema.rate(0) == pytest.approx(0.1) and ema.rate(10 ** 6) == 0.9
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m, 0)                                                   # e = 0.1 * 0 + 0.9 * 1
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(m, 10 ** 6)
    assert ema.model.weight.item() == pytest.approx(0.9 * 0.9 + 0.1)


def test_training_lowers_the_loss_on_toy_data(tmp_path):
    cfg = TrainConfig(data="toy:gmm8", sde="vp", loss="dsm", hidden=64, depth=2, batch_size=128, steps=150,
                      lr=3e-3, warmup=10, log_every=50, sample_every=150, ckpt_every=0, out=str(tmp_path / "r"),
                      progress=False)
    s = train(cfg)
    rows = [r.split(",") for r in (tmp_path / "r" / "log.csv").read_text().splitlines()[1:]]
    assert float(rows[-1][1]) < 0.8 * float(rows[0][1])
    assert s["step"] == 150 and (tmp_path / "r" / "samples" / "step0000150.png").exists()
    assert (tmp_path / "r" / "model" / "config.json").exists()


def test_bad_input_exit_2_and_run_dir_intact(tmp_path, capsys):
    run = tmp_path / "run"
    base = TINY + ["--steps", "4", "--ckpt-every", "2", "--out", str(run)]
    assert main(["train", *base]) == 0
    before = _digest(run)

    def fails(args, pattern):
        capsys.readouterr()
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and pattern in err, err
        assert _digest(run) == before

    fails(base, "already holds a run")
    fails(base + ["--resume", "--lr", "1e-3"], "changed hyper-parameters: lr")
    fails(base + ["--resume", "--ch", "16"], "changed hyper-parameters: ch")
    fails([*base, "--resume", "--data", "cifar100"], "changed hyper-parameters: data")
    fails([*base, "--resume", "--sde", "ou"], "changed hyper-parameters: sde")
    fails([*base[:-1], str(tmp_path / "new"), "--sde", "ou"], "unknown SDE")
    (tmp_path / "empty").mkdir()
    fails([*base[:-1], str(tmp_path / "new"), "--data", f"folder:{tmp_path / 'empty'}"], "no images")
    # a checkpoint of another architecture, with matching hyper-parameters
    other = tmp_path / "other"
    other.mkdir()
    from safetensors import safe_open
    with safe_open(str(run / "checkpoint.safetensors"), "pt") as f:
        meta = f.metadata()
    t = _tensors(run)
    t["model.net.conv_in.weight"] = torch.zeros(3, 3, 3, 3)
    meta.pop("sdekit_sha256", None)                    # written by hand: no checksum, read unchecked
    save_file(t, str(other / "checkpoint.safetensors"), metadata=meta)
    before_other = _digest(other)
    capsys.readouterr()
    assert main(["train", *base[:-1], str(other), "--resume", "--steps", "6"]) == 2
    assert "another architecture" in capsys.readouterr().err and _digest(other) == before_other
    # truncated checkpoint
    data = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    before = _digest(run)
    fails(base + ["--resume"], "corrupt or truncated")


def test_invalid_numbers():
    with pytest.raises(UserError, match="batch-size"):
        train(TrainConfig(batch_size=0))
    with pytest.raises(UserError, match="unknown loss"):
        train(TrainConfig(loss="l1"))

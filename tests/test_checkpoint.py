"""Training checkpoints are checked field by field, a resumed run cleans up after killed writes, says
when there is nothing left to train, and uses a thread count that fits the machine."""
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sdekit.tasks.train.loop as loop
from sdekit.core import threads
from sdekit.apps.cli import main
from sdekit.core.errors import UserError
from sdekit.core.io import atomic_path, is_temp_name, remove_stale_temps
from sdekit.core.persist import CHECKSUM, tensors_checksum
from sdekit.tasks.train import HPARAMS_IGNORED, TrainConfig, read_checkpoint, train

TOY = TrainConfig(data="toy:gmm8", sde="ve", loss="dsm", hidden=16, depth=1, batch_size=16, steps=4, warmup=0,
                  log_every=2, sample_every=0, ckpt_every=2, progress=False, threads=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "run"
    train(replace(TOY, out=str(out)))
    return out


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(folder).rglob("*") if p.is_file() and p.name != ".lock"}   # the run lock: bookkeeping


def _copy(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _rewrite(folder: Path, edit_tensors=None, edit_state=None, meta_edit=None):
    path = folder / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    state = json.loads(meta["state"])
    if edit_tensors:
        edit_tensors(tensors)
    if edit_state:
        edit_state(state)
    meta["state"] = json.dumps(state)
    meta[CHECKSUM] = tensors_checksum(tensors)          # the defect under test, not a checksum mismatch
    if meta_edit:
        meta_edit(meta)
    save_file(tensors, str(path), metadata=meta)


def _resume_fails(folder: Path, steps: int = 6) -> str:
    """The one-line UserError message of resuming the run in ``folder``, checked to leave it untouched."""
    before = _digest(folder)
    with pytest.raises(UserError) as e:
        train(replace(TOY, out=str(folder), steps=steps, resume=True))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and _digest(folder) == before, msg
    return msg


def _set_state(key, value):
    def edit(state):
        state[key] = value
    return edit


CHECKPOINT_DEFECTS = [
    ("state step", dict(edit_state=_set_state("step", "4")), "step must be an integer"),
    ("state step < 0", dict(edit_state=_set_state("step", -1)), "step must be an integer"),
    ("state step below the optimizer's", dict(edit_state=_set_state("step", 1)), "optimizer step"),
    ("threads", dict(edit_state=_set_state("threads", 0)), "threads must be"),
    ("hparams", dict(edit_state=_set_state("hparams", [])), "hparams is missing or not"),
    ("param_groups", dict(edit_state=_set_state("param_groups", [{"params": "all"}])), "param_groups are malformed"),
    ("opt_scalars", dict(edit_state=_set_state("opt_scalars", {"x": 1})), "opt_scalars are malformed"),
    ("python rng", dict(edit_state=lambda s: s["rng"].update(python=[3, [1, 2], None])), "invalid RNG state"),
    ("numpy rng", dict(edit_state=lambda s: s["rng"].update(numpy=["MT19937", [0], 0, 0, 0.0])), "invalid RNG state"),
    ("torch rng", dict(edit_tensors=lambda t: t.update({"rng.torch": torch.zeros(3, dtype=torch.uint8)})),
     "invalid RNG state"),
    ("no torch rng", dict(edit_tensors=lambda t: t.pop("rng.torch")), "no torch RNG state"),
    ("stray tensor", dict(edit_tensors=lambda t: t.update({"other.x": torch.zeros(1)})), "unexpected tensor"),
    ("nan weights", dict(edit_tensors=lambda t: t["model.net.out.bias"].fill_(float("nan"))), "NaN or infinite"),
    ("adam moment shape", dict(edit_tensors=lambda t: t.update({"opt.0.exp_avg": torch.zeros(7)})),
     "optimizer tensor"),
    ("adam state of a parameter it lacks", dict(edit_tensors=lambda t: t.update({"opt.99.exp_avg": torch.zeros(1)})),
     "optimizer state for parameter 99"),
    ("ema of another architecture", dict(edit_tensors=lambda t: t.pop("ema.net.out.bias")), "another architecture"),
    ("format", dict(meta_edit=lambda m: m.update(format="sdekit-bundle")), "not an sdekit checkpoint"),
    ("state JSON", dict(meta_edit=lambda m: m.update(state="{")), "invalid JSON"),
    ("state NaN", dict(meta_edit=lambda m: m.update(state=m["state"].replace('"lr": 0.0005', '"lr": NaN'))),
     "invalid JSON"),
]


@pytest.mark.parametrize("what,edit,pattern", CHECKPOINT_DEFECTS, ids=[c[0] for c in CHECKPOINT_DEFECTS])
def test_every_checkpoint_field_is_checked(run, tmp_path, what, edit, pattern):
    folder = _copy(run, tmp_path)
    _rewrite(folder, **edit)
    assert pattern in _resume_fails(folder)


def test_a_good_checkpoint_reads(run):
    ckpt = read_checkpoint(run / "checkpoint.safetensors")
    assert ckpt.step == 4 and ckpt.threads == 1 and ckpt.state["hparams"]["hidden"] == 16


@pytest.mark.parametrize("steps", [4, 2])
def test_resume_of_a_finished_run_says_it_is_complete_and_touches_nothing(run, tmp_path, capsys, steps):
    """A scheduler re-runs a finished job's exact command: exit 0, the run folder unchanged."""
    folder = _copy(run, tmp_path)
    before = _digest(folder)
    s = train(replace(TOY, out=str(folder), steps=steps, resume=True))
    assert s["complete"] and s["step"] == 4 and _digest(folder) == before
    capsys.readouterr()
    args = ["train", "--data", "toy:gmm8", "--sde", "ve", "--loss", "dsm", "--hidden", "16", "--depth", "1",
            "--batch-size", "16", "--warmup", "0", "--steps", str(steps), "--out", str(folder), "--resume"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "trained" not in captured.out and "is complete: it is at step 4" in captured.out
    assert _digest(folder) == before


def test_resume_removes_temp_files_of_killed_writes_and_nothing_else(run, tmp_path):
    folder = _copy(run, tmp_path)
    stale = [folder / ".checkpoint.safetensors.k2j4x9_a.tmp.safetensors", folder / ".log.csv.abcdefgh.tmp.csv",
             folder / "model" / ".model.safetensors.0a1b2c3d.tmp.safetensors"]
    kept = [folder / "notes.tmp", folder / ".checkpoint.safetensors.tmp", folder / "my.checkpoint.safetensors",
            folder / ".model.safetensors.0a1b2c3d.tmp.json"]          # suffix unlike its target's: not ours
    for p in stale + kept:
        p.write_bytes(b"x" * 100)
    s = train(replace(TOY, out=str(folder), steps=6, resume=True))
    assert s["step"] == 6 and s["removed"] == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_temp_names_are_exactly_those_atomic_path_makes(tmp_path):
    for name in ("checkpoint.safetensors", "config.json", "log.csv", "noext", "a.b.c"):
        with atomic_path(tmp_path / name) as tmp:
            assert is_temp_name(tmp.name), tmp.name
            tmp.write_text("x")
    assert remove_stale_temps(tmp_path) == [] and len(list(tmp_path.iterdir())) == 5
    for name in ("config.json", ".config.json", ".config.json.tmp", ".config.json.abcdefgh.tmp.csv",
                 ".config.json.ABCDEFGH.tmp.json", ".config.json.abcdefg.tmp.json"):
        assert not is_temp_name(name), name


# ---- threads ---------------------------------------------------------------------------------------

def test_threads_is_not_a_hyper_parameter_and_resume_keeps_the_checkpoints(run, tmp_path, monkeypatch):
    assert "threads" in HPARAMS_IGNORED
    monkeypatch.setattr(loop, "default_threads", lambda world=1: 3)
    folder = _copy(run, tmp_path)
    before = torch.get_num_threads()
    s = train(replace(TOY, out=str(folder), steps=6, resume=True, threads=None))
    assert s["threads"] == 1                                   # the checkpoint's, not the default
    assert torch.get_num_threads() == before
    s = train(replace(TOY, out=str(folder), steps=8, resume=True, threads=2))
    assert s["threads"] == 2 and read_checkpoint(folder / "checkpoint.safetensors").threads == 2
    s = train(replace(TOY, out=str(tmp_path / "new"), threads=None))
    assert s["threads"] == 3


def test_old_checkpoints_without_threads_resume(run, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "default_threads", lambda world=1: 1)
    folder = _copy(run, tmp_path)
    _rewrite(folder, edit_state=lambda s: s.pop("threads"))
    assert read_checkpoint(folder / "checkpoint.safetensors").threads is None
    assert train(replace(TOY, out=str(folder), steps=5, resume=True, threads=None))["threads"] == 1


def test_default_threads_fit_the_machine(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.2, 0.0, 0.0))
    assert threads.default_threads() == 5                      # 8 CPUs, about 3 kept busy by others
    assert threads.default_threads(world=2) == 2
    assert threads.default_threads(cap=4) == 4
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (20.0, 0.0, 0.0))
    assert threads.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    assert 1 <= threads.available_cpus()


def test_threads_option(tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "--data", "toy:gmm8", "--threads", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["train", "--data", "toy:gmm8", "--sde", "ve", "--hidden", "16", "--depth", "1", "--batch-size", "16",
                 "--steps", "2", "--sample-every", "0", "--no-progress", "--threads", "1",
                 "--out", str(tmp_path / "r")]) == 0
    assert "1 thread)" in capsys.readouterr().out

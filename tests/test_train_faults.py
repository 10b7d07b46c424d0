"""Training runs under the faults clusters deliver: requeues, a second writer, signals, full disks and
damaged weights; and a run that remembers its configuration."""
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

import sdekit
from sdekit.apps.cli import main
from sdekit.core.errors import UserError
from sdekit.core.persist import CHECKSUM, read_tensors, write_tensors
from sdekit.tasks.train import TrainConfig, read_checkpoint, train
from sdekit.tasks.train.folder import LOCK

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TOY = TrainConfig(data="toy:gmm8", sde="ve", loss="dsm", hidden=16, depth=1, batch_size=16, steps=4, warmup=0,
                  log_every=2, sample_every=0, ckpt_every=2, progress=False, threads=1)
FLAGS = ["--data", "toy:gmm8", "--sde", "ve", "--loss", "dsm", "--hidden", "16", "--depth", "1", "--batch-size", "16",
         "--warmup", "0", "--log-every", "2", "--sample-every", "0", "--ckpt-every", "2", "--no-progress",
         "--threads", "1"]


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(folder).rglob("*") if p.is_file() and p.name != LOCK}


def _one_line_error(capsys, args, code=2) -> str:
    capsys.readouterr()
    assert main(["train", *args]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ---- a run that remembers its configuration; requeues ------------------------------------------------------

def test_one_command_serves_the_first_launch_every_requeue_and_a_requeue_after_completion(tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", *FLAGS, "--steps", "4", "--out", str(out), "--resume"]) == 0      # no checkpoint yet
    captured = capsys.readouterr()
    assert "holds no checkpoint yet; starting the run" in captured.err and "trained 4 steps" in captured.out
    before = _digest(out)
    assert main(["train", *FLAGS, "--steps", "4", "--out", str(out), "--resume"]) == 0      # the requeue of a finished run
    captured = capsys.readouterr()
    assert "is complete" in captured.out and "trained" not in captured.out and _digest(out) == before
    assert main(["train", "--out", str(out), "--resume"]) == 0                               # no other flag needed
    assert "is complete: it is at step 4 of --steps 4" in capsys.readouterr().out and _digest(out) == before
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--log-every", "1", "--threads", "1"]) == 0
    assert read_checkpoint(out / "checkpoint.safetensors").state["hparams"]["hidden"] == 16      # the recorded net
    assert json.loads((out / "config.json").read_text())["steps"] == 6


def test_a_resumed_run_keeps_the_recorded_configuration_and_names_every_changed_flag(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FLAGS, "--steps", "2", "--lr", "1e-3", "--out", str(out)]) == 0
    before = _digest(out)
    err = _one_line_error(capsys, ["--out", str(out), "--resume", "--lr", "2e-4", "--hidden", "8", "--steps", "4"])
    assert "lr was 0.001, now 0.0002" in err and "hidden was 16, now 8" in err and _digest(out) == before
    # a flag given with the recorded value is no change; --lr's default (2e-4) is not imposed on the run
    assert main(["train", "--out", str(out), "--resume", "--hidden", "16", "--steps", "4"]) == 0
    assert read_checkpoint(out / "checkpoint.safetensors").state["hparams"]["lr"] == 1e-3


def test_runs_of_earlier_versions_resume_from_their_config_or_their_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    train(replace(TOY, out=str(out)))
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({"hparams": cfg["hparams"], "steps": cfg["steps"]}))  # the old form
    assert main(["train", "--out", str(out), "--resume", "--steps", "6"]) == 0
    (out / "config.json").unlink()                                          # a checkpoint alone
    assert main(["train", "--out", str(out), "--resume", "--steps", "8"]) == 0
    assert read_checkpoint(out / "checkpoint.safetensors").step == 8


def test_a_folder_holding_a_run_is_never_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    train(replace(TOY, out=str(out), steps=6))
    (out / "checkpoint.safetensors").unlink()                               # killed before its first checkpoint
    before = _digest(out)
    err = _one_line_error(capsys, [*FLAGS, "--steps", "2", "--out", str(out)])
    assert "already holds a run (config.json, log.csv)" in err and "--overwrite" in err and _digest(out) == before
    assert "--resume continues a run" in _one_line_error(capsys, [*FLAGS, "--out", str(out), "--resume", "--overwrite"])
    train(replace(TOY, out=str(out), steps=6, resume=True))                 # a checkpoint of step 6 again
    assert main(["train", *FLAGS, "--steps", "2", "--out", str(out), "--overwrite"]) == 0
    assert read_checkpoint(out / "checkpoint.safetensors").step == 2
    rows = (out / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2"]


def test_the_model_option_takes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    train(replace(TOY, out=str(out)))
    a, b = sdekit.load(out), sdekit.load(out / "model")
    assert a.config == b.config
    for (k, v), (_, w) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(v, w), k


# ---- one writer per run folder ----------------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"process %d on testhost" % os.getpid(), 0)
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_and_the_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([PY, "-c", HOLD, str(out / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _one_line_error(capsys, [*FLAGS, "--steps", "2", "--out", str(out)])
        assert f"is in use by another training run (process {holder.pid} on testhost)" in err
        assert _one_line_error(capsys, [*FLAGS, "--steps", "2", "--out", str(out), "--resume"]) == err
        assert sorted(p.name for p in out.iterdir()) == [LOCK]             # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *FLAGS, "--steps", "2", "--out", str(out)]) == 0   # the dead holder's lock: taken over
    assert read_checkpoint(out / "checkpoint.safetensors").step == 2


def test_two_runs_started_together_on_one_folder(tmp_path):
    out = tmp_path / "run"
    cmd = [PY, "-m", "sdekit.apps.cli", "train", *FLAGS, "--steps", "100000", "--ckpt-every", "0", "--out", str(out)]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None and not (out / "log.csv").exists():
            time.sleep(0.05)
        second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
        assert second.returncode == 2 and "trained" not in second.stdout
        assert len(second.stderr.strip().splitlines()) == 1 and f"process {first.pid} on" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=600)


# ---- signals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_of_the_current_step_and_says_how_to_resume(tmp_path, sig, code):
    out = tmp_path / "run"
    # SIGINT as a terminal gives it, whatever the shell that started the tests ignores (a background job's)
    child = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from sdekit.apps.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([PY, "-c", child, "train", *FLAGS, "--steps", "1000000", "--log-every", "1",
                          "--ckpt-every", "0", "--out", str(out)], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if (out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) > 5:
            break
        time.sleep(0.02)
    logged = len((out / "log.csv").read_text().splitlines()) - 1
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == code, stderr
    step = read_checkpoint(out / "checkpoint.safetensors").step
    assert logged <= step < 1000000                          # no step since the signal is lost
    assert f"stopped by {sig.name} at step {step}" in stderr and f"sdekit train --out {out} --resume" in stderr
    assert "Traceback" not in stderr and "trained" not in stdout
    assert main(["train", "--out", str(out), "--resume", "--steps", str(step + 2)]) == 0
    assert read_checkpoint(out / "checkpoint.safetensors").step == step + 2


def test_signals_a_shell_ignores_stay_ignored(tmp_path):
    """Started with SIGINT ignored (nohup, a background job): SIGINT does not stop the run."""
    out = tmp_path / "run"
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); from sdekit.apps.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([PY, "-c", code, "train", *FLAGS, "--steps", "400", "--log-every", "1", "--out", str(out)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and not ((out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) > 2):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0 and "trained 400 steps" in stdout, stderr


# ---- full disks, read-only folders ------------------------------------------------------------------------

def test_a_full_disk_while_writing_the_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    train(replace(TOY, out=str(out)))
    before = (out / "checkpoint.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    err = _one_line_error(capsys, ["--out", str(out), "--resume", "--steps", "6"])
    assert err.startswith(f"sdekit train: error: {out / 'checkpoint.safetensors'}: cannot write") and "No space" in err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_system_errors_of_any_atomic_write_name_the_target(tmp_path, code):
    from sdekit.core.io import atomic_write_text
    target = tmp_path / "log.csv"
    target.write_text("old")

    def failing_write(self, *a, **k):
        raise OSError(code, os.strerror(code), str(self))           # names the temporary file
    import pathlib
    orig = pathlib.Path.write_bytes
    pathlib.Path.write_bytes = failing_write
    try:
        with pytest.raises(UserError) as e:
            atomic_write_text(target, "new")
    finally:
        pathlib.Path.write_bytes = orig
    assert str(e.value) == f"{target}: cannot write ({os.strerror(code)})"
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_commands_check_their_output_can_be_written_before_the_work(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    import sdekit.models.bundle

    def never(*a, **k):
        raise AssertionError("the work started")
    monkeypatch.setattr(sdekit.models.bundle, "generate", never)
    monkeypatch.setattr(sdekit.tasks.train.loop, "load_dataset", never)
    capsys.readouterr()
    assert main(["sample", "--model", "digits", "-n", "64", "--out", str(tmp_path / "grid.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path}: cannot write here (No space left on device)" in err
    err = _one_line_error(capsys, [*FLAGS, "--out", str(tmp_path / "run")])
    assert f"{tmp_path}: cannot write here (No space left on device)" in err and not (tmp_path / "run").exists()


# ---- damaged weights ------------------------------------------------------------------------------------

def _with_checksum(src: Path, dst: Path) -> Path:
    """A copy of the bundle ``src`` whose weights carry a checksum (the same tensors, re-written)."""
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    tensors, meta = read_tensors(src / "model.safetensors")
    write_tensors(dst / "model.safetensors", tensors, {k: v for k, v in meta.items() if k != CHECKSUM})
    return dst


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")                 # the tensors' bytes follow the header
    if how == "bit":
        data[start + (len(data) - start) // 2] ^= 0x10
    else:                                                          # a zeroed 4 KB block, page-aligned
        at = (start + (len(data) - start) // 2) // 4096 * 4096
        data[at:at + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["bit", "block"])
def test_damaged_bundle_weights_are_refused_in_one_line(tmp_path, capsys, how):
    shipped = Path(sdekit.__file__).parent / "assets" / "digits"
    folder = _with_checksum(shipped, tmp_path / "m")
    model = sdekit.load(folder)                                    # undamaged: loads, the same weights
    for (k, v), (_, w) in zip(model.net.state_dict().items(), sdekit.load("digits").net.state_dict().items()):
        assert torch.equal(v, w), k
    _damage(folder / "model.safetensors", how)
    with pytest.raises(UserError, match="do not match the checksum"):
        sdekit.load(folder)
    capsys.readouterr()
    assert main(["sample", "--model", str(folder), "-n", "1", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors: corrupt model" in err


@pytest.mark.parametrize("how", ["bit", "block"])
def test_a_damaged_checkpoint_is_refused_and_nothing_resumes_from_it(tmp_path, capsys, how):
    out = tmp_path / "run"
    train(replace(TOY, out=str(out), hidden=256, depth=2))                # big enough for a 4 KB block
    _damage(out / "checkpoint.safetensors", how)
    before = _digest(out)
    err = _one_line_error(capsys, ["--out", str(out), "--resume", "--steps", "6"])
    assert "checkpoint.safetensors: corrupt checkpoint: its tensors do not match the checksum" in err
    assert _digest(out) == before


def test_files_without_a_checksum_still_load(tmp_path):
    """The shipped bundles and checkpoints written before checksums were recorded."""
    from safetensors.torch import load_file, save_file
    for name in ("digits", "mnist"):
        assert sdekit.load(name).shape
    out = tmp_path / "run"
    train(replace(TOY, out=str(out)))
    path = out / "checkpoint.safetensors"
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if k != CHECKSUM})
    assert train(replace(TOY, out=str(out), steps=6, resume=True))["step"] == 6


def test_a_full_disk_while_logging_is_one_line_naming_the_log(tmp_path, capsys, monkeypatch):
    import sdekit.tasks.train.loop as loop
    out = tmp_path / "run"
    train(replace(TOY, out=str(out)))
    before = (out / "checkpoint.safetensors").read_bytes()

    class Full(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real = open
    monkeypatch.setattr(loop, "open", lambda path, *a, **k: Full() if Path(path).name == "log.csv" else real(path, *a, **k),
                        raising=False)
    err = _one_line_error(capsys, ["--out", str(out), "--resume", "--steps", "6"])
    assert err == f"sdekit train: error: {out / 'log.csv'}: cannot write (No space left on device)"
    assert (out / "checkpoint.safetensors").read_bytes() == before

"""A training run's folder: one writer at a time, and the configuration it remembers.

* **Lock.** :func:`lock_run` holds an exclusive ``flock`` on ``<out>/.lock`` for the whole run (rank 0
  only under torchrun); a second ``sdekit train`` on the same folder is refused in one line naming the
  holder's process. The kernel releases the lock when its process dies, so the lock of a killed run
  is taken over by the next one. The lock file is never deleted (deleting it would let two processes
  lock two different files).
* **Configuration.** ``<out>/config.json`` (``"format": "sdekit-run"``) holds every field of the run's
  :class:`~sdekit.tasks.train.TrainConfig` but ``out``, ``resume``, ``overwrite`` and ``download``; runs of
  earlier versions wrote only ``hparams`` and ``steps``, and a checkpoint holds ``hparams``.
  :func:`resumed_config` builds the configuration of ``--resume`` from it and the flags given, so
  ``sdekit train --out runs/x --resume`` needs no other flag.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from sdekit.core.errors import UserError
from sdekit.core.io import atomic_write_text
from sdekit.core.persist import expect, parse_json
from sdekit.tasks.train.config import HPARAMS_IGNORED, TrainConfig
from sdekit.tasks.train.config import hparams
from sdekit.tasks.train.checkpoint import read_checkpoint
from sdekit.tasks.train.config import with_recipe

__all__ = ["LOCK", "RUN_CONFIG", "RUN_FORMAT", "MAY_CHANGE", "lock_run", "holds_run", "run_config", "saved_fields",
           "resumed_config"]

LOCK, RUN_CONFIG, RUN_FORMAT = ".lock", "config.json", "sdekit-run"
NOT_SAVED = {"out", "resume", "overwrite", "download"}
MAY_CHANGE = HPARAMS_IGNORED                 # what a resumed run may be given anew: steps, intervals, threads, ...
RUN_FILES = (RUN_CONFIG, "log.csv", "checkpoint.safetensors")


@contextlib.contextmanager
def lock_run(out: Path):
    """Hold the run folder ``out`` (created if missing) for this process; UserError naming the holder when
    another process holds it. A folder this call created is removed again if the run leaves it empty."""
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{out / LOCK}: cannot lock ({e.strerror or e})") from None
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{out} is in use by another training run ({holder}); wait for it to end "
                            "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield out
        finally:
            if created and {p.name for p in out.iterdir()} == {LOCK}:
                (out / LOCK).unlink()                        # still held: no one else can be inside
                out.rmdir()
    finally:
        os.close(fd)                                         # releases the lock


def holds_run(out: Path) -> list[str]:
    """The files of a run that ``out`` holds (config, log, checkpoint); empty for a new folder."""
    return [f for f in RUN_FILES if (Path(out) / f).exists()]


def run_config(cfg: TrainConfig) -> dict:
    """What ``<out>/config.json`` records of ``cfg``: ``hparams`` (as :func:`~sdekit.tasks.train.hparams`),
    ``steps`` and ``options`` (the fields that may change on --resume)."""
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    options = {k: v for k, v in d.items() if k in MAY_CHANGE and k not in NOT_SAVED | {"steps"}}
    return {"format": RUN_FORMAT, "version": 1, "hparams": hparams(cfg), "steps": cfg.steps, "options": options}


def write_run_config(out: Path, cfg: TrainConfig) -> None:
    atomic_write_text(Path(out) / RUN_CONFIG, json.dumps(run_config(cfg), indent=2) + "\n")


def saved_fields(out: Path) -> dict | None:
    """The TrainConfig fields the run in ``out`` recorded (its config.json, else its checkpoint's
    hyper-parameters), JSON values; None when ``out`` holds neither. Unreadable: UserError."""
    out = Path(out)
    path = out / RUN_CONFIG
    if path.is_file():
        saved = parse_json(path.read_text(encoding="utf-8", errors="replace"), path)
        expect(isinstance(saved, dict) and isinstance(saved.get("hparams"), dict), path,
               "not the configuration of a training run (no hparams)")
        fields = {**saved.get("options", {}), **saved["hparams"]}
        if "steps" in saved:
            fields["steps"] = saved["steps"]
    elif (out / "checkpoint.safetensors").is_file():
        fields = dict(read_checkpoint(out / "checkpoint.safetensors").state["hparams"])
    else:
        return None
    known = {f.name for f in dataclasses.fields(TrainConfig)} - NOT_SAVED
    return {k: v for k, v in fields.items() if k in known}


def _as_json(v):
    return list(v) if isinstance(v, tuple) else v


def resumed_config(given: dict) -> TrainConfig:
    """The configuration of a run from the flags ``given`` (field -> value, only those the user set).

    Without ``resume``, or for a folder that holds no run yet, the given fields over the defaults.
    With ``resume`` on a run: the run's recorded fields, overridden by the given ones that may change
    (:data:`MAY_CHANGE`: steps, intervals, time limit, threads, execution options); a given
    hyper-parameter that differs from the run's is refused (UserError naming each, with both values)."""
    given = with_recipe(given)
    out = Path(given.get("out", TrainConfig.out))
    saved = saved_fields(out) if given.get("resume") else None
    if saved is None:
        return TrainConfig(**given)
    changed = [k for k, v in given.items() if k in saved and k not in MAY_CHANGE and _as_json(v) != saved[k]]
    if changed:
        listed = "; ".join(f"{k} was {saved[k]!r}, now {_as_json(given[k])!r}" for k in changed)
        raise UserError(f"--resume with changed hyper-parameters: {listed} (the run remembers its configuration: "
                        "leave these flags out, or start a new run with another --out)")
    types = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    fields = {k: tuple(v) if isinstance(types[k], tuple) and isinstance(v, list) else v for k, v in saved.items()}
    return TrainConfig(**{**fields, **given})

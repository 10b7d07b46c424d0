"""Training checkpoints: one safetensors file with everything a bitwise-exact resume needs.

Tensors: ``model.*`` (the weights), ``ema.*`` (the EMA weights), ``opt.{i}.{name}`` (Adam's state
of parameter i) and ``rng.torch``; the metadata holds ``format`` = "sdekit-checkpoint" and
``state``, JSON with ``step``, ``hparams``, the optimizer's ``param_groups`` and non-tensor state
(``opt_scalars``), the Python and NumPy RNG states (``rng``), the torch ``threads`` the run
used (absent in older checkpoints) and, for float16 autocast, the loss scaler's state (``grad_scaler``:
its scale and growth counter; absent otherwise). Written atomically through :mod:`sdekit.core.persist`, never pickled.

:func:`read_checkpoint` trusts nothing: every field is checked for its type and range, the RNG
states are tried on throwaway generators, and :func:`restore` checks the tensors against the model
and the optimizer before anything is changed; a defect is one UserError line.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sdekit.core.errors import UserError
from sdekit.core.persist import expect, is_int, is_number, load_state, parse_json, read_tensors, write_tensors
from sdekit.tasks.train.config import TrainConfig, hparams
from sdekit.tasks.train.ema import EMA

__all__ = ["CKPT", "CKPT_FORMAT", "Checkpoint", "save_checkpoint", "read_checkpoint", "check_hparams", "restore",
           "load_checkpoint"]

CKPT = "checkpoint.safetensors"
CKPT_FORMAT = "sdekit-checkpoint"


@dataclass
class Checkpoint:
    """A checkpoint as read and checked: ``tensors`` by name, ``state`` the JSON metadata."""

    path: Path
    tensors: dict
    state: dict

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def threads(self) -> int | None:
        return self.state.get("threads")

    def prefixed(self, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


# ---- RNG states ------------------------------------------------------------------------------------

def _rng_states() -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])]}
    return tensors, meta


def _python_state(meta: dict) -> tuple:
    v, state, gauss = meta["python"]
    return v, tuple(state), gauss


def _numpy_state(meta: dict) -> tuple:
    n = meta["numpy"]
    return n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])


def _check_rng(tensors: dict, meta, path) -> None:
    """Each RNG state is set on a throwaway generator: one that does not take it is refused."""
    try:
        random.Random().setstate(_python_state(meta))
        np.random.RandomState().set_state(_numpy_state(meta))
        torch.Generator().set_state(tensors["rng.torch"])
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, RuntimeError) as e:
        raise UserError(f"{path}: invalid RNG state in the checkpoint ({type(e).__name__}: {e})") from None


def _set_rng_states(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate(_python_state(meta))
    np.random.set_state(_numpy_state(meta))


# ---- write, read, check, restore ---------------------------------------------------------------------

def save_checkpoint(path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig,
                    extra: dict | None = None, scaler: torch.amp.GradScaler | None = None) -> None:
    """Write the checkpoint of step ``step`` to ``path`` atomically (``extra``: more JSON state;
    ``scaler``: a loss scaler whose state is kept when it is enabled)."""
    import json
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().clone() for k, v in ema.model.state_dict().items()})
    osd = opt.state_dict()
    scalars = {}
    for i, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.clone()
            else:
                scalars[f"{i}.{k}"] = v
    rng_t, rng_meta = _rng_states()
    tensors.update(rng_t)
    state = {"step": step, "hparams": hparams(cfg), "param_groups": osd["param_groups"], "opt_scalars": scalars,
             "rng": rng_meta, **(extra or {})}
    if scaler is not None and scaler.is_enabled():
        state["grad_scaler"] = dict(scaler.state_dict())            # scale, growth counter, factors
    write_tensors(path, tensors, metadata={"format": CKPT_FORMAT, "state": json.dumps(state)})


def _opt_key(name: str) -> tuple[int, str] | None:
    """(i, name) of a tensor "opt.{i}.{name}"; None if the name is not of that form."""
    parts = name.split(".", 2)
    return (int(parts[1]), parts[2]) if len(parts) == 3 and parts[1].isdigit() else None


def read_checkpoint(path) -> Checkpoint:
    """The checkpoint at ``path``, every field checked (see the module's docstring); UserError if
    it is missing, corrupt, of another format or inconsistent."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no checkpoint to resume from")
    tensors, meta = read_tensors(path, "checkpoint")
    expect(meta.get("format") == CKPT_FORMAT and "state" in meta, path, "corrupt or truncated checkpoint "
           "(not an sdekit checkpoint)")
    state = parse_json(meta["state"], f"{path} (state)")
    expect(isinstance(state, dict), path, "the checkpoint's state is not a JSON object")
    step = state.get("step")
    expect(is_int(step, 0), path, f"the checkpoint's step must be an integer >= 0, got {step!r}")
    expect(is_int(state.get("threads", 1), 1), path, f"threads must be an integer >= 1, got {state.get('threads')!r}")
    for key, kind in (("hparams", dict), ("param_groups", list), ("opt_scalars", dict), ("rng", dict)):
        expect(isinstance(state.get(key), kind), path, f"the checkpoint's {key} is missing or not a JSON {kind.__name__}")
    expect(all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(is_int(i, 0) for i in g["params"])
               for g in state["param_groups"]), path, "the checkpoint's param_groups are malformed")
    expect(all(isinstance(k, str) and k.split(".", 1)[0].isdigit() and "." in k and (is_number(v) or v is None)
               for k, v in state["opt_scalars"].items()), path, "the checkpoint's opt_scalars are malformed")
    scaler = state.get("grad_scaler", {})
    expect(isinstance(scaler, dict) and all(is_number(v) and v >= 0 for v in scaler.values()), path,
           "the checkpoint's grad_scaler state must map names to numbers >= 0")
    expect("rng.torch" in tensors, path, "the checkpoint has no torch RNG state")
    _check_rng(tensors, state["rng"], path)
    for name, v in tensors.items():
        expect(name.startswith(("model.", "ema.", "rng.")) or _opt_key(name) is not None, path,
               f"unexpected tensor {name!r} in the checkpoint")
        expect(not v.is_floating_point() or bool(torch.isfinite(v).all()), path,
               f"checkpoint tensor {name!r} holds NaN or infinite values")
        if _opt_key(name) and _opt_key(name)[1] == "step":
            expect(v.numel() == 1 and 0 <= float(v) <= step, path,
                   f"optimizer step {name!r} is not a count in 0..{step} (the checkpoint's step)")
    return Checkpoint(path, tensors, state)


def check_hparams(ckpt: Checkpoint, cfg: TrainConfig) -> None:
    """UserError naming the first hyper-parameter ``cfg`` changes against the checkpoint's. A hyper-parameter
    the checkpoint does not record (it was written before sdekit had it) holds its default there."""
    import dataclasses
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(TrainConfig)}
    old, new = {**defaults, **ckpt.state["hparams"]}, hparams(cfg)
    changed = [k for k in sorted(set(ckpt.state["hparams"]) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        k = changed[0]
        raise UserError(f"--resume with changed hyper-parameters: {k} was {old.get(k)!r}, now {new.get(k)!r}"
                        + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""))


def _optimizer_state(ckpt: Checkpoint, opt: torch.optim.Optimizer) -> dict:
    """Adam's state dict from the checkpoint, each tensor checked against its parameter's shape."""
    params = [p for g in opt.param_groups for p in g["params"]]
    osd = {"state": {}, "param_groups": ckpt.state["param_groups"]}
    for name, v in ckpt.prefixed("opt.").items():
        i, key = _opt_key("opt." + name)
        expect(i < len(params), ckpt.path, f"optimizer state for parameter {i}, but the model has {len(params)}")
        expect(key == "step" or tuple(v.shape) == tuple(params[i].shape), ckpt.path,
               f"optimizer tensor {name!r} is {tuple(v.shape)}, parameter {i} is {tuple(params[i].shape)}: "
               "the checkpoint is of another architecture")
        osd["state"].setdefault(i, {})[key] = v
    for k, v in ckpt.state["opt_scalars"].items():
        i, key = k.split(".", 1)
        osd["state"].setdefault(int(i), {})[key] = v
    return osd


def restore(ckpt: Checkpoint, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None = None) -> int:
    """Put the checkpoint's model, EMA, optimizer, RNG states and (into an enabled ``scaler``) the loss
    scaler's state in place; return its step. Tensors that do not fit the model or optimizer: UserError."""
    osd = _optimizer_state(ckpt, opt)
    load_state(model, ckpt.prefixed("model."), ckpt.path, "checkpoint")
    load_state(ema.model, ckpt.prefixed("ema."), ckpt.path, "checkpoint")
    try:
        opt.load_state_dict(osd)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{ckpt.path}: optimizer state does not fit this model ({e})") from None
    _set_rng_states(ckpt.tensors, ckpt.state["rng"])
    if scaler is not None and scaler.is_enabled() and ckpt.state.get("grad_scaler"):
        scaler.load_state_dict(ckpt.state["grad_scaler"])
    return ckpt.step


def load_checkpoint(path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, cfg: TrainConfig) -> int:
    """Restore model, EMA, optimizer and RNG states; return the step. Refuses changed hyper-parameters."""
    ckpt = read_checkpoint(path)
    check_hparams(ckpt, cfg)
    return restore(ckpt, model, ema, opt)

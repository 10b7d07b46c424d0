"""Weights and configs on disk: safetensors beside JSON, read and written in this one place.

A saved folder (a model bundle, a classifier, a feature network) holds ``config.json``, a JSON
object whose ``"format"`` says what it is, and ``model.safetensors``; a training checkpoint is one
safetensors file with JSON in its metadata. Files are written atomically (:mod:`sdekit.core.io`) and
read without ever unpickling: tensors through safetensors, everything else through ``json``.

Nothing read is trusted. Every defect (a missing, truncated or foreign file, invalid JSON, NaN or
Infinity in a config, a field of the wrong type or range, weights of another architecture or with
non-finite values) is one :class:`~sdekit.core.errors.UserError` line that names the file. A network is
first built on PyTorch's "meta" device (no memory) and compared with the weights' header, so a config
that asks for a huge network fails before any memory is spent on it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from sdekit.core.errors import UserError
from sdekit.core.placement import DTYPES  # how weights may be stored: the precisions networks run in
from sdekit.core.io import atomic_path, atomic_write_text

__all__ = ["CONFIG", "WEIGHTS", "CHECKSUM", "tensors_checksum", "write_tensors", "read_tensors", "save_folder", "folder_of", "read_config",
           "parse_json", "load_state", "load_weights", "load_module", "check_fields", "FIELDS", "DTYPES", "expect",
           "is_int", "is_number"]

CONFIG, WEIGHTS = "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20          # a config is a few kB; refuse to read a huge file as one


# ---- checks of values read from a file ---------------------------------------------------------------

def expect(ok: bool, source, message: str) -> None:
    """UserError "``source``: ``message``" unless ``ok``."""
    if not ok:
        raise UserError(f"{source}: {message}")


def is_int(v, lo: int | None = None) -> bool:
    """``v`` is an integer (not a bool) and, if given, >= ``lo``."""
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def is_number(v) -> bool:
    """``v`` is a finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, source):
    """Strict JSON (no NaN / Infinity); a defect is a UserError naming ``source``."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{source}: invalid JSON ({str(e).splitlines()[0]})") from None


# ---- the fields saved configs share ------------------------------------------------------------------



def _is_shape(v) -> bool:
    return isinstance(v, list) and 1 <= len(v) <= 3 and all(is_int(s, 1) for s in v)


def _is_range(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(is_number, v)) and v[0] < v[1]


SDE_NAMES = ("name", "schedule")              # the SDE's name; a discrete VP's beta schedule by name


def _is_sde_parameter(key: str, x) -> bool:
    """A name (:data:`SDE_NAMES`), else a finite number or a list of them (a discrete VP's
    "alphas_cumprod" or "betas")."""
    if key in SDE_NAMES:
        return isinstance(x, str)
    return is_number(x) or (isinstance(x, list) and len(x) > 0 and all(map(is_number, x)))


def _is_sde(v) -> bool:
    return (isinstance(v, dict) and "name" in v and is_int(v.get("N", 1), 1)
            and all(_is_sde_parameter(k, x) for k, x in v.items()))


def _is_precond(v) -> bool:
    return (isinstance(v, dict) and is_number(v.get("sigma_data", 0.5)) and v.get("sigma_data", 0.5) > 0
            and (v.get("sigma_min") is None or (is_number(v["sigma_min"]) and v["sigma_min"] > 0)))


# field: (is it valid?, what it must be)
FIELDS = {
    "shape": (_is_shape, "a list of 1 to 3 positive integers: [C, H, W] for images, [d] for vectors"),
    "num_classes": (lambda v: is_int(v, 0), "an integer >= 0"),
    "data_range": (_is_range, "[lo, hi], finite numbers with lo < hi"),
    "sde": (_is_sde, 'an object {"name": ..., parameters: finite numbers or lists of them, "N": integer >= 1}'),
    "network": (lambda v: isinstance(v, dict), "an object (the network's constructor arguments)"),
    "precond": (_is_precond, 'an object {"kind": ..., "sigma_data": number > 0[, "sigma_min": number > 0]}'),
    "name": (lambda v: isinstance(v, str), "a string"),
    "data": (lambda v: v is None or isinstance(v, str), "a dataset spec string or null"),
    "background": (lambda v: isinstance(v, list) and len(v) in (1, 3) and all(is_number(c) and 0 <= c <= 1 for c in v),
                   "a list of 1 or 3 numbers in [0, 1]: the colour the pictures are drawn on"),
    "dtype": (lambda v: v in DTYPES, "one of " + ", ".join(DTYPES)),
    "step": (lambda v: is_int(v, 0), "an integer >= 0"),
    "train": (lambda v: isinstance(v, dict), "an object"),
    "test_accuracy": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "a number in [0, 1] or null"),
    "sdedit": (lambda v: isinstance(v, dict) and (v.get("t0") is None or (is_number(v["t0"]) and 0 < v["t0"] <= 1)),
               'an object {"t0": the calibrated SDEdit t0, a number in (0, 1]}'),
}


def check_fields(cfg: dict, source, required=()) -> None:
    """Check each field of :data:`FIELDS` that ``cfg`` has (and that the ``required`` ones are there)
    for its type and range; the first bad one is a UserError naming ``source``. Values a field names
    are checked against the network and the weights when the network is built (:func:`load_module`)."""
    for key in required:
        expect(key in cfg, source, f"the field {key!r} is missing")
    for key, (ok, must) in FIELDS.items():
        if key in cfg:
            expect(ok(cfg[key]), source, f"{key} must be {must}, got {json.dumps(cfg[key])[:80]}")


# ---- tensors -----------------------------------------------------------------------------------------

CHECKSUM = "sdekit_sha256"          # the metadata key of :func:`tensors_checksum`


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of ``tensors``: each one's name, dtype, shape and bytes, in the order of the names.
    Written into the metadata of every safetensors file sdekit saves (key :data:`CHECKSUM`) and compared
    when the file is read, so a flipped bit or a zeroed block in the data is refused."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{v.dtype}\0{tuple(v.shape)}\0".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def write_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (moved to the CPU, made contiguous) as one safetensors file, atomically, with
    their :func:`tensors_checksum` in the metadata. A full disk or a read-only folder: UserError
    naming ``path``, and an existing file at ``path`` is left as it was."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {**(metadata or {}), CHECKSUM: tensors_checksum(state)}
    with atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata=metadata)
        except SafetensorError as e:               # safetensors' (Rust) wrapper of an I/O error
            raise UserError(f"{path}: cannot write ({_first_line(e)})") from None
    return Path(path)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_tensors(path, what: str = "weights", header_only: bool = False) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file; with ``header_only`` the tensors are only
    ``{name: shape}`` and nothing is read beyond the header. Missing or corrupt (also: tensors that
    do not match the checksum in the metadata, see :func:`tensors_checksum`; a file without one, as
    written before sdekit recorded it, is read unchecked): UserError."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if header_only:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, metadata
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a {what} file") from None
    except Exception as e:                         # safetensors raises its own (Rust) error types
        raise UserError(f"{path}: corrupt or truncated {what} ({_first_line(e)})") from None
    expect(CHECKSUM not in metadata or metadata[CHECKSUM] == tensors_checksum(tensors), path,
           f"corrupt {what}: its tensors do not match the checksum written with them")
    return tensors, metadata


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], source, what: str = "weights") -> None:
    """Copy ``tensors`` into ``module``: the same names, shapes and kinds (floating or not) as its
    state, all finite; stored float16 is converted to the module's dtype. Otherwise UserError."""
    own = module.state_dict()
    _same_architecture(own, {k: tuple(v.shape) for k, v in tensors.items()}, source, what)
    for k, v in tensors.items():
        expect(v.is_floating_point() == own[k].is_floating_point(), source,
               f"{what} tensor {k!r} is {v.dtype}, not {own[k].dtype}")
        expect(not v.is_floating_point() or bool(torch.isfinite(v).all()), source,
               f"{what} tensor {k!r} holds NaN or infinite values")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def _same_architecture(own: dict, shapes: dict[str, tuple], source, what: str) -> None:
    missing, unexpected = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
    wrong = [k for k in own if k in shapes and tuple(shapes[k]) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        detail = (f", {tuple(shapes[first])} where the config needs {tuple(own[first].shape)}"
                  if first in wrong else "")
        raise UserError(f"{source}: {what} is of another architecture ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors, e.g. {first!r}{detail})")


def load_weights(module: nn.Module, path, what: str = "weights") -> None:
    """Load the safetensors file ``path`` into ``module`` (see :func:`load_state`)."""
    tensors, _ = read_tensors(path, what)
    load_state(module, tensors, path, what)


def load_module(build: Callable[[], nn.Module], folder, what: str) -> nn.Module:
    """The module ``build()`` makes, with the weights of ``folder/model.safetensors``.

    ``build`` runs first on the meta device and its state's shapes are compared with the file's
    header, so a config at odds with its weights (or asking for a huge network) costs no memory.
    ``build`` raising TypeError, ValueError or KeyError means an invalid config: UserError."""
    folder = Path(folder)
    shapes, _ = read_tensors(folder / WEIGHTS, what, header_only=True)
    skeleton = _built(build, folder, what, meta=True)
    _same_architecture(skeleton.state_dict(), shapes, folder / WEIGHTS, what)
    module = _built(build, folder, what, meta=False)
    load_weights(module, folder / WEIGHTS, what)
    return module


def _built(build, folder: Path, what: str, meta: bool) -> nn.Module:
    try:
        if meta:
            with torch.device("meta"):
                return build()
        return build()
    except UserError as e:                 # e.g. a discrete VP's alphas_cumprod that do not decrease
        if str(folder) in str(e):
            raise
        raise UserError(f"{folder / CONFIG}: invalid {what} config ({_first_line(e)})") from None
    except KeyError as e:
        raise UserError(f"{folder / CONFIG}: invalid {what} config (no {e})") from None
    except (TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"{folder / CONFIG}: invalid {what} config ({_first_line(e)})") from None


# ---- folders: config.json + model.safetensors --------------------------------------------------------

def save_folder(folder, config: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> Path:
    """Write ``folder/model.safetensors`` (floating tensors in ``dtype`` if given), then
    ``folder/config.json``, each atomically; ``config["format"]`` is also the weights' metadata."""
    folder = Path(folder)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    write_tensors(folder / WEIGHTS, tensors, metadata={"format": str(config.get("format", ""))})
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2, allow_nan=False) + "\n")
    return folder


def folder_of(path, default: Path) -> Path:
    """The folder ``path`` names: None, "digits" or "default" mean ``default``; a path to its
    config.json or model.safetensors means the folder holding it; a training run's folder (one with a
    ``model/`` bundle and no weights of its own, as ``sdekit train --out`` writes) means its ``model/``."""
    if path is None or str(path) in ("digits", "default"):
        return default
    p = Path(path)
    if p.name in (CONFIG, WEIGHTS) and p.is_file():
        return p.parent
    return p / "model" if (p / "model" / CONFIG).is_file() and not (p / WEIGHTS).exists() else p


def read_config(path, format_: str, what: str) -> dict:
    """The JSON object in ``path`` (a folder, or its config.json) whose "format" is ``format_``
    and whose "version", if any, is 1. Missing, huge, not JSON or of another format: UserError."""
    path = Path(path)
    cfg_path = path if path.name == CONFIG and not path.is_dir() else path / CONFIG
    if not cfg_path.is_file():
        raise UserError(f"{cfg_path.parent}: not a {what} (no {CONFIG})")
    size = cfg_path.stat().st_size
    expect(size <= MAX_CONFIG_BYTES, cfg_path, f"{size} bytes is too large for a {what} config")
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"{cfg_path}: unreadable ({_first_line(e)})") from None
    cfg = parse_json(text, cfg_path)
    expect(isinstance(cfg, dict) and cfg.get("format") == format_, cfg_path, f"not an sdekit {what}")
    expect(cfg.get("version", 1) == 1, cfg_path,
           f"version {cfg.get('version')!r} of the {what} format; this sdekit reads version 1")
    return cfg

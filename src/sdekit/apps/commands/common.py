"""What the commands share: argument types that refuse bad values while the command line is parsed,
the model (``--model`` with ``--sigma-min`` / ``--sigma-max``), the output (``--out`` with
``--overwrite``), picture enlargement (``--scale``), ``--seed`` and ``--device``.

Everything here runs before a command starts its work: a refusal is one line on stderr and exit
code 2, and nothing has been written.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from sdekit.core.errors import UserError
from sdekit.core.placement import DTYPES

SEED_LIMIT = 2 ** 32


def _number(kind, ok, what: str):
    """An argparse type: ``kind(text)`` that must satisfy ``ok``, else the message 'must be <what>'."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v
    parse.__name__ = what
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
count = _number(int, lambda v: v >= 0, "an integer >= 0")
seed = _number(int, lambda v: 0 <= v < SEED_LIMIT, "an integer in 0..2^32-1")
finite = _number(float, math.isfinite, "a finite number")
positive = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
fraction = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def edit_class(text: str):
    """An argparse type for an edit's --class: 'auto' (read from the guide), 'none' (-1), a class K >= 0, or
    a class name, kept as text until the model is known (:func:`model_class`)."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return "auto" if word == "auto" else -1
    if word.lstrip("-").isdigit():
        return count(text)
    return text.strip() or _fail(f"must be a class K >= 0, a class name, 'auto' or 'none', got {text!r}")


def model_class(model, label, also: str = ", 'auto' or 'none'"):
    """--class after the model is loaded: a class name becomes its index K
    (:func:`sdekit.data.datasets.class_index`), checked to lie in 0..num_classes-1; None, -1, 'auto' and
    'all' pass as they are."""
    from sdekit.data.datasets import class_index
    if label is None or label in ("auto", "all", -1):
        return label
    k = class_index(model.config, label, also)
    check_class(model, k)
    return k


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def int_range(lo: int, hi: int):
    return _number(int, lambda v: lo <= v <= hi, f"an integer in {lo}..{hi}")


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (cpu, cuda, cuda:1, mps, ...)."""
    from sdekit.core.placement import check_device
    try:
        return check_device(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def placement(args):
    """(device, torch dtype or None) of ``--device`` / ``--dtype``, refusing a precision the device cannot
    run (bfloat16 on a CUDA GPU without it, float64 on MPS) before any work, and warning once of one it runs
    much slower than float32 (float16 on a CPU) (sdekit.core.placement)."""
    from sdekit.core.placement import precision_on, warn_slow_precision
    device = getattr(args, "device", None)                # checked by its argparse type
    dtype = precision_on(device, getattr(args, "dtype", None))
    warn_slow_precision(device, dtype)
    return device, dtype


# ---- the options themselves ------------------------------------------------------------------------

MODEL_OPTIONS = ("sigma_min", "sigma_max")   # keywords of sdekit.load given as --sigma-min, --sigma-max
MODEL_DEFAULT = ("(default: the bundled MNIST model; the other shipped models by name: 'emoji' the 32x32 colour "
                 "model, 'mnist-cd' MNIST's one-step consistency student, 'digits' the 16x16 digits model)")  # load(None)


def add_model(p, help: str, repeat: bool = False) -> None:
    """--model (``help`` says what it takes and its default; ``repeat``: it may be given several times, a
    list) and the loading options: --sigma-min and --sigma-max, the VE noise range of a score_sde VE
    diffusers folder (published scheduler configs disagree, e.g. sigma_max 348 and 380), refused for
    every other model by :func:`load_model`."""
    p.add_argument("--model", default=None, help=help, action="append" if repeat else "store")
    for flag, what in (("--sigma-min", "sigma_min"), ("--sigma-max", "sigma_max")):
        p.add_argument(flag, type=positive, default=None, metavar="SIGMA",
                       help=f"score_sde VE diffusers folders only: the VE SDE's {what}, in the units of the "
                            f"model's [0, 1] pixels, instead of its scheduler config's (refused for other models)")


def load_model(args, device=None, dtype=None):
    """``sdekit.load(args.model, device, dtype)`` with the options of :func:`add_model` that were given.
    An option the model does not take (a bundle, a DDPM folder) is one UserError line naming its flag.
    torch's CPU threads: ``args.threads`` if given, else :func:`sdekit.core.threads.default_threads` (the CPUs
    other jobs leave free; torch's own default, one per core, crawls when another job holds a core)."""
    import torch

    from sdekit.models.bundle import load
    from sdekit.models.pretrained.folder import OptionError
    from sdekit.core.threads import default_threads
    torch.set_num_threads(getattr(args, "threads", None) or default_threads())
    options = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k, None) is not None}
    try:
        return load(args.model, device=device, dtype=dtype, **options)
    except OptionError as e:
        raise UserError(e.naming("--" + e.option.replace("_", "-"))) from None


def add_download(p) -> None:
    p.add_argument("--download", action="store_true",
                   help="first fetch the files missing from the folder of --data KIND:DIR into DIR, MD5-checked, as "
                        "`sdekit train --download` does (MNIST: its training and test files; also Fashion-MNIST, "
                        "CIFAR-10)")


def download(spec) -> None:
    """``--download``: fetch the files of ``spec`` ("mnist:DIR", ...) missing from DIR
    (:func:`sdekit.data.datasets.fetch`), saying where they go on stderr. UserError for a spec without
    its folder or data sdekit does not download."""
    import sys

    from sdekit.data.datasets import data_kind, fetch, source_of
    kind, _, folder = str(spec or "").partition(":")
    if source_of(spec) is None:
        raise UserError(f"--download fetches mnist, fashion-mnist and cifar10 data, not {spec or 'the model data'}"
                        + (" (emoji come from the npm packages emoji-datasource-twitter and emoji-datasource-google: "
                           "give --data emoji:DIR)" if data_kind(spec) == "emoji" else ""))
    if not folder:
        raise UserError(f"--download needs the folder to fetch into: --data {kind}:DIR")
    print(f"fetching {source_of(spec)} into {Path(folder).resolve()} (files already there are checked, not fetched)",
          file=sys.stderr)
    fetch(source_of(spec), folder)


def add_seed(p) -> None:
    p.add_argument("--seed", type=seed, default=0, help="random seed, an integer in 0..2^32-1 (default: 0)")


def add_device(p) -> None:
    p.add_argument("--device", type=device, default=None,
                   help="torch device: cpu, cuda, cuda:1, mps, ...; refused when this machine has none (default: cpu)")


def add_dtype(p) -> None:
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="precision of the network: float32, float16, bfloat16 or float64 (default: float32)")


ACCEL_HELP = {   # how the network's forward runs (sdekit.models.accel); sdekit train names the same options
    "compile": "torch.compile the network's forward (the first call of each batch shape compiles: seconds to minutes)",
    "channels_last": "channels-last (NHWC) memory for the network's weights and inputs",
    "autocast": "run the network under torch.autocast: none | bf16 (CPUs, recent GPUs) | fp16 (CUDA only; "
                "training scales the loss)",
}
AUTOCAST_CHOICES = ("none", "bf16", "fp16")                 # the keys of sdekit.models.accel.AUTOCAST


def add_acceleration(p) -> None:
    """--compile, --channels-last and --autocast (see :data:`ACCEL_HELP`); read back by :func:`acceleration`."""
    p.add_argument("--compile", action="store_true", help=ACCEL_HELP["compile"])
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help=ACCEL_HELP["channels_last"] + " (default: on for images of 256 pixels a side or more)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None,
                   help="keep the network in the usual (NCHW) memory format, also for large images")
    p.add_argument("--autocast", choices=AUTOCAST_CHOICES, default="none", help=ACCEL_HELP["autocast"] + " (default: none)")


def acceleration(args, shape=None):
    """The :class:`sdekit.models.accel.Acceleration` of the flags of :func:`add_acceleration`, checked against
    --device; without --channels-last / --no-channels-last, channels-last is on for a model of data
    ``shape`` (C, H, W) that :func:`sdekit.models.accel.prefers_channels_last` (off while ``shape`` is None).
    Autocast with a --dtype other than float32 is refused (it runs a float32 network in lower precision)."""
    from sdekit.models.accel import Acceleration, prefers_channels_last
    if args.autocast != "none" and getattr(args, "dtype", None) not in (None, "float32"):
        raise UserError(f"--autocast {args.autocast} runs a float32 network in lower precision; "
                        f"drop --dtype {args.dtype} or --autocast")
    channels_last = args.channels_last if args.channels_last is not None else \
        (shape is not None and prefers_channels_last(shape))
    options = Acceleration(args.compile, channels_last, args.autocast)
    options.check(getattr(args, "device", None))
    return options


def add_scale(p) -> None:
    from sdekit.data.images import SCALE
    p.add_argument("--scale", type=positive_int, default=None,
                   help=f"enlarge the written pictures this many times, nearest neighbour (default: {SCALE})")


def add_overwrite(p, what: str = "--out") -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} if it exists (default: refuse, before any work)")


def scale_of(args) -> int:
    from sdekit.data.images import SCALE
    return SCALE if args.scale is None else args.scale


# ---- outputs ---------------------------------------------------------------------------------------

def _writable_folder(folder: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder we may write into, with
    room for the output (:func:`sdekit.core.io.check_writable`)."""
    from sdekit.core.io import check_writable
    check_writable(folder)


def file_out(path, overwrite: bool, suffixes) -> Path:
    """The output file ``path``, checked before any work: its suffix one of ``suffixes``, not a folder,
    not an existing file unless ``overwrite``, and in a folder we may write into."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        listed = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise UserError(f"--out must end in {listed}, got {out.name}")
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names a file")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    _writable_folder(out.parent)
    return out


def folder_out(path, overwrite: bool) -> Path:
    """The output folder ``path``, checked before any work: not a file, and empty (or absent) unless
    ``overwrite`` (then the files the command writes replace those of the same name)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out names a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to write into it")
    _writable_folder(out)
    return out


def check_row(n: int, image_hw, scale: int) -> None:
    """A row of n pictures of image_hw = (H, W), enlarged ``scale`` times, must be a picture one can open."""
    from sdekit.data.images import check_picture_size, grid_size
    check_picture_size(*grid_size(n, image_hw, n, scale), "output picture")


def save_row(out, first, u, scale: int, overwrite: bool) -> None:
    """Write ``first`` [1, C, H, W] (the input) and u [n, C, H, W] (the results), in [0, 1], as one row."""
    import torch

    from sdekit.data.images import picture, save_picture
    save_picture(out, picture(torch.cat([first.cpu(), u.cpu()]), nrow=len(u) + 1, scale=scale), overwrite)


def check_class(model, label) -> None:
    """A class label for ``model``: None, or an integer in 0..num_classes-1 of a conditional model
    (:func:`sdekit.core.checks.check_class`)."""
    from sdekit.core.checks import check_class as check
    check(label, model.num_classes, "--class")


def sampler_name(text: str) -> str:
    """An argparse type: a sampler of the registry (aliases accepted), returned by its own name."""
    from sdekit.solvers.registry import get_sampler
    try:
        return get_sampler(text).name
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_sampler(p, task, what: str = "solver") -> None:
    """--sampler with its choices and steps read from the registry, its default from ``task`` (a
    :class:`sdekit.policy.TaskDefault`; the consistency rule of the policy named in the help)."""
    from sdekit.policy import CONSISTENCY
    from sdekit.solvers.registry import REGISTRY
    listing = "; ".join(f"{s.name} ({s.summary}, "
                        f"{'adaptive steps' if s.adaptive else f'{s.default_steps} steps'}"
                        f"{'' if s.finishes else '; meant as a corrector in pc: alone it leaves noise on images'})"
                        for s in REGISTRY.values())
    p.add_argument("--sampler", type=sampler_name, default=None, metavar="NAME",
                   help=f"{what}: {listing} (default: {task.sampler}; {CONSISTENCY} for a consistency model)")
    p.set_defaults(sampler_task=task)


def resolve_sampler(args, model) -> str:
    """``args.sampler``, or when none was named the policy's default of the command's task for ``model``
    (:func:`sdekit.policy.default_sampler`: the consistency sampler on a consistency model); stored back in
    ``args``."""
    from sdekit.policy import default_sampler
    if args.sampler is None:
        args.sampler = default_sampler(args.sampler_task, model)
    return args.sampler


def steps_words(sampler: str, info: dict) -> str:
    """How a run's solver stepped, for summary lines: "adaptive RK45" for an adaptive sampler, else "N steps"."""
    from sdekit.solvers.registry import get_sampler
    return "adaptive RK45" if get_sampler(sampler).adaptive else f"{info['steps']} steps"

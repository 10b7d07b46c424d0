"""sdekit sample: draw samples from a model bundle into a grid picture or an .npz file."""
import argparse
import sys

from sdekit.policy import MODEL_SAMPLE
from sdekit.apps.commands.common import (steps_words, MODEL_DEFAULT, acceleration, add_acceleration, add_device, add_dtype, add_model, add_overwrite,
                     add_sampler, add_scale, add_seed, finite, load_model, positive_int, resolve_sampler)


def add_arguments(p):
    add_model(p, help="model bundle folder, or a diffusers folder (as written by "
                      "sdekit convert) " + MODEL_DEFAULT)
    add_sampler(p, MODEL_SAMPLE)
    p.add_argument("--steps", type=positive_int, default=None, help="solver steps (default: the sampler's own; "
                   "the adaptive 'ode' ignores it)")
    p.add_argument("-n", type=positive_int, default=64, help="number of samples (default: 64)")
    add_seed(p)
    p.add_argument("--class", dest="class_label", default=None,
                   help="class label (K or the class's name) for every sample, 'all' for the classes in turn "
                        "(conditional models), or 'none' "
                        "(unconditional samples, the default)")
    p.add_argument("--guidance-scale", dest="guidance", type=finite, default=0.0, metavar="W",
                   help="guidance weight w towards --class: classifier-free for a conditional model, or with "
                        "--classifier score + w grad log p_t(y|x) (default: 0, no guidance)")
    p.add_argument("--guidance", dest="guidance", type=finite, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)                           # the same option, by a shorter name
    p.add_argument("--classifier", default=None,
                   help="noise-conditional classifier folder for classifier guidance ('digits': the bundled one "
                        "for --model digits; 'model': the model bundle's own classifier/, e.g. the default MNIST model's)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per solver batch (default: 256)")
    p.add_argument("--nrow", type=positive_int, default=None,
                   help="images per grid row, 1..n (default: square; with --class all, one class per column)")
    add_scale(p)
    add_overwrite(p)
    p.add_argument("--out", required=True,
                   help="grid picture (.png, .jpg, ...), or samples.npz (uint8 NHWC 'samples' + 'labels'; "
                        "float 'samples' in model space for vector data)")
    add_device(p)
    add_dtype(p)
    add_acceleration(p)


def _labels(spec, n, model):
    import torch
    from sdekit.core.errors import UserError
    from sdekit.apps.commands.common import check_class
    if spec is None:
        return None
    if spec == "all":
        check_class(model, 0)
        return torch.arange(n) % model.num_classes
    try:
        k = int(spec)
    except ValueError:
        raise UserError(f"--class must be an integer, 'all' or 'none', got {spec!r}") from None
    check_class(model, k)
    return torch.full((n,), k, dtype=torch.long)


def _classifier_guided(model, args):
    """A model whose score is score + w grad log p_t(y | x) for the class --class, unconditional itself."""
    from sdekit.core.denoisers import ClassifierGuided
    from sdekit.core.errors import UserError
    from sdekit.models.model import Model
    from sdekit.models.nets.classifier import load_classifier
    try:
        k = int(args.class_label)
    except (TypeError, ValueError):
        raise UserError("--classifier needs --class K with one integer class") from None
    if args.classifier == "model":
        if model.classifier is None:
            raise UserError(f"--classifier model: {model.name} ships no classifier/ folder")
        clf = model.classifier
    else:
        clf = load_classifier(args.classifier, sde=model.sde).to(model.device)
    shape = tuple(getattr(clf, "shape", model.shape))
    if shape != tuple(model.shape):
        raise UserError(f"the classifier reads images {shape}, the model draws {tuple(model.shape)}"
                        + (" (the digits classifier goes with --model digits)" if args.classifier == "digits" else ""))
    if not 0 <= k < clf.num_classes:
        raise UserError(f"--class must lie in 0..{clf.num_classes - 1} for this classifier, got {k}")
    guided = Model(ClassifierGuided(model.net, clf, k, args.guidance), {**model.config, "num_classes": 0}, model.name)
    return guided, None


def run(args):
    import io
    import os

    import numpy as np
    import torch

    from sdekit.models.bundle import generate
    from sdekit.core.errors import UserError
    from sdekit.data.images import EXTENSIONS, check_picture_size, grid_size, picture, save_picture
    from sdekit.core.io import atomic_path
    from sdekit.data.datasets import class_names
    from sdekit.apps.commands.common import file_out, scale_of

    out = file_out(args.out, args.overwrite, EXTENSIONS + (".npz",))
    npz = out.suffix.lower() == ".npz"
    if npz and (args.nrow is not None or args.scale is not None):
        raise UserError("--nrow and --scale lay out a grid picture; an .npz file holds the samples themselves")
    if not npz and args.n > 4096:
        raise UserError(f"-n {args.n} is too many for one grid picture; write an .npz")
    if args.nrow is not None and args.nrow > args.n:
        raise UserError(f"--nrow must lie in 1..{args.n} (-n), got {args.nrow}")
    if str(args.class_label).strip().lower() == "none":
        args.class_label = None
    if args.guidance < 0:
        raise UserError(f"--guidance-scale must be >= 0, got {args.guidance:g}")
    if args.guidance != 0 and args.class_label is None:
        raise UserError("--guidance-scale needs --class K (or 'all'): the class to guide towards")
    if args.classifier is not None and args.guidance == 0:
        raise UserError("--classifier needs --guidance-scale w: with w = 0 the classifier is not used")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    from sdekit.apps.commands.common import model_class, placement
    acceleration(args)                                   # refused before the model loads
    model = load_model(args, *placement(args))
    if args.classifier is None:                          # a classifier's classes: K alone
        args.class_label = model_class(model, args.class_label, ", 'all' or 'none'")
    resolve_sampler(args, model)
    model.accelerate(acceleration(args, model.shape))
    image = len(model.shape) == 3
    if not npz and not image:
        raise UserError(f"{model.name} draws vectors of shape {tuple(model.shape)}, not images; write an .npz")
    if args.classifier is not None:
        model, labels = _classifier_guided(model, args)
    else:
        labels = _labels(args.class_label, args.n, model)
    nrow = args.nrow or (model.num_classes if args.class_label == "all" else None)
    if not npz:
        check_picture_size(*grid_size(args.n, model.shape[-2:], nrow, scale_of(args)), "grid picture")
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo")
    import time

    from sdekit.solvers.registry import get_sampler
    try:
        started = time.perf_counter()
        cfg_w = 0.0 if args.classifier is not None else args.guidance      # a classifier's w is in its model
        x, info = generate(model, args.n, args.sampler, args.steps, args.seed, labels, cfg_w,
                           args.batch_size, progress=True, return_info=True)
        seconds = time.perf_counter() - started
        noisy = ""
        if rank == 0 and image:
            from sdekit.solvers.loop import NOISY, residual_noise
            probe = 0.2 * (model.data_range[1] - model.data_range[0])
            k = min(64, len(x))
            fn = model.conditional(labels[:k].to(model.device)) if labels is not None else model.score_fn
            r = float(residual_noise(model.sde, fn, x[:k], probe).median())
            if r > NOISY:
                noisy = " [STILL NOISY]"
                print(f"sdekit sample: warning: the samples still hold noise (residual {r:.2f} of the probe level; "
                      f"clean samples are below {NOISY}): these are not finished samples; raise --steps or choose "
                      f"another --sampler", file=sys.stderr)
        if rank == 0:
            if not npz:
                save_picture(out, picture(model.to_unit(x), nrow, scale_of(args)), overwrite=args.overwrite)
            else:
                arr = (model.to_unit(x).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8) if image \
                    else x.numpy().astype(np.float32)
                buf = io.BytesIO()
                np.savez(buf, samples=arr, labels=(labels if labels is not None else torch.full((args.n,), -1)).numpy())
                with atomic_path(out, overwrite=args.overwrite) as tmp:
                    tmp.write_bytes(buf.getvalue())
            how = steps_words(args.sampler, info)
            cond = ""
            if args.class_label is not None:
                names = class_names(model.config) if args.classifier is None else None
                cond = ("one class per column" if args.class_label == "all" else f"class {args.class_label}"
                        + (f" {names[int(args.class_label)]}" if names else ""))
                if args.guidance and args.classifier is not None:
                    cond += f", classifier guidance {args.guidance:g}"
                elif args.guidance:
                    cond += f", guidance {args.guidance:g} (two network passes per evaluation)"
                cond = f", {cond}"
            print(f"{args.n} samples ({args.sampler}, {how}, {info['nfe']} evaluations{cond}, {seconds:.1f} s){noisy} "
                  f"-> {out}")
    finally:
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()

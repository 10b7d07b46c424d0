"""sdekit sample: draw samples from a model bundle into a PNG grid or an .npz file."""


def add_arguments(p):
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--sampler", default="heun", help="any sampler of sdekit.sample (default: heun)")
    p.add_argument("--steps", type=int, default=20, help="solver steps (default: 20)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="class_label", default=None,
                   help="class label for every sample, or 'all' for the classes in turn (conditional models)")
    p.add_argument("--guidance", "--guidance-scale", dest="guidance", type=float, default=0.0,
                   help="guidance weight w: classifier-free for a conditional model, or with --classifier "
                        "score + w grad log p_t(y|x) (default: 0)")
    p.add_argument("--classifier", default=None,
                   help="noise-conditional classifier folder for classifier guidance ('digits': the bundled one)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per solver batch (default: 256)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    p.add_argument("--scale", type=int, default=4, help="grid enlargement factor (default: 4)")
    p.add_argument("--out", required=True, help="grid.png, or samples.npz (uint8 NHWC 'samples' + 'labels')")
    p.add_argument("--device", default=None)


def _labels(spec, n, model):
    import torch
    from ..errors import UserError
    if spec is None:
        return None
    if model.num_classes == 0:
        raise UserError("--class needs a class-conditional model; this one is unconditional")
    if spec == "all":
        return torch.arange(n) % model.num_classes
    try:
        k = int(spec)
    except ValueError:
        raise UserError(f"--class must be an integer or 'all', got {spec!r}") from None
    if not 0 <= k < model.num_classes:
        raise UserError(f"--class must lie in 0..{model.num_classes - 1}, got {k}")
    return torch.full((n,), k, dtype=torch.long)


def _classifier_guided(model, args):
    """A copy of the model whose score is score + w grad log p_t(y | x) for the class --class."""
    import copy

    from ..errors import UserError
    from ..guidance import classifier_guided_score
    from ..nets.classifier import load_classifier
    try:
        k = int(args.class_label)
    except (TypeError, ValueError):
        raise UserError("--classifier needs --class K with one integer class") from None
    clf = load_classifier(args.classifier, sde=model.sde).to(model.device)
    if not 0 <= k < clf.num_classes or tuple(getattr(clf, "shape", model.shape)) != tuple(model.shape):
        raise UserError(f"--class must lie in 0..{clf.num_classes - 1} and the classifier fit the model's shape")
    guided = copy.copy(model)
    guided.score_fn = classifier_guided_score(model.score_fn, clf, k, args.guidance)
    guided.num_classes = 0
    return guided, None


def run(args):
    import io
    import os
    from pathlib import Path

    import numpy as np
    import torch

    from ..bundle import generate, load
    from ..data import save_grid
    from ..errors import UserError
    from ..io import atomic_path

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise UserError(f"--out must end in .png or .npz, got {out.name}")
    from ..samplers import SAMPLERS
    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if args.n < 1 or args.steps < 1:
        raise UserError("-n and --steps must be positive")
    if out.suffix.lower() == ".png" and args.n > 4096:
        raise UserError(f"-n {args.n} is too many for one PNG grid; write an .npz")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    model = load(args.model, device=args.device)
    if args.classifier is not None:
        model, labels = _classifier_guided(model, args)
    else:
        labels = _labels(args.class_label, args.n, model)
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo")
    try:
        x = generate(model, args.n, args.sampler, args.steps, args.seed, labels, args.guidance,
                     args.batch_size, progress=True)
        if rank == 0:
            u = model.to_unit(x)
            if out.suffix.lower() == ".png":
                nrow = args.nrow or (model.num_classes if args.class_label == "all" else None)
                save_grid(out, u, nrow=nrow, scale=args.scale)
            else:
                arr = (u.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
                buf = io.BytesIO()
                np.savez(buf, samples=arr, labels=(labels if labels is not None else torch.full((args.n,), -1)).numpy())
                with atomic_path(out) as tmp:
                    tmp.write_bytes(buf.getvalue())
            print(f"{args.n} samples ({args.sampler}, {args.steps} steps) -> {out}")
    finally:
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()

"""sdekit edit: SDEdit a stroke painting or an edited image with a model bundle."""


def add_arguments(p):
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--guide", required=True, help="guide image (PNG/JPEG, any size and mode)")
    p.add_argument("--mask", default=None,
                   help="mask image, white = keep the guide there (default: the guide's alpha if it has one)")
    p.add_argument("--t0", type=float, default=0.5, help="perturbation time in (0, 1] (default: 0.5)")
    p.add_argument("--steps", type=int, default=None,
                   help="solver steps over [0, t0] (default: 100 x t0 for the stochastic samplers, 20 otherwise)")
    p.add_argument("--repeats", type=int, default=1, help="perturb-and-denoise rounds K (default: 1)")
    p.add_argument("--sampler", default="reverse_diffusion", help="any sampler of sdekit.sample (default: reverse_diffusion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", type=int, default=1, help="number of outputs; more than one writes a grid (default: 1)")
    p.add_argument("--class", dest="class_label", type=int, default=None, help="class label (conditional models)")
    p.add_argument("--resize-back", action="store_true", help="write the output at the guide's original size")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")


def run(args):
    import math
    from pathlib import Path

    import torch

    from ..bundle import load
    from ..errors import UserError
    from ..images import load_image, load_mask, save_image
    from ..samplers import SAMPLERS
    from ..sdedit import sdedit

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--out must end in .png or .jpg, got {out.name}")
    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not (math.isfinite(args.t0) and 0 < args.t0 <= 1):
        raise UserError(f"--t0 must lie in (0, 1], got {args.t0}")
    if args.n < 1 or args.n > 256:
        raise UserError(f"-n must lie in 1..256, got {args.n}")
    model = load(args.model)
    C, H, W = model.shape
    img = load_image(args.guide, model.shape)
    mask = img.alpha
    if args.mask is not None:
        mask = load_mask(args.mask, (H, W))
    steps = args.steps
    if steps is None:
        stochastic = args.sampler in ("em", "euler_maruyama", "reverse_diffusion", "ancestral", "pc")
        steps = max(4, round(100 * args.t0)) if stochastic else 20
    score = model.score_fn if args.class_label is None else model.conditional(args.class_label)
    guide = model.from_unit(img.pixels).expand(args.n, -1, -1, -1).contiguous()
    x = sdedit(model.sde, score, guide, t0=args.t0, steps=steps, mask=mask, repeats=args.repeats,
               sampler=args.sampler, generator=torch.Generator().manual_seed(args.seed), progress=True)
    u = model.to_unit(x)
    if args.n == 1:
        save_image(out, u, size=img.size if args.resize_back else None, overwrite=args.overwrite)
    else:
        from ..data import grid
        save_image(out, torch.from_numpy(grid(u)).permute(2, 0, 1).float()[None] / 255, overwrite=args.overwrite)
    what = "masked " if mask is not None else ""
    print(f"{what}SDEdit t0={args.t0} ({args.sampler}, {steps} steps, {args.repeats} round(s)) -> {out}")

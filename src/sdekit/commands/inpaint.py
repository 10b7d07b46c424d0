"""sdekit inpaint: fill the unknown region of an image (imputation by the reverse SDE)."""

SHAPES = ("left", "right", "top", "bottom", "centre", "center")


def add_arguments(p):
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--image", required=True, help="image file, converted to the model's size and channels")
    p.add_argument("--mask", required=True,
                   help="mask file: white = known pixels to keep, black = to fill; or one of "
                        "left/right/top/bottom/centre (the half / the centre square to fill)")
    p.add_argument("--out", required=True, help="output PNG: the input with its hole, then n completions")
    p.add_argument("--sampler", default="pc", help="any sampler of sdekit.sample (default: pc)")
    p.add_argument("--steps", type=int, default=None, help="solver steps (default: 500 for SDE samplers, 50 fast)")
    p.add_argument("--resample", type=int, default=0, help="RePaint resampling rounds per step (default: 0)")
    p.add_argument("-n", type=int, default=8, help="number of completions (default: 8)")
    p.add_argument("--class", dest="class_label", type=int, default=None, help="class label (conditional models)")
    p.add_argument("--seed", type=int, default=0)


def _shape_mask(name, H, W):
    import torch
    m = torch.ones(1, 1, H, W)
    if name == "left":
        m[..., : W // 2] = 0
    elif name == "right":
        m[..., W // 2:] = 0
    elif name == "top":
        m[..., : H // 2, :] = 0
    elif name == "bottom":
        m[..., H // 2:, :] = 0
    else:
        m[..., H // 4: H - H // 4, W // 4: W - W // 4] = 0
    return m


def steps_for(sampler, steps):
    if steps is not None:
        return steps
    return 50 if sampler in ("ddim", "heun", "dpm_solver") else 500


def check_args(args):
    """The checks inpaint and colorize share; returns the output path."""
    from pathlib import Path

    from ..errors import UserError
    from ..samplers import SAMPLERS

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must end in .png, got {out.name}")
    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not 1 <= args.n <= 256 or args.resample < 0 or (args.steps is not None and args.steps < 1):
        raise UserError("-n must lie in 1..256, --steps be positive and --resample non-negative")
    return out


def run(args):
    import torch

    from ..bundle import load
    from ..errors import UserError
    from ..guidance import inpaint
    from ..images import load_image, load_mask

    out = check_args(args)
    model = load(args.model)
    C, H, W = model.shape
    img = load_image(args.image, model.shape)
    mask = _shape_mask(args.mask, H, W) if args.mask in SHAPES else load_mask(args.mask, (H, W))
    if mask.sum() == 0:
        raise UserError("the mask keeps no pixel (white = known)")
    score = model.score_fn if args.class_label is None else model.conditional(args.class_label)
    x0 = model.from_unit(img.pixels).expand(args.n, -1, -1, -1).contiguous()
    x = inpaint(model.sde, score, x0, mask, steps=steps_for(args.sampler, args.steps), sampler=args.sampler,
                resample=args.resample, generator=torch.Generator().manual_seed(args.seed), progress=True)
    holed = img.pixels * mask + 0.5 * (1 - mask)                     # grey where unknown
    from ..data import save_grid
    u = torch.cat([holed, model.to_unit(x)])
    save_grid(out, u, nrow=len(u), scale=4)
    print(f"{args.n} completions ({args.sampler}, resample {args.resample}) -> {out}")

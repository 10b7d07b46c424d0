"""sdekit colorize: colour a grey image with a 3-channel model (imputation in a decoupled colour space)."""


def add_arguments(p):
    p.add_argument("--model", default=None, help="a 3-channel model bundle folder")
    p.add_argument("--image", required=True, help="image file; its grey level (mean of R, G, B) is kept")
    p.add_argument("--out", required=True, help="output PNG: the grey input, then n colourings")
    p.add_argument("--sampler", default="pc", help="any sampler of sdekit.sample (default: pc)")
    p.add_argument("--steps", type=int, default=None, help="solver steps (default: 500 for SDE samplers, 50 fast)")
    p.add_argument("--resample", type=int, default=0, help="RePaint resampling rounds per step (default: 0)")
    p.add_argument("-n", type=int, default=4, help="number of colourings (default: 4)")
    p.add_argument("--seed", type=int, default=0)


def run(args):
    import torch

    from ..bundle import load
    from ..data import save_grid
    from ..errors import UserError
    from ..guidance import colorize
    from ..images import load_image
    from .inpaint import check_args, steps_for

    out = check_args(args)
    model = load(args.model)
    if model.shape[0] != 3:
        raise UserError(f"colorize needs a 3-channel (RGB) model; {model.name} has {model.shape[0]} channel(s)")
    img = load_image(args.image, model.shape)                       # grey images become 3 equal channels
    gray = model.from_unit(img.pixels).mean(1, keepdim=True).expand(args.n, -1, -1, -1).contiguous()
    x = colorize(model.sde, model.score_fn, gray, steps=steps_for(args.sampler, args.steps), sampler=args.sampler,
                 resample=args.resample, generator=torch.Generator().manual_seed(args.seed), progress=True)
    u = torch.cat([img.pixels.mean(1, keepdim=True).expand(-1, 3, -1, -1), model.to_unit(x)])
    save_grid(out, u, nrow=len(u), scale=4)
    print(f"{args.n} colourings ({args.sampler}) -> {out}")

"""sdekit colorize: colour a grey image with a 3-channel model (imputation in a decoupled colour space)."""
from sdekit.policy import COLORIZE
from sdekit.apps.commands.common import (steps_words, add_device, add_dtype, add_model, add_overwrite, add_sampler, add_scale, add_seed, count,
                     int_range, load_model, positive_int, resolve_sampler)


def add_arguments(p):
    add_model(p, help="a 3-channel model: bundle folder or diffusers folder")
    p.add_argument("--image", required=True,
                   help="image file (PNG, JPEG, BMP, GIF, WebP or TIFF); its grey level (mean of R, G, B) is kept")
    p.add_argument("--out", required=True, help="output grid picture (.png, .jpg, ...): the grey input, then n colourings")
    add_sampler(p, COLORIZE)
    p.add_argument("--steps", type=positive_int, default=None, help="solver steps (default: the sampler's own)")
    p.add_argument("--resample", type=count, default=0, help="RePaint resampling rounds per step (default: 0)")
    p.add_argument("-n", type=int_range(1, 256), default=4, help="number of colourings, 1..256 (default: 4)")
    add_seed(p)
    add_scale(p)
    add_overwrite(p)
    add_device(p)
    add_dtype(p)


def run(args):
    import time

    import torch

    from sdekit.data.datasets import background
    from sdekit.core.errors import UserError
    from sdekit.tasks.guidance import colorize
    from sdekit.data.images import load_image
    from sdekit.apps.commands.common import check_row, placement, save_row, scale_of
    from sdekit.apps.commands.inpaint import check_args

    out = check_args(args)
    model = load_model(args, *placement(args))
    resolve_sampler(args, model)
    if model.shape[0] != 3:
        raise UserError(f"colorize needs a 3-channel (RGB) model; {model.name} has {model.shape[0]} channel(s)")
    scale = scale_of(args)
    check_row(args.n + 1, model.shape[-2:], scale)
    img = load_image(args.image, model.shape, background=background(model.config))                       # grey images become 3 equal channels
    gray = model.from_unit(img.pixels.to(model.device)).mean(1, keepdim=True).expand(args.n, -1, -1, -1).contiguous()
    started = time.perf_counter()
    x, info = colorize(model.sde, model.score_fn, gray, steps=args.steps, sampler=args.sampler,
                       resample=args.resample, generator=torch.Generator().manual_seed(args.seed), progress=True,
                       return_info=True)
    seconds = time.perf_counter() - started
    save_row(out, img.pixels.mean(1, keepdim=True).expand(-1, 3, -1, -1), model.to_unit(x), scale, args.overwrite)
    print(f"{args.n} colourings ({args.sampler}, {steps_words(args.sampler, info)}, resample {args.resample}, "
          f"{info['nfe']} evaluations, {seconds:.1f} s) -> {out}")

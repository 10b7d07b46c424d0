"""sdekit inpaint: fill the unknown region of an image (imputation by the reverse SDE)."""
from sdekit.policy import INPAINT
from sdekit.apps.commands.common import (steps_words, MODEL_DEFAULT, add_device, add_dtype, add_model, add_overwrite, add_sampler, add_scale, add_seed,
                     count, int_range, load_model, positive_int, resolve_sampler)

SHAPES = ("left", "right", "top", "bottom", "centre", "center")


def add_arguments(p):
    add_model(p, help="model bundle folder, or a diffusers folder (as written by "
                      "sdekit convert) " + MODEL_DEFAULT)
    p.add_argument("--image", required=True,
                   help="image file (PNG, JPEG, BMP, GIF, WebP or TIFF), converted to the model's size and channels "
                        "by the rule of sdekit.data.images")
    p.add_argument("--mask", required=True,
                   help="mask file: white = known pixels to keep, black = to fill; or one of "
                        "left/right/top/bottom/centre (the half / the centre square to fill)")
    p.add_argument("--out", required=True,
                   help="output grid picture (.png, .jpg, ...): the input with its hole in grey, then n completions")
    add_sampler(p, INPAINT)
    p.add_argument("--steps", type=positive_int, default=None, help="solver steps (default: the sampler's own)")
    p.add_argument("--resample", type=count, default=0, help="RePaint resampling rounds per step (default: 0)")
    p.add_argument("-n", type=int_range(1, 256), default=8, help="number of completions, 1..256 (default: 8)")
    p.add_argument("--class", dest="class_label", type=count, default=None,
                   help="class label K of a class-conditional model (default: none, unconditional)")
    add_seed(p)
    add_scale(p)
    add_overwrite(p)
    add_device(p)
    add_dtype(p)


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


def check_args(args):
    """The checks inpaint and colorize share; returns the output path."""
    from sdekit.data.images import EXTENSIONS
    from sdekit.apps.commands.common import file_out
    return file_out(args.out, args.overwrite, EXTENSIONS)


def run(args):
    import time

    import torch

    from sdekit.data.datasets import background
    from sdekit.core.errors import UserError
    from sdekit.tasks.guidance import inpaint
    from sdekit.data.images import check_agree, image_size, load_image, load_mask
    from sdekit.apps.commands.common import check_class, check_row, placement, save_row, scale_of

    out = check_args(args)
    model = load_model(args, *placement(args))
    resolve_sampler(args, model)
    check_class(model, args.class_label)
    scale = scale_of(args)
    check_row(args.n + 1, model.shape[-2:], scale)
    C, H, W = model.shape
    img = load_image(args.image, model.shape, background=background(model.config))
    scaled = None
    if args.mask in SHAPES:
        mask = _shape_mask(args.mask, H, W)
    else:
        from pathlib import Path
        if not Path(args.mask).exists():
            raise UserError(f"--mask {args.mask}: no such file, and not one of the keywords {', '.join(SHAPES)}")
        scaled = check_agree(image_size(args.mask), img.size, f"the mask {args.mask}", f"the image {args.image}")
        mask = load_mask(args.mask, (H, W))
    if mask.sum() == 0:
        raise UserError("the mask keeps no pixel (white = known)")
    if mask.min() == 1:
        raise UserError("the mask leaves no pixel to fill (black = unknown)")
    score = model.score_fn if args.class_label is None else model.conditional(args.class_label)
    x0 = model.from_unit(img.pixels.to(model.device)).expand(args.n, -1, -1, -1).contiguous()
    started = time.perf_counter()
    x, info = inpaint(model.sde, score, x0, mask, steps=args.steps, sampler=args.sampler,
                      resample=args.resample, generator=torch.Generator().manual_seed(args.seed), progress=True,
                      return_info=True)
    seconds = time.perf_counter() - started
    holed = img.pixels * mask + 0.5 * (1 - mask)                     # grey where unknown
    save_row(out, holed, model.to_unit(x), scale, args.overwrite)
    print(f"{args.n} completions ({args.sampler}, {steps_words(args.sampler, info)}, resample {args.resample}, "
          f"{info['nfe']} evaluations, {seconds:.1f} s) -> {out}" + (f"; {scaled}" if scaled else ""))

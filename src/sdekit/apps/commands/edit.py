"""sdekit edit: SDEdit a stroke painting or an edited image with a model bundle."""
from sdekit.policy import EDIT, EDIT_STEPS, T0
from sdekit.apps.commands.common import (steps_words, MODEL_DEFAULT, acceleration, add_acceleration, add_device, add_dtype, add_model, add_overwrite,
                     add_sampler, add_scale, add_seed, edit_class, finite, int_range, load_model, positive_int,
                     resolve_sampler)


def add_arguments(p):
    add_model(p, help="model bundle folder, or a diffusers folder (as written by "
                      "sdekit convert) " + MODEL_DEFAULT)
    p.add_argument("--guide", required=True,
                   help="guide image (PNG, JPEG, BMP, GIF, WebP or TIFF; any size and mode), read upright as a "
                        "viewer shows it; the model sees its centre crop of the model's aspect ratio")
    p.add_argument("--mask", default=None,
                   help="mask image, white = keep the guide there (default: no mask; see --alpha-mask)")
    p.add_argument("--keep-polarity", action="store_true",
                   help="use a grey guide as drawn; by default, for a model of grey pictures, a guide drawn dark on light "
                        "for light strokes on dark (or the reverse), recognised from its border, is inverted with a "
                        "note; colour models' guides are never inverted")
    p.add_argument("--alpha-mask", action="store_true",
                   help="use the guide's transparency as the mask: its opaque pixels are kept, the transparent "
                        "ones regenerated (default: transparency is composited over the model's background and "
                        "the whole guide is edited)")
    p.add_argument("--t0", type=float, default=None,
                   help="noise level to start from, in (0, 1]: the VP SDE's noise level at time t0, the same for "
                        f"every SDE (default: the model's calibrated t0, else {T0.default:g})")
    p.add_argument("--t0-map", dest="t0_map", default=None, metavar="MAP",
                   help="a per-pixel t0 instead of --t0: a picture of the guide's aspect ratio whose grey level is "
                        "t0 (black = keep the guide, white = t0 1), read by the guide's rule; each pixel joins the "
                        "edit when the solver reaches its own noise level")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"solver steps from t0 down to 0 (default: {EDIT_STEPS.fraction:g} x the sampler's default steps "
                        f"x t0 for the stochastic samplers, at least {EDIT_STEPS.min_steps}; a fast solver's own)")
    p.add_argument("--repeats", type=positive_int, default=1, help="perturb-and-denoise rounds K (default: 1)")
    add_sampler(p, EDIT)
    add_seed(p)
    p.add_argument("-n", type=int_range(1, 256), default=1,
                   help="number of outputs, 1..256; more than one writes a grid: the guide, then the outputs (default: 1)")
    p.add_argument("--class", dest="class_label", type=edit_class, default=None,
                   help="class-conditional models: the class K (or its name) to edit towards, 'auto' (the class the model's "
                        "classifier reads in the guide) or 'none' (an unconditional edit) (default: the model's "
                        "own default, for the bundled MNIST model 'auto'; else none)")
    p.add_argument("--guidance-scale", dest="guidance", type=finite, default=None, metavar="W",
                   help="classifier-free guidance weight w >= 0 towards the class (default: the model's own, for "
                        "the bundled MNIST model 2; else 0)")
    p.add_argument("--resize-back", action="store_true",
                   help="write at the guide's own size, without enlargement: the output resized back onto the part "
                        "of the guide the model saw (its centre crop) and pasted into the guide, so it lines up with it")
    add_scale(p)
    add_overwrite(p)
    p.add_argument("--out", required=True, help="output picture (.png, .jpg, .bmp, .gif, .webp or .tif)")
    add_device(p)
    add_dtype(p)
    add_acceleration(p)


def run(args):
    from pathlib import Path
    import time

    import torch

    from sdekit.core.errors import UserError
    from sdekit.core.checks import check_t0
    from sdekit.data.images import (EXTENSIONS, check_agree, check_picture_size, enlarge, from_pil, guide_frame, image_size,
                          follow_polarity, load_image, load_map, load_mask, restore, save_picture,
                                   to_pil)
    from sdekit.data.datasets import background, class_names
    from sdekit.tasks.sdedit import default_t0, describe_condition, edit_condition, sdedit
    from sdekit.apps.commands.common import check_row, model_class, file_out, placement, save_row, scale_of

    out = file_out(args.out, args.overwrite, EXTENSIONS)
    if args.t0 is not None:
        check_t0(args.t0, name="--t0")
    if args.t0 is not None and args.t0_map is not None:
        raise UserError("give --t0 (one t0) or --t0-map (one per pixel), not both")
    if args.t0_map is not None:
        map_scaled = check_agree(image_size(args.t0_map), image_size(args.guide), f"the t0 map {args.t0_map}",
                                 f"the guide {args.guide}")
    if args.resize_back and args.scale is not None:
        raise UserError("--scale does not apply with --resize-back: the output keeps the guide's own size")
    acceleration(args)                                   # refused before the model loads
    model = load_model(args, *placement(args))
    resolve_sampler(args, model)
    model.accelerate(acceleration(args, model.shape))
    args.class_label = model_class(model, args.class_label)
    C, H, W = model.shape
    img = load_image(args.guide, model.shape, background=background(model.config))
    inverted = False
    if not args.keep_polarity:
        img, inverted = follow_polarity(img, background(model.config))
    if args.alpha_mask and args.mask is not None:
        raise UserError("give --mask or --alpha-mask, not both")
    if args.alpha_mask and img.alpha is None:
        raise UserError(f"--alpha-mask: the guide {args.guide} has no transparency")
    mask, scaled = (img.alpha if args.alpha_mask else None), None
    if img.alpha is not None and not args.alpha_mask:
        scaled = "the guide's transparency composited over the model's background (--alpha-mask keeps its opaque pixels)"
    if args.mask is not None:
        if not Path(args.mask).exists():
            raise UserError(f"--mask {args.mask}: no such file (edit takes a mask image, white = keep; the keyword "
                            "masks are inpaint's)")
        mask_scaled = check_agree(image_size(args.mask), img.size, f"the mask {args.mask}", f"the guide {args.guide}")
        mask = load_mask(args.mask, (H, W))
    else:
        mask_scaled = None
    w_in, h_in = img.size
    left, top, right, bottom = img.box or (0, 0, w_in, h_in)
    cropped = (f"the guide is {w_in}x{h_in}: its centre {right - left}x{bottom - top} was edited (--resize-back "
               "puts the edit back into the whole picture)") if (right - left, bottom - top) != (w_in, h_in) else None
    grey = ("the guide is grey: each colour channel takes its grey" if C == 3 and img.frame is not None
            and img.frame.mode in ("L", "I", "I;16", "F") else None)
    scaled = "; ".join(s for s in (scaled, mask_scaled, map_scaled if args.t0_map is not None else None, cropped, grey)
                       if s) or None
    t0_map = None if args.t0_map is None else load_map(args.t0_map, (H, W))
    scale = 1 if args.resize_back else scale_of(args)
    cell = (img.size[1], img.size[0]) if args.resize_back else (H, W)
    if args.n > 1:
        check_row(args.n + 1, cell, scale)
    else:
        check_picture_size(cell[1] * scale, cell[0] * scale, "output picture")
    guide = model.from_unit(img.pixels.to(model.device)).expand(args.n, -1, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    score, labels, w = edit_condition(model, guide[:1], args.class_label, args.guidance, generator)  # one reading, n outputs
    t0 = default_t0(model, labels is not None) if args.t0 is None else args.t0
    if t0_map is not None:
        t0 = t0_map.to(model.device)
    x, info = sdedit(model.sde, score, guide, t0=t0, steps=args.steps, mask=mask, repeats=args.repeats,
                     sampler=args.sampler, generator=generator, progress=True,
                     return_info=True)
    seconds = time.perf_counter() - started
    u = model.to_unit(x).cpu()
    if args.n == 1:
        im = restore(img, u[0]) if args.resize_back else enlarge(to_pil(u[0]), scale)
        save_picture(out, im, overwrite=args.overwrite)
    elif args.resize_back:
        u = torch.stack([from_pil(restore(img, ui)) for ui in u])
        save_row(out, from_pil(guide_frame(img, C))[None], u, 1, args.overwrite)
    else:
        save_row(out, img.pixels, u, scale, args.overwrite)
    if inverted:
        note = "the guide is drawn dark on light: inverted to the model's light strokes on dark (--keep-polarity: as drawn)"
        scaled = f"{scaled}; {note}" if scaled else note
    what = "masked " if mask is not None else ""
    cond = describe_condition(labels, args.class_label, w, class_names(model.config))
    cond = f" {cond}" if cond else ""
    level = f"t0={t0:g}" if t0_map is None else f"t0 map {float(t0_map.min()):g}..{info['t0']:g}"
    print(f"{what}SDEdit {level}{cond} ({args.sampler}, {steps_words(args.sampler, info)}, {args.repeats} round(s), "
          f"{info['nfe']} evaluations, {seconds:.1f} s) -> {out}" + (f"; {scaled}" if scaled else ""))

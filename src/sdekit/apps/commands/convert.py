"""sdekit convert: an original SDEdit or score_sde checkpoint into a folder sdekit (and diffusers) load."""
from sdekit.apps.commands.common import add_overwrite, positive, positive_int


def _ints(text: str) -> tuple[int, ...]:
    import argparse
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text!r}")
    return vals


def add_arguments(p):
    from sdekit.models.pretrained.presets import PRESETS, SOURCES
    p.add_argument("checkpoint", help="the original checkpoint: SDEdit's .ckpt (a DDPM state dict) or score_sde's "
                                      "checkpoint_N.pth; read with torch.load(weights_only=True), nothing in it is run")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the checkpoint's layout")
    p.add_argument("--preset", required=True, choices=tuple(PRESETS), metavar="NAME",
                   help="its architecture: " + ", ".join(PRESETS) + " (the flags below change single fields)")
    p.add_argument("--out", required=True, help="output folder (a diffusers pipeline folder: model_index.json, "
                                                "unet/, scheduler/)")
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="use the raw training weights, not the EMA weights the checkpoint holds (default: EMA)")
    p.add_argument("--resolution", type=positive_int, default=None, help="image size H = W")
    p.add_argument("--ch", type=positive_int, default=None, help="base channel width")
    p.add_argument("--ch-mult", type=_ints, default=None, help="width multipliers per level, e.g. 1,1,2,2,4,4")
    p.add_argument("--num-res-blocks", type=positive_int, default=None, help="residual blocks per level")
    p.add_argument("--attn", type=_ints, default=None, help="resolutions with self-attention, e.g. 16")
    p.add_argument("--sigma-min", type=positive, default=None, help="score_sde: the VE SDE's sigma_min")
    p.add_argument("--sigma-max", type=positive, default=None, help="score_sde: the VE SDE's sigma_max")
    add_overwrite(p)


def run(args):
    from sdekit.core.errors import UserError
    from sdekit.models.pretrained.convert import convert_checkpoint
    from sdekit.models.pretrained.folder import need_diffusers
    from sdekit.models.pretrained.presets import get_preset
    from sdekit.apps.commands.common import folder_out

    arch = get_preset(args.preset)
    if arch.source != args.source:
        raise UserError(f"preset {args.preset} is a {arch.source} architecture, not {args.source}")
    arch = arch.replace(resolution=args.resolution, ch=args.ch, ch_mult=args.ch_mult, num_res_blocks=args.num_res_blocks,
                        attn_resolutions=args.attn, sigma_min=args.sigma_min, sigma_max=args.sigma_max)
    out = folder_out(args.out, args.overwrite)
    need_diffusers(args.checkpoint)
    convert_checkpoint(args.checkpoint, arch, out, ema=args.ema, overwrite=args.overwrite)
    print(f"{args.checkpoint} ({args.source}, {args.preset}) -> {out}  (sdekit ... --model {out})")

"""sdekit export: a model as a diffusers folder that plain diffusers loads and samples with."""
from sdekit.apps.commands.common import add_model, add_overwrite


def add_arguments(p):
    add_model(p, "the model to export: a diffusers folder sdekit loads, or a run trained with "
                 "`sdekit train --init DIFFUSERS_FOLDER` (its folder or model/); sdekit's own bundles do not map "
                 "onto diffusers' UNet2DModel and are refused")
    p.add_argument("--out", required=True, help="output folder: a diffusers pipeline folder (model_index.json, unet/, "
                                                "scheduler/)")
    add_overwrite(p)


def run(args):
    from sdekit.apps.commands.common import folder_out, load_model
    from sdekit.core.errors import UserError
    from sdekit.models.pretrained.export import to_diffusers
    from sdekit.models.pretrained.folder import need_diffusers

    if args.model is None:
        raise UserError("--model is required: the diffusers folder (or run) to export")
    out = folder_out(args.out, args.overwrite)
    need_diffusers(args.model)
    model = load_model(args)
    to_diffusers(model, out, overwrite=args.overwrite)
    print(f"{args.model} -> {out}  (diffusers: UNet2DModel.from_pretrained({str(out)!r}, subfolder='unet'), "
          f"{model.config['scheduler']}.from_pretrained({str(out)!r}, subfolder='scheduler'))")

"""sdekit evaluate: SDEdit's t0 sweep on held-out strokes: class fidelity, realism (KID), faithfulness (L2)."""
from sdekit.policy import EDIT, EDIT_STEPS
from sdekit.apps.commands.common import (MODEL_DEFAULT, add_download, add_model, add_sampler, download, edit_class, finite,
                                         load_model, resolve_sampler)


def add_arguments(p):
    add_model(p, help=f"model bundle folder or diffusers folder {MODEL_DEFAULT}")
    p.add_argument("--data", default=None,
                   help="the model's dataset, which picks the judge and the KID reference: digits, mnist:DIR or "
                        "emoji:DIR; mnist or emoji without DIR: the held-out subset shipped with sdekit (no "
                        "nearest-training-image baseline) (default: the bundle's \"data\")")
    add_download(p)
    p.add_argument("--judge", default=None, metavar="FOLDER",
                   help="a judge written by `sdekit train-features --data SPEC --out FOLDER`, for a model of data "
                        "sdekit ships no judge for (KID, FID and L2 against the judge's own held-out images; class "
                        "fidelity only if its classes are the model's) (default: the shipped judge of the data)")
    p.add_argument("--strokes", default=None, choices=("pen", "simulated", "package"),
                   help="held-out strokes: pen (digits drawn as pen strokes), simulated (the paper's simulation "
                        "from held-out real images), package (the shipped stroke paintings) (default: pen for a grey model, "
                        "simulated for a colour one)")
    p.add_argument("--t0", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
                   help="comma-separated t0 values in (0, 1] (default: 0.1,...,1.0)")
    p.add_argument("-n", type=int, default=200, help="number of strokes edited per t0 (default: 200)")
    add_sampler(p, EDIT, "SDEdit's solver")
    p.add_argument("--steps-per-unit", type=int, default=None,
                   help=f"SDEdit steps = this x t0, at least {EDIT_STEPS.min_steps} (default: the library's rule, "
                        f"{EDIT_STEPS.fraction:g} x the sampler's default steps per unit of t0: 100 t0 for reverse diffusion)")
    p.add_argument("--batch-size", type=int, default=100, help="strokes edited at once (default: 100)")
    p.add_argument("--n-reference", type=int, default=None,
                   help="use only the first N held-out reference images for KID/FID (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out strokes and the edits' noise (default: 0)")
    p.add_argument("--out", default="sdekit-eval", help="output folder (default: sdekit-eval)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out (refused without it)")
    p.add_argument("--class", dest="class_label", type=edit_class, default=None,
                   help="how the edits are conditioned: 'auto' (the class the model's classifier reads in each "
                        "stroke), 'none' (unconditional) or a class K or its name (default: the model's default edit)")
    p.add_argument("--guidance-scale", dest="guidance", type=finite, default=None, metavar="W",
                   help="classifier-free guidance weight w >= 0 towards the class (default: the model's own)")
    p.add_argument("--write-t0", action="store_true",
                   help="write the default t0 (of the t0 keeping the class in >= 95%% of edits, or 5 points below the judge's accuracy on real images if lower, the smallest whose edits are "
                        "as realistic as the model's samples, else the largest) into the --model bundle's "
                        "config.json as \"sdedit\": {\"t0\": ...} (with --class auto: the bundle's default edit "
                        "becomes class-guided at that t0; an unconditional sweep of such a bundle writes "
                        "\"t0_unconditional\")")


def run(args):
    import sys

    from sdekit.core.errors import UserError
    from sdekit.apps.commands.common import model_class
    from sdekit.apps.evaluation import bundle_config, check_outputs, evaluate, parse_t0s, write_t0
    if args.steps_per_unit is not None and args.steps_per_unit < 1:
        raise UserError(f"--steps-per-unit must be positive, got {args.steps_per_unit}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    t0s = parse_t0s(args.t0)
    check_outputs(args.out, args.overwrite)
    if args.write_t0:
        if args.model is None:
            raise UserError("--write-t0 needs --model FOLDER: the bundle whose config.json gets the t0")
        if args.class_label not in (None, "auto", -1):
            raise UserError("--write-t0 writes the default of an 'auto' or unconditional edit, not of a given class")
        bundle_config(args.model)
    model = load_model(args)
    args.class_label = model_class(model, args.class_label)
    resolve_sampler(args, model)
    if args.download:
        download(args.data or (getattr(model, "config", None) or {}).get("data"))
    res = evaluate(model, args.data, t0s, n=args.n, strokes=args.strokes, sampler=args.sampler,
                   steps_per_unit=args.steps_per_unit, seed=args.seed, out=args.out, batch_size=args.batch_size,
                   overwrite=args.overwrite, n_reference=args.n_reference, class_label=args.class_label,
                   guidance=args.guidance, judge=args.judge)
    print((res.index.parent / "results.md").read_text(), end="")
    print(f"report: {res.index}")
    if args.write_t0:
        if res.default_t0 is None:
            print("sdekit evaluate: warning: no default t0 found; the bundle is unchanged", file=sys.stderr)
        else:
            mode = res.meta["class"]
            path = write_t0(args.model, res.default_t0, "auto" if mode == "auto" else None, res.meta["guidance"])
            print(f"t0 = {res.default_t0:g} -> {path}")

"""sdekit demo: samples and every SDEdit task of a model (default: the default model), in one HTML report."""
from sdekit.apps.commands.common import add_model, add_overwrite, add_scale, add_seed, load_model


def add_arguments(p):
    p.add_argument("--out", default="sdekit-demo", help="output folder (default: sdekit-demo)")
    add_seed(p)
    add_model(p, help="model bundle folder or shipped model name (default: the default "
                      "model, MNIST where it is installed, else digits)")
    p.add_argument("--evaluation", default=None, metavar="DIR",
                   help="an `sdekit evaluate` report folder whose t0 trade-off plot the report shows (default: the "
                        "model folder's evaluation/ if there is one)")
    p.add_argument("--small", action="store_true", help="a quick, low-quality version (few steps and images)")
    p.add_argument("--no-toy", dest="toy", action="store_false", help="skip the toy pictures")
    add_scale(p)
    add_overwrite(p, "the report's files in --out")


def run(args):
    import time
    from pathlib import Path

    from sdekit.models.bundle import BUNDLED_MODELS, bundled
    from sdekit.apps.demo import demo, find_evaluation
    from sdekit.core.errors import UserError
    from sdekit.core.threads import default_threads, torch_threads
    from sdekit.apps.commands.common import folder_out, scale_of
    out = folder_out(args.out, args.overwrite)
    evaluation = args.evaluation
    if evaluation is not None and find_evaluation(evaluation) is None:
        raise UserError(f"--evaluation {evaluation}: not an sdekit evaluate report (needs results.json and tradeoff.png)")
    if evaluation is None:
        named = args.model is None or args.model in ("default", *BUNDLED_MODELS)
        folder = bundled(args.model) if named else Path(args.model)
        evaluation = find_evaluation(folder / "evaluation")
    model = load_model(args)
    default_run = args.model in (None, "default")     # the default model's report links the colour model's
    start = time.time()
    with torch_threads(default_threads()):           # one per free core: oversubscribed threads wait on each other
        index = demo(out, seed=args.seed, model=model, small=args.small, toy=args.toy, scale=scale_of(args),
                     evaluation=evaluation, colour=default_run and (BUNDLED_MODELS["emoji"] / "config.json").is_file())
    print(f"demo written in {time.time() - start:.0f} s")
    print(f"report: {index}")

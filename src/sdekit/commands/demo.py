"""sdekit demo: samples and every SDEdit task on the bundled digits model, in one HTML report."""
from .common import add_overwrite, add_scale, add_seed


def add_arguments(p):
    p.add_argument("--out", default="sdekit-demo", help="output folder (default: sdekit-demo)")
    add_seed(p)
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--small", action="store_true", help="a quick, low-quality version (few steps and images)")
    p.add_argument("--no-toy", dest="toy", action="store_false", help="skip the toy pictures")
    add_scale(p)
    add_overwrite(p, "the report's files in --out")


def run(args):
    from ..bundle import load
    from ..demo import demo
    from .common import folder_out, scale_of
    out = folder_out(args.out, args.overwrite)
    index = demo(out, seed=args.seed, model=load(args.model), small=args.small, toy=args.toy, scale=scale_of(args))
    print(f"report: {index}")

"""sdekit toy: the pictures of the SDE papers' toy example with exact scores, in one HTML report."""
from sdekit.apps.commands.common import add_overwrite, add_seed, positive_int


def add_arguments(p):
    p.add_argument("--out", default="sdekit-toy", help="output folder (default: sdekit-toy)")
    p.add_argument("-n", type=positive_int, default=None, help="samples per 2-D panel (default: 1000)")
    add_seed(p)
    add_overwrite(p, "the report's files in --out")


def run(args):
    from sdekit.apps import toy
    from sdekit.core.threads import default_threads, torch_threads
    from sdekit.apps.commands.common import folder_out
    out = folder_out(args.out, args.overwrite)
    with torch_threads(default_threads()):
        index = toy.toy_report(out, seed=args.seed, **({} if args.n is None else {"n": args.n}))
    print(f"wrote {len(list(out.glob('*.png')))} pictures into {out}")
    print(f"report: {index}")

"""sdekit toy: the pictures of the SDE papers' toy example with exact scores, in one HTML report."""
from .common import add_overwrite, add_seed


def add_arguments(p):
    p.add_argument("--out", default="sdekit-toy", help="output folder (default: sdekit-toy)")
    add_seed(p)
    add_overwrite(p, "the report's files in --out")


def run(args):
    from ..toy import toy_report
    from .common import folder_out
    print(f"report: {toy_report(folder_out(args.out, args.overwrite), seed=args.seed)}")

def add_arguments(p):
    p.add_argument("--out", default="sdekit-demo", help="output folder (default: sdekit-demo)")
    p.add_argument("--seed", type=int, default=0)


def run(args):
    from ..toy import toy_report
    print(f"report: {toy_report(args.out, seed=args.seed)}")

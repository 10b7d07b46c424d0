"""sdekit demo: samples and every SDEdit task on the bundled digits model, in one HTML report."""


def add_arguments(p):
    p.add_argument("--out", default="sdekit-demo", help="output folder (default: sdekit-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--small", action="store_true", help="a quick, low-quality version (few steps and images)")
    p.add_argument("--no-toy", dest="toy", action="store_false", help="skip the toy pictures")


def run(args):
    from ..bundle import load
    from ..demo import demo
    index = demo(args.out, seed=args.seed, model=load(args.model), small=args.small, toy=args.toy)
    print(f"report: {index}")

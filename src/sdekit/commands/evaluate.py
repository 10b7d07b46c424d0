"""sdekit evaluate: the t0 sweep of SDEdit, realism (KID) vs faithfulness (L2), with plots."""


def add_arguments(p):
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--data", default="digits", help="dataset of the model (default: digits)")
    p.add_argument("--t0", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
                   help="comma-separated t0 values in (0, 1] (default: 0.1,...,1.0)")
    p.add_argument("-n", type=int, default=200, help="number of guides (default: 200)")
    p.add_argument("--sampler", default="reverse_diffusion", help="SDEdit's sampler (default: reverse_diffusion)")
    p.add_argument("--steps-per-unit", type=int, default=50,
                   help="SDEdit steps = this x t0, at least 4 (default: 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sdekit-eval", help="output folder (default: sdekit-eval)")


def run(args):
    from ..bundle import load
    from ..errors import UserError
    from ..evaluation import evaluate, parse_t0s
    from ..samplers import SAMPLERS
    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if args.steps_per_unit < 1:
        raise UserError("--steps-per-unit must be positive")
    t0s = parse_t0s(args.t0)
    model = load(args.model)
    rows, index = evaluate(model, args.data, t0s, n=args.n, sampler=args.sampler,
                           steps_per_unit=args.steps_per_unit, seed=args.seed, out=args.out)
    print((index.parent / "results.md").read_text(), end="")
    print(f"report: {index}")

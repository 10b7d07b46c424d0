"""sdekit likelihood: bits/dim of a dataset under a model, through the probability-flow ODE."""


def add_arguments(p):
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--data", default="digits", help="dataset spec, as for `sdekit train` (default: digits)")
    p.add_argument("-n", type=int, default=64, help="number of data points, taken at random (default: 64)")
    p.add_argument("--solver", default="rk45", choices=("rk45", "heun"), help="ODE solver (default: rk45)")
    p.add_argument("--rtol", type=float, default=1e-5, help="RK45 tolerances, as score_sde (default: 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=64, help="Heun steps (2 NFE each; default: 64)")
    p.add_argument("--probes", default="rademacher", choices=("rademacher", "gaussian", "exact"),
                   help="divergence estimator (default: rademacher)")
    p.add_argument("--n-probes", type=int, default=1, help="Hutchinson probes per point (default: 1)")
    p.add_argument("--no-dequantize", action="store_true", help="skip uniform dequantisation of 8-bit images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)


def run(args):
    import math

    import torch
    from tqdm.auto import tqdm

    from ..bundle import load
    from ..data import load_dataset
    from ..errors import UserError
    from ..likelihood import likelihood

    if args.n < 1 or args.batch_size < 1 or args.n_probes < 1 or args.steps < 1:
        raise UserError("-n, --batch-size, --n-probes and --steps must be positive")
    model = load(args.model)
    ds = load_dataset(args.data, size=model.shape[-1] if len(model.shape) == 3 else None,
                      channels=model.shape[0] if len(model.shape) == 3 else None)
    if tuple(ds.shape) != tuple(model.shape):
        raise UserError(f"{args.data}: data of shape {ds.shape} do not fit the model's {model.shape}")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds), generator=g)[: args.n]
    image = ds.is_image and ds.data_range is not None
    bpd, nfe = [], 0
    for i in tqdm(range(0, len(idx), args.batch_size), desc="bits/dim", unit="batch"):
        x = ds.x[idx[i: i + args.batch_size]].to(model.device)
        b, info = likelihood(model.sde, model.score_fn, x, data_range=model.data_range if image else None,
                             dequantize=image and not args.no_dequantize, probes=args.probes,
                             n_probes=args.n_probes, solver=args.solver, rtol=args.rtol, atol=args.atol,
                             steps=args.steps, generator=g, return_info=True)
        bpd.append(b.cpu())
        nfe = max(nfe, info["nfe"])
    bpd = torch.cat(bpd).double()
    se = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
    unit = "bits/dim (8-bit, dequantised)" if image and not args.no_dequantize else "bits/dim"
    print(f"{float(bpd.mean()):.4f} +- {se:.4f} {unit}  (n={len(bpd)}, {args.solver}, NFE per batch <= {nfe}, "
          f"{args.probes} x{args.n_probes}; +- is the standard error over data points and probes)")

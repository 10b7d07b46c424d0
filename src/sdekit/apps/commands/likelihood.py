"""sdekit likelihood: bits/dim of a dataset under a model, through the probability-flow ODE."""
from sdekit.apps.commands.common import (MODEL_DEFAULT, add_device, add_download, add_dtype, add_model, add_seed,
                                         download, load_model, positive, positive_int)

from sdekit.policy import LIKELIHOOD

RTOL = ATOL = 1e-5            # score_sde's tolerances
HEUN_STEPS = LIKELIHOOD.steps
SOLVERS = ("rk45", "rk45_logsigma", "heun")      # sdekit.tasks.likelihood.SOLVERS, without importing torch


def add_arguments(p):
    add_model(p, help="model bundle folder, or a diffusers folder (as written by "
                      "sdekit convert) " + MODEL_DEFAULT)
    p.add_argument("--data", default=None, help="dataset spec, as for `sdekit train`; mnist or emoji without DIR: "
                   "the held-out subset shipped with sdekit (1000 MNIST test images, the 880 held-out emoji) "
                   "(default: the bundle's \"data\": that subset for the default model)")
    add_download(p)
    p.add_argument("-n", type=positive_int, default=64, help="number of data points, taken at random (default: 64)")
    p.add_argument("--solver", default=LIKELIHOOD.sampler, choices=SOLVERS,
                   help="ODE solver: rk45 in t (score_sde's), rk45_logsigma (in log sigma, each sample's error held "
                        f"separately) or heun (fixed steps) (default: {LIKELIHOOD.sampler})")
    p.add_argument("--rtol", type=positive, default=None, help=f"RK45 relative tolerance, as score_sde (default: {RTOL})")
    p.add_argument("--atol", type=positive, default=None, help=f"RK45 absolute tolerance, as score_sde (default: {ATOL})")
    p.add_argument("--steps", type=positive_int, default=None, help=f"Heun steps (2 NFE each; default: {HEUN_STEPS})")
    p.add_argument("--probes", default="auto", choices=("auto", "rademacher", "gaussian", "exact"),
                   help="divergence estimator: auto (the exact divergence up to 64 dimensions, else one rademacher "
                        "probe), Hutchinson with rademacher or gaussian probes, or the exact divergence (default: auto)")
    p.add_argument("--n-probes", type=positive_int, default=None,
                   help="Hutchinson probes per point, with rademacher or gaussian probes (default: 1)")
    p.add_argument("--no-dequantize", action="store_true",
                   help="skip uniform dequantisation of 8-bit images (bits/dim of the continuous density)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="data points per ODE solve (default: 64)")
    add_seed(p)
    add_device(p)
    add_dtype(p)


def run(args):
    import math
    import sys
    import time

    import torch
    from sdekit.core.bars import progress_bar

    from sdekit.data.datasets import load_dataset
    from sdekit.data.heldout import load_heldout, shipped
    from sdekit.core.errors import UserError
    from sdekit.tasks.likelihood import likelihood

    rk45 = args.solver.startswith("rk45")
    unused = [flag for flag, value, applies in (("--rtol", args.rtol, rk45),
                                                  ("--atol", args.atol, rk45),
                                                  ("--steps", args.steps, args.solver == "heun"),
                                                  ("--n-probes", args.n_probes, args.probes != "exact"))
              if value is not None and not applies]
    if unused:
        raise UserError(f"{unused[0]} does nothing with --solver {args.solver} --probes {args.probes}")
    rtol, atol = (args.rtol or RTOL, args.atol or ATOL) if args.solver == "rk45" else (args.rtol, args.atol)
    steps, n_probes = args.steps or HEUN_STEPS, args.n_probes or 1
    from sdekit.apps.commands.common import placement
    model = load_model(args, *placement(args))
    if not args.data:
        args.data = (getattr(model, "config", None) or {}).get("data")
        if not args.data:
            raise UserError("this model names no dataset: give --data")
        if args.data in ("fashion-mnist", "cifar10"):
            raise UserError(f"the model's data, {args.data}, are not shipped: give --data {args.data}:DIR "
                            "(the folder that holds them)")
    if args.download:
        download(args.data)
    own = (getattr(model, "config", None) or {}).get("data")
    if own and str(args.data).partition(":")[0].lower() != str(own).partition(":")[0].lower():
        print(f"note: {args.data} is not the data {model.name} was trained on ({own}); it is read at the model's "
              f"shape {tuple(model.shape)}", file=sys.stderr)
    size, channels = (model.shape[-1], model.shape[0]) if len(model.shape) == 3 else (None, None)
    subset = shipped(args.data)
    if subset is not None:
        print(f"note: {subset.note()}", file=sys.stderr)
    ds = (load_dataset if subset is None else load_heldout)(args.data, size=size, channels=channels)
    if tuple(ds.shape) != tuple(model.shape):
        raise UserError(f"{args.data}: data of shape {ds.shape} do not fit the model's {model.shape}")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds), generator=g)[: args.n]
    if args.n > len(ds):
        print(f"note: {args.data} holds {len(ds)} data points, fewer than -n {args.n}: all of them are used",
              file=sys.stderr)
    image = ds.is_image and ds.data_range is not None
    if args.no_dequantize and not image:
        raise UserError(f"--no-dequantize applies to 8-bit images; {args.data} is not image data")
    from sdekit.core.denoisers import ScoreView
    from sdekit.solvers.progress import Watched
    from sdekit.core.threads import default_threads, torch_threads
    batches = idx.split(args.batch_size)
    start, bpd, nfe = time.time(), [], []
    with torch_threads(default_threads()), progress_bar(total=len(batches), desc="bits/dim", unit="batch",
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}") as bar:
        for j, rows in enumerate(batches):
            x = ds.x[rows].to(model.device)           # integrated in float32 at least (sdekit.likelihood)

            def report(fraction, t, evaluations, j=j):
                bar.set_postfix_str(f"batch {j + 1}/{len(batches)}, t = {t:.3g}, {evaluations} evaluations",
                                    refresh=False)
                bar.update(max(0.0, j + fraction - bar.n))
            b, info = likelihood(model.sde, ScoreView(Watched(model.denoiser, report)), x,
                                 data_range=model.data_range if image else None, dequantize=image and not args.no_dequantize, probes=args.probes,
                                 n_probes=n_probes, solver=args.solver, rtol=rtol, atol=atol,
                                 steps=steps, generator=g, return_info=True)
            bpd.append(b.cpu())
            nfe.append(info["nfe"])
            bar.update(j + 1 - bar.n)
    bpd = torch.cat(bpd).double()
    se = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
    unit = "bits/dim (8-bit, dequantised)" if image and not args.no_dequantize else "bits/dim"
    tol = "" if rtol is None and atol is None else f", rtol {rtol or 'default'}, atol {atol or 'default'}"
    how = {"rk45": "RK45 in t", "rk45_logsigma": "RK45 in log sigma"}.get(args.solver, f"Heun, {steps} steps")
    how += tol if rk45 else ""
    exact = info.get("vjps_per_nfe") == x[0].numel() and args.probes in ("auto", "exact")
    probes = "exact divergence" if exact else f"{'rademacher' if args.probes == 'auto' else args.probes} probes x{n_probes}"
    print(f"{len(bpd)} data points of {args.data} in {len(batches)} batch{'es' if len(batches) > 1 else ''}; "
          f"{sum(nfe)} network evaluations ({min(nfe)}{'' if min(nfe) == max(nfe) else f'-{max(nfe)}'} per batch; "
          f"{how}; {probes}); "
          f"{time.time() - start:.0f} s")
    print(f"{float(bpd.mean()):.4f} +- {se:.4f} {unit}  (+- is the standard error over the {len(bpd)} data points "
          f"and their probes)")
    if unit.startswith("bits/dim (8-bit") and float(bpd.mean()) < 0:
        fix = "more --steps, or --solver rk45" if args.solver == "heun" else "smaller --rtol and --atol"
        print("warning: bits/dim below 0 cannot be: dequantised 8-bit data have bits/dim >= 0; the solver is too "
              f"coarse here ({fix})", file=sys.stderr)

"""Time schedules fitted to a model: the geometry-inspired time scheduling (GITS) of Chen et al. (2024),
"On the Trajectory Regularity of ODE-based Diffusion Sampling" (ICML 2024).

The probability-flow trajectories of a trained model are regular: from a few of them, walked with many
small steps (the teacher), one can read how much error one coarse step from any fine level sigma_i to
any lower sigma_j would make, and choose the N levels whose steps add up to the least error:

    cost(i, j) = E || y_hat_j(i) - y_j ||^2,    y_hat_j(i) = D_i + (sigma_j / sigma_i) (y_i - D_i)

with y = x / s the state on the teacher's trajectory, D_i = D(y_i; sigma_i) the teacher's denoised
estimate there and y_hat_j(i) the first-order (DDIM) step from i to j, which needs no evaluation beyond
the teacher's own. The N-step grid is the cheapest path from sigma_max to 0 with N edges (dynamic
programming over the fine levels, O(N M^2)). The teacher is DPM-Solver++(2M) on M levels uniform in
log sigma from sigma(T) to ``sigma_min``, then 0.

The grid is fitted once per model and then used by every fast solver (``sdekit.sample(..., sigmas=grid)``);
the benchmarks measure it against the SDE's own grid on the bundled networks.
"""
from __future__ import annotations

import numpy as np
import torch

from sdekit.core.checks import check_count
from sdekit.core.errors import UserError
from sdekit.core.noise import logsnr
from sdekit.solvers.loop import sample

__all__ = ["optimal_grids", "teacher_costs", "cheapest_path"]


def cheapest_path(cost: np.ndarray, steps: int) -> list[int]:
    """The indices 0 = k_0 < k_1 < ... < k_steps = M - 1 of the path through the cost matrix [M, M]
    (cost[i, j]: one step from level i to level j > i) with ``steps`` edges and the least total cost.
    UserError when there are fewer than steps + 1 levels."""
    m = cost.shape[0]
    if steps < 1 or steps > m - 1:
        raise UserError(f"a path of {steps} steps needs between 2 and {m} levels, got {m}")
    best = np.full((steps + 1, m), np.inf)
    arg = np.zeros((steps + 1, m), dtype=int)
    best[0, 0] = 0.0
    for n in range(1, steps + 1):
        for j in range(1, m):
            c = best[n - 1, :j] + cost[:j, j]
            arg[n, j] = int(np.argmin(c))
            best[n, j] = c[arg[n, j]]
    path = [m - 1]
    for n in range(steps, 0, -1):
        path.append(int(arg[n, path[-1]]))
    return path[::-1]


def teacher_costs(sde, score_fn, shape, teacher_steps: int = 100, sigma_min: float | None = None,
                  generator: torch.Generator | None = None, batch_size: int = 64, device=None):
    """(levels [M + 1] descending, the last 0; cost [M + 1, M + 1]) from ``shape[0]`` teacher trajectories
    of the probability-flow ODE (module docstring): sdekit's ``dpm_solver`` on the teacher levels, read by a
    step hook. ``sigma_min``: the teacher's smallest nonzero level (default sigma(eps)); ``batch_size``:
    trajectories walked at once."""
    m = check_count(teacher_steps, "teacher_steps", minimum=2)
    hi = float(sde.sigma(torch.tensor(sde.T, dtype=torch.float64)))
    lo = float(sde.sigma(torch.tensor(sde.eps, dtype=torch.float64))) if sigma_min is None else float(sigma_min)
    if not 0 < lo < hi:
        raise UserError(f"the teacher needs 0 < sigma_min < sigma(T) = {hi:.4g}, got {lo}")
    levels = logsnr(hi, lo, m, 7.0, torch.float64).tolist() + [0.0]
    z = torch.randn(shape, generator=generator)
    cost = np.zeros((m + 1, m + 1))
    for part in z.split(batch_size):
        ys, ds = _teacher(sde, score_fn, part.to(device) * hi, levels)
        for i in range(m):
            for j in range(i + 1, m + 1):
                y_hat = ds[i] + (levels[j] / levels[i]) * (ys[i] - ds[i])
                cost[i, j] += float((y_hat - ys[j]).pow(2).flatten(1).sum(1).sum())
    cost /= z.shape[0]
    cost[np.tril_indices(m + 1)] = np.inf
    return levels, cost


def _teacher(sde, score_fn, y, levels):
    """DPM-Solver++(2M) in y = x / s from y at levels[0] over ``levels`` (the last 0): the states [M + 1] and
    the denoised estimates [M], collected by a step hook of :func:`sdekit.solvers.loop.sample`."""
    scales = sde.scale(sde.sigma_inv(torch.tensor(levels[:-1], dtype=torch.float64))).tolist() + [1.0]
    ys, ds = [y], []

    def record(st):
        ys.append(st.x / scales[st.i + 1])
        ds.append(st.denoised)
    with torch.no_grad():
        sample(sde, score_fn, x_T=y * scales[0], sampler="dpm_solver", sigmas=levels, callback=record)
    return ys, ds


def optimal_grids(sde, score_fn, shape, steps=(3, 4, 5, 6, 8, 10), teacher_steps: int = 100,
                  sigma_min: float | None = None, seed: int = 0, batch_size: int = 64, device=None) -> dict:
    """{N: noise levels [N + 1], descending from sigma(T) to 0} for each N in ``steps``: the GITS grids of
    the model (``score_fn`` under ``sde``; module docstring), fitted on ``shape[0]`` trajectories from seed
    ``seed`` (Chen et al. use 256). Pass one to any fast solver as ``sigmas=``. Costs teacher_steps x
    shape[0] evaluations. UserError for a step count the teacher's levels cannot hold."""
    ns = [check_count(n, "steps") for n in ((steps,) if isinstance(steps, int) else steps)]
    levels, cost = teacher_costs(sde, score_fn, shape, teacher_steps, sigma_min,
                                 torch.Generator().manual_seed(int(seed)), batch_size, device)
    return {n: [levels[k] for k in cheapest_path(cost, n)] for n in ns}

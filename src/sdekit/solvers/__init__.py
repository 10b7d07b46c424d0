"""Solvers: one class per sampler (sdekit.solvers.solver.Solver), each registered with its grid, evaluations
per step and options, and the loop that runs them with its step hook. Imports only :mod:`sdekit.core`.

Importing the package fills the registry (sdekit.solvers.registry): the modules that define solvers are
imported here, and nowhere else has an import side effect."""
import sdekit.solvers.samplers  # noqa: F401  (registers the samplers)

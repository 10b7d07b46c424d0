"""Solvers: one class per sampler, each registered with its grid, evaluations per step and options, and the
loop that runs them with its step hook. Imports only :mod:`sdekit.core`."""

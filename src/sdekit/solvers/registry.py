"""The one registry of samplers: a :class:`~sdekit.solvers.solver.Solver` class per sampler with everything
the rest of sdekit needs to know.

The library's validation, the CLI's choices, defaults and help, the web page's choices and progress
estimate and the README's table all read these classes; no sampler name or trait is written
anywhere else. Look one up with :func:`get_sampler` (aliases accepted, unknown names refused). The
classes register themselves (``@register``) when the package ``sdekit.solvers`` is imported.
"""
from __future__ import annotations

from sdekit.core.errors import UserError
from sdekit.solvers.solver import ALIASES, REGISTRY, Option, Solver, register, unregister

__all__ = ["Option", "Solver", "REGISTRY", "SAMPLERS", "ALIASES", "get_sampler", "check_options", "register",
           "unregister", "markdown_table"]


def __getattr__(name):
    if name == "SAMPLERS":       # the registered names, in registration order (read when asked)
        return tuple(REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_sampler(name) -> type[Solver]:
    """The class of sampler ``name`` (case-insensitive; aliases accepted). UserError if unknown."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[key]


def check_options(spec: type[Solver], options: dict) -> dict:
    """``options`` checked against the record; returns them with defaults filled in. UserError on an
    unknown option, a bad value, or a change of a value the record fixes."""
    for k, v in options.items():
        if k in spec.fixed:
            if v != spec.fixed[k]:
                raise UserError(f"sampler {spec.name!r} fixes {k}={spec.fixed[k]!r}; use sampler 'pc' to choose it")
            continue
        if k not in spec.options:
            allowed = ", ".join(sorted(spec.options)) or "none"
            raise UserError(f"sampler {spec.name!r} takes no option {k!r}; it takes {allowed}")
        err = spec.options[k].check(v)
        if err:
            raise UserError(f"sampler {spec.name!r}: {k} must be {err}, got {v!r}")
    return {**spec.defaults(), **options, **spec.fixed}


def markdown_table() -> str:
    """The README's table of samplers, written from the classes (tests check that the README holds it)."""
    rows = ["| sampler | what | default steps N | evaluations for N steps | options |", "|---|---|---|---|---|"]
    for s in REGISTRY.values():
        names = ", ".join(f"`{n}`" for n in (s.name, *s.aliases))
        evals = "adaptive" if s.adaptive else str(s.evaluations(s.default_steps))
        opts = ", ".join(f"`{k}`" for k in s.options) or "-"
        rows.append(f"| {names} | {s.summary} | {'-' if s.adaptive else s.default_steps} | {evals} | {opts} |")
    return "\n".join(rows)

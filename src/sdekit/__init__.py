"""sdekit: score-based generative modeling through SDEs, and SDEdit.

The layers, each importing only the ones above it in this list (docs/architecture.md is the map):
:mod:`sdekit.core` (SDEs, noise levels, denoisers, mixtures, errors), :mod:`sdekit.data`,
:mod:`sdekit.solvers`, :mod:`sdekit.models`, :mod:`sdekit.tasks`, :mod:`sdekit.apps`.
"""
from sdekit.core.sde import SDE, VESDE, VPSDE, SubVPSDE, EDMSDE, FlowSDE, DiscreteVPSDE, ReverseSDE, get_sde
from sdekit.core.gmm import GaussianMixture
from sdekit.core.denoisers import Denoiser
from sdekit.core.errors import UserError
from sdekit.solvers.loop import sample
from sdekit.solvers.registry import SAMPLERS, get_sampler
from sdekit.solvers.gits import optimal_grids
from sdekit.tasks.likelihood import likelihood, encode, decode, interpolate
from sdekit.tasks.sdedit import sdedit, composite, simulate_strokes, edit_condition

__version__ = "0.1.0"

# Heavier parts load on first use: name -> module that defines it.
_LAZY = {
    "load": "sdekit.models.loaders", "Model": "sdekit.models.bundle", "wrap": "sdekit.models.pretrained",
    "inpaint": "sdekit.tasks.guidance", "colorize": "sdekit.tasks.guidance",
    "classifier_guided_score": "sdekit.tasks.guidance", "classifier_free_score": "sdekit.tasks.guidance",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdekit' has no attribute {name!r}")

"""sdekit: score-based generative modeling through SDEs, and SDEdit."""
from .sde import SDE, VESDE, VPSDE, SubVPSDE, EDMSDE, ReverseSDE, get_sde
from .gmm import GaussianMixture
from .samplers import sample, SAMPLERS
from .errors import UserError

__version__ = "0.1.0"

# Heavier parts load on first use: name -> module that defines it.
_LAZY = {
    "load": "bundle", "Model": "bundle",
    "likelihood": "likelihood", "encode": "likelihood", "decode": "likelihood",
    "interpolate": "likelihood",
    "inpaint": "guidance", "colorize": "guidance", "classifier_guided_score": "guidance",
    "classifier_free_score": "guidance",
    "sdedit": "sdedit", "composite": "sdedit", "simulate_strokes": "sdedit",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sdekit' has no attribute {name!r}")

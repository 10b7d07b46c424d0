"""sdekit: score-based generative modeling through SDEs, and SDEdit."""
from .sde import SDE, VESDE, VPSDE, SubVPSDE, EDMSDE, FlowSDE, DiscreteVPSDE, ReverseSDE, get_sde
from .gmm import GaussianMixture
from .sampling import sample
from .registry import SAMPLERS, get_sampler
from .denoisers import Denoiser
from .errors import UserError
# Functions named like their modules are bound eagerly: importing a submodule sets the package
# attribute of the same name, which would otherwise hide the function.
from .likelihood import likelihood, encode, decode, interpolate
from .sdedit import sdedit, composite, simulate_strokes, edit_condition

__version__ = "0.1.0"

# Heavier parts load on first use: name -> module that defines it.
_LAZY = {
    "load": "bundle", "Model": "bundle", "wrap": "pretrained",
    "inpaint": "guidance", "colorize": "guidance", "classifier_guided_score": "guidance",
    "classifier_free_score": "guidance",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sdekit' has no attribute {name!r}")

"""sdekit: score-based generative modeling through SDEs, and SDEdit."""
from .sde import SDE, VESDE, VPSDE, SubVPSDE, EDMSDE, ReverseSDE, get_sde

__version__ = "0.1.0"
from .gmm import GaussianMixture
from .samplers import sample, SAMPLERS

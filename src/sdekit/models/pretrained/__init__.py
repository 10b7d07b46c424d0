"""Pretrained and foreign models: diffusers folders, converted original checkpoints, any wrapped network.

All of them become the same :class:`~sdekit.models.model.Model` that :func:`sdekit.load` returns:
:func:`wrap` (any torch network and its parametrisation), :func:`find_diffusers` /
:func:`load_diffusers` (diffusers UNet2DModel folders), and :mod:`sdekit.models.pretrained.convert`
(SDEdit's and score_sde's original checkpoints into such folders). The way back out:
:func:`sdekit.models.pretrained.export.to_diffusers` (a model whose network is a UNet2DModel, as a diffusers folder).
"""
from sdekit.models.pretrained.folder import DiffusersFolder, find_diffusers, load_diffusers
from sdekit.models.pretrained.wrap import wrap

__all__ = ["wrap", "find_diffusers", "load_diffusers", "DiffusersFolder"]

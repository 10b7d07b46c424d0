"""The loader registry: every model format :func:`sdekit.load` reads, asked in turn.

A format is one class: a :class:`Format` with ``probe(path) -> bool`` (does ``path`` look like this
format? cheap, and without loading anything) and ``load(path, device, dtype, **options) -> Model``.
:func:`load` asks the formats of :data:`FORMATS` in order and loads with the first whose probe says yes;
when none does, it gives one UserError listing the formats it knows. The list is explicit (no format
registers itself by being imported); :func:`register` adds one, e.g. from a user's code or a test.

The formats sdekit ships, in the order they are asked:

1. :class:`DiffusersFormat`: a diffusers UNet2DModel folder with its scheduler config (a DDPM/DDIM-style,
   ScoreSdeVe, flow-matching or consistency scheduler), a pipeline folder, or a hub name the local
   Hugging Face cache holds; the original SDEdit and score_sde checkpoints load through it once
   ``sdekit convert`` has written them as such a folder;
2. :class:`BundledFormat`: a shipped model by name (None or "default": the default model);
3. :class:`BundleFormat`: an sdekit bundle folder (config.json + model.safetensors), its config.json or
   weights file, or a training run's folder (its ``model/``).
"""
from __future__ import annotations

from pathlib import Path

from sdekit.core.errors import UserError
from sdekit.core.persist import CONFIG, folder_of
from sdekit.core.placement import placement
from sdekit.models.bundle import BUNDLED_MODELS, bundled_name, load_bundle
from sdekit.models.model import Model
from sdekit.models.pretrained.folder import OptionError, find_diffusers, load_diffusers

__all__ = ["Format", "DiffusersFormat", "BundledFormat", "BundleFormat", "FORMATS", "register", "unregister", "load"]


class Format:
    """One model format. ``name``: what it is, as the list of known formats says; ``what``: the model in
    an option's refusal ("an sdekit bundle"); ``options``: the loading options of :func:`load` it takes
    (None: any, checked by its own :meth:`load`); a given option it does not take is an OptionError."""
    name: str = "a model format"
    what: str = "this model"
    options: tuple[str, ...] | None = ()

    def probe(self, path) -> bool:
        """Whether ``path`` (None, a str or a Path) is of this format; may raise UserError where the path
        can only be meant as this format but is unusable."""
        raise NotImplementedError

    def load(self, path, device=None, dtype=None, **options) -> Model:
        """The model at ``path``, on ``device`` in ``dtype`` (checked); UserError for a defect."""
        raise NotImplementedError


class DiffusersFormat(Format):
    name = "a diffusers UNet2DModel folder with its scheduler config (also what sdekit convert writes from " \
           "an original SDEdit or score_sde checkpoint), or a hub name in the local Hugging Face cache"
    what = "a diffusers folder"
    options = None                         # load_diffusers checks its own (sigma_min, sigma_max, prediction_type)

    def probe(self, path) -> bool:
        return find_diffusers(path) is not None

    def load(self, path, device=None, dtype=None, **options) -> Model:
        return load_diffusers(find_diffusers(path), device=device, dtype=dtype, **options)


class BundledFormat(Format):
    name = f"a shipped model's name ({', '.join(BUNDLED_MODELS)}; none or 'default': the default model)"
    what = "an sdekit bundle"

    def probe(self, path) -> bool:
        return bundled_name(path)

    def load(self, path, device=None, dtype=None, **options) -> Model:
        return load_bundle(path, device, dtype)


class BundleFormat(Format):
    name = "an sdekit bundle folder (config.json + model.safetensors), its config.json, or a training run's folder"
    what = "an sdekit bundle"

    def probe(self, path) -> bool:
        return path is not None and (folder_of(path, Path(str(path))) / CONFIG).is_file()

    def load(self, path, device=None, dtype=None, **options) -> Model:
        return load_bundle(path, device, dtype)


FORMATS: list[Format] = [DiffusersFormat(), BundledFormat(), BundleFormat()]


def register(fmt: Format, first: bool = False) -> Format:
    """Add ``fmt`` to the formats :func:`load` asks: last (default), or ``first`` (before the shipped ones,
    e.g. to read a path they would claim). Returns it (for :func:`unregister`)."""
    if not isinstance(fmt, Format):
        raise TypeError(f"a loader format is a sdekit.models.loaders.Format, got {type(fmt).__name__}")
    FORMATS.insert(0, fmt) if first else FORMATS.append(fmt)
    return fmt


def unregister(fmt: Format) -> None:
    """Remove a format :func:`register` added."""
    FORMATS.remove(fmt)


def load(path=None, device=None, dtype=None, **options) -> Model:
    """The model at ``path`` in the first format of :data:`FORMATS` whose probe takes it (arguments as
    :func:`sdekit.load`). UserError for a bad device or dtype (before anything is read), an option the
    format does not take (:class:`~sdekit.models.pretrained.folder.OptionError`), a defect of the model, or a
    path no format takes (naming the formats sdekit knows)."""
    device, dtype = placement(device, dtype)
    for fmt in FORMATS:
        if fmt.probe(path):
            unknown = sorted(set(options) - set(fmt.options)) if fmt.options is not None else []
            if unknown:
                raise OptionError(unknown[0], fmt.what)
            return fmt.load(path, device, dtype, **options)
    known = "; ".join(f.name for f in FORMATS)
    raise UserError(f"{path}: not a model bundle (no {CONFIG}) nor any other model format sdekit loads; "
                    f"it reads {known}")

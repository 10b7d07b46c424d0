"""The loader registry (sdekit.models.loaders): sdekit.load asks each format in turn; a new format is one class."""
import json

import pytest
import torch

import sdekit
from sdekit.core.errors import UserError
from sdekit.models import loaders
from sdekit.models.bundle import random_model, save_bundle


class TinyFormat(loaders.Format):
    """A made-up format: a .tiny file whose JSON names the data shape; loads a random model of it."""
    name = "a .tiny file (a test's format)"
    what = "a tiny file"
    options = ("seed",)

    def probe(self, path) -> bool:
        return path is not None and str(path).endswith(".tiny")

    def load(self, path, device=None, dtype=None, seed: int = 0, **options):
        shape = tuple(json.loads(open(path).read())["shape"])
        m = random_model(shape=shape, seed=seed)
        m.name = "tiny"
        return m.to(device, dtype) if device is not None or dtype is not None else m


@pytest.fixture
def tiny():
    fmt = loaders.register(TinyFormat())
    yield fmt
    loaders.unregister(fmt)


def test_a_registered_format_loads_through_sdekit_load(tiny, tmp_path):
    f = tmp_path / "m.tiny"
    f.write_text(json.dumps({"shape": [1, 8, 8]}))
    a, b = sdekit.load(f, seed=3), sdekit.load(str(f), seed=3)
    assert a.name == "tiny" and a.shape == (1, 8, 8)
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    torch.testing.assert_close(a.score_fn(x, t), b.score_fn(x, t))                 # the same seed, the same net
    assert not torch.allclose(a.score_fn(x, t), sdekit.load(f, seed=4).score_fn(x, t))
    with pytest.raises(UserError, match="'sigma_max' applies to .* not to a tiny file"):
        sdekit.load(f, sigma_max=10.0)


def test_the_shipped_formats_come_first_and_a_bundle_still_loads(tiny, tmp_path):
    folder = save_bundle(tmp_path / "b", random_model().net, shape=(1, 16, 16))
    assert sdekit.load(folder).shape == (1, 16, 16)
    assert [type(f).__name__ for f in loaders.FORMATS] == ["DiffusersFormat", "BundledFormat", "BundleFormat",
                                                           "TinyFormat"]
    with pytest.raises(UserError, match="'sigma_max' applies to .* not to an sdekit bundle"):
        sdekit.load(folder, sigma_max=10.0)


def test_an_unknown_path_lists_the_known_formats(tiny, tmp_path):
    with pytest.raises(UserError) as e:
        sdekit.load(tmp_path / "nothing.here")
    msg = str(e.value)
    assert "not a model bundle" in msg and "\n" not in msg
    for fmt in loaders.FORMATS:
        assert fmt.name in msg

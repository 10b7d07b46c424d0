"""The page's strength layer: a t0 per pixel, painted in colour, read back as a t0 map."""
import base64
import io

import pytest
import torch
from PIL import Image

from sdekit.models.bundle import random_model
from sdekit.core.errors import UserError
from sdekit.apps.web import server as web
from sdekit.apps.web.uploads import STRENGTH_GREEN


@pytest.fixture(scope="module")
def model():
    return random_model(shape=(1, 16, 16), sde="vp")


def data_url(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colour(a: float, alpha: int = 255):
    """The page's strength colour for t0 = a (app.js strengthColour)."""
    r = round(255 * a)
    return (r, STRENGTH_GREEN, 255 - r, alpha)


def layer(*regions, size=384):
    """A transparent strength layer, zoom 24 on a 16x16 model, with (columns of 16, t0, alpha) painted."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    z = size // 16
    for (c0, c1), a, alpha in regions:
        im.paste(Image.new("RGBA", ((c1 - c0) * z, size), colour(a, alpha)), (c0 * z, 0))
    return im


def test_painted_amounts_come_back_and_the_rest_is_the_slider():
    im = layer(((0, 4), 0.0, 255), ((4, 8), 0.25, 255), ((8, 10), 0.8, 160))     # a soft (translucent) stroke too
    m = web.strength_map(base64.b64decode(data_url(im).split(",")[1]), (1, 16, 16), t0=0.6)
    assert m.shape == (1, 1, 16, 16)
    assert (m[..., :4] == 0).all()
    assert torch.allclose(m[..., 4:8], torch.full_like(m[..., 4:8], round(255 * 0.25) / 255), atol=2e-3)
    assert torch.allclose(m[..., 8:10], torch.full_like(m[..., 8:10], round(255 * 0.8) / 255), atol=2e-3)
    assert (m[..., 10:] == 0.6).all()
    blank = Image.new("RGBA", (384, 384), (0, 0, 0, 0))
    assert web.strength_map(base64.b64decode(data_url(blank).split(",")[1]), (1, 16, 16), t0=0.6) is None


def test_parse_task_reads_the_strength_layer(model):
    guide = Image.new("RGBA", (384, 384), (0, 0, 0, 255))
    t = web.parse_task(model, {"kind": "edit", "t0": 0.3, "image": data_url(guide), "sampler": "reverse_diffusion",
                               "t0_map": data_url(layer(((0, 8), 0.0, 255), ((8, 12), 0.9, 255)))})
    assert (t.t0_map[..., :8] == 0).all() and (t.t0_map[..., 12:] == 0.3).all()
    from sdekit.tasks.sdedit import sdedit_steps
    assert t.steps == sdedit_steps("reverse_diffusion", float(t.t0_map.max()))      # from the largest t0
    with pytest.raises(UserError, match="nothing to edit"):
        web.parse_task(model, {"kind": "edit", "t0": 0.3, "image": data_url(guide),
                               "t0_map": data_url(layer(((0, 16), 0.0, 255)))})


def test_an_edit_keeps_what_the_strength_layer_keeps(model):
    u = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t0_map = torch.full((1, 1, 16, 16), 0.5)
    t0_map[..., :6] = 0
    task = web.Task(kind="edit", n=2, steps=4, sampler="reverse_diffusion", seed=3, t0_frac=0.5, image=u, t0_map=t0_map)
    out = web.run_task(model, task)
    kept = model.to_unit(model.from_unit(u))
    assert torch.allclose(out["results"][..., :6], kept[..., :6].expand(2, 1, 16, 6), atol=1e-6)
    assert (out["results"][..., 6:] - kept[..., 6:]).abs().mean() > 0.02
    assert out["t0_map"] is t0_map

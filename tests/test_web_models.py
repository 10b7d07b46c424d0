"""The page server with several models (each under /m/<name>/, the first also at /), the look each model's
page follows (background, polarity, palette, class names) and the class an edit read."""
import json
import threading
import time

import pytest
import torch
from PIL import Image

import sdekit
from sdekit.models import bundle
from sdekit.models.bundle import random_model, save_bundle
from sdekit.data.datasets import EMOJI_BACKGROUND, EMOJI_CATEGORIES, background, class_names, data_kind
from sdekit.core.errors import UserError
from sdekit.apps.web import server as web
from sdekit.apps.web.app import App, css_colour, polarity, slug

from test_web import call, data_url, post_json, wait_done


def emoji_bundle(folder, **config):
    """A random 32x32 RGB model of 9 classes saved as the emoji bundle will be: "data": "emoji"."""
    m = random_model((3, 32, 32), num_classes=9, ch=4)
    return save_bundle(folder, m.net, shape=m.shape, name="emoji", data="emoji", extra=config or None)


@pytest.fixture(scope="module")
def emoji(tmp_path_factory):
    return sdekit.load(emoji_bundle(tmp_path_factory.mktemp("emoji") / "emoji"))


@pytest.fixture(scope="module")
def grey():
    m = random_model((1, 16, 16), ch=4)
    m.name = "grey"
    return m


# ---- the look: one rule for the library and the page -------------------------------------------------

def test_the_background_comes_from_the_bundle_else_its_data_else_its_channels():
    assert background({"shape": [3, 32, 32], "data": "emoji"}) == EMOJI_BACKGROUND == (1.0, 1.0, 1.0)
    assert background({"shape": [3, 32, 32], "data": "emoji:/some/where"}) == (1.0, 1.0, 1.0)
    assert background({"shape": [1, 28, 28], "data": "mnist"}) == (0.0,)          # light strokes on black
    assert background({"shape": [1, 16, 16], "data": None}) == (0.0,)
    assert background({"shape": [3, 64, 64], "data": "cifar10:/x"}) == (0.5, 0.5, 0.5)   # natural: mid grey
    assert background({"shape": [3, 32, 32], "data": "emoji", "background": [0.2, 0.4, 0.6]}) == (0.2, 0.4, 0.6)
    assert background({"shape": [3, 8, 8], "background": [1]}) == (1.0, 1.0, 1.0)
    with pytest.raises(UserError, match="3 values for a 1-channel model"):
        background({"shape": [1, 8, 8], "background": [1, 1, 1]})
    assert data_kind("Emoji:/d") == "emoji" and data_kind(None) == ""


def test_emoji_pixels_are_composited_over_the_background_the_page_starts_with(tmp_path):
    """A fully transparent emoji becomes exactly the colour the emoji model's canvas starts with."""
    from sdekit.data.datasets import _emoji_pixels
    Image.new("RGBA", (64, 64), (200, 10, 10, 0)).save(tmp_path / "clear.png")
    px = _emoji_pixels(tmp_path / "clear.png", 32)
    cfg = {"shape": [3, 32, 32], "data": "emoji"}
    assert px.shape == (3, 32, 32)
    assert torch.equal(torch.from_numpy(px), torch.tensor(background(cfg))[:, None, None].expand(3, 32, 32))


def test_a_bundles_background_is_checked_when_it_loads(tmp_path):
    m = random_model((1, 8, 8), ch=4)
    save_bundle(tmp_path / "bad", m.net, shape=m.shape, extra={"background": [1.5]})
    with pytest.raises(UserError, match="background must be a list of 1 or 3 numbers in"):
        sdekit.load(tmp_path / "bad")
    save_bundle(tmp_path / "white", m.net, shape=m.shape, extra={"background": [1.0]})
    white = sdekit.load(tmp_path / "white")
    assert background(white.config) == (1.0,) and polarity(white) == "on-white"


def test_a_jobs_transparent_image_lies_on_the_models_background(emoji):
    """An RGBA image sent to /api/jobs (the canvas, or any size) is composited over the model's background, as
    an upload is: white for the emoji model, at zoom 1 and at the page's zoom."""
    from test_web import png
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    im.paste(Image.new("RGBA", (8, 8), (255, 0, 0, 255)), (0, 0))
    for picture in (im, im.resize((256, 256), Image.NEAREST)):
        task = web.parse_task(emoji, {"kind": "edit", "image": data_url(picture), "t0": 0.5})
        unit = task.image[0]
        assert torch.equal(unit[:, 20, 20], torch.ones(3)), "transparent pixels must be the white background"
        assert torch.equal(unit[:, 2, 2], torch.tensor([1.0, 0, 0]))


def test_transparency_is_composited_over_the_models_background(tmp_path, emoji):
    """Uploads, and the guides of sdekit edit, of a picture with transparency: colour a + background (1 - a)."""
    from sdekit.data.images import load_image
    from sdekit.apps.web.uploads import load_upload
    from test_web import png
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))                           # clear, then half-clear red, then red
    im.paste(Image.new("RGBA", (32, 8), (255, 0, 0, 128)), (0, 8))
    im.paste(Image.new("RGBA", (32, 8), (255, 0, 0, 255)), (0, 16))
    a = 128 / 255
    white = load_upload(png(im), (3, 32, 32), background=background(emoji.config)).pixels[0]
    assert torch.equal(white[:, 2], torch.ones(3, 32))
    torch.testing.assert_close(white[:, 10, 5], torch.tensor([1.0, 1 - a, 1 - a]), atol=0.5 / 255, rtol=0)
    assert torch.equal(white[:, 20, 5], torch.tensor([1.0, 0, 0]))
    black = load_image(png(im), (3, 32, 32)).pixels[0]                        # no background: black, as before
    assert torch.equal(black[:, 2], torch.zeros(3, 32))
    torch.testing.assert_close(black[:, 10, 5], torch.tensor([a, 0, 0]), atol=0.5 / 255, rtol=0)
    grey = load_image(png(im.convert("LA")), (1, 32, 32), background=(1.0, 1.0, 1.0)).pixels[0, 0]
    luma = Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0)) / 255     # Pillow's grey of red
    torch.testing.assert_close(grey[10, 5], torch.tensor(luma * a + 1 - a), atol=0.6 / 255, rtol=0)
    assert grey[2, 5] == 1.0
    app = App(emoji)                                                         # the page's uploads use the model's
    try:
        url = app._converted(png(im))["image"]
    finally:
        app.close()
    page = load_image(__import__("base64").b64decode(url.split(",", 1)[1]), (3, 32, 32)).pixels[0]
    assert torch.equal(page[:, 2], torch.ones(3, 32))


def test_class_names_by_data():
    assert class_names({"data": "emoji", "num_classes": 9}) == EMOJI_CATEGORIES
    assert class_names({"data": "emoji:/d", "num_classes": 4}) is None     # not the data's classes
    assert class_names({"data": "mnist", "num_classes": 10}) is None       # class k is the digit k


def test_the_page_follows_the_model(emoji, grey):
    assert css_colour((1.0, 1.0, 1.0)) == "#ffffff" and css_colour((0.5,)) == "#808080"
    assert css_colour((0.2, 0.4, 0.6)) == "#336699"
    for m, look, bg, names in [(emoji, "on-white", "#ffffff", list(EMOJI_CATEGORIES)),
                               (grey, "light-on-dark", "#000000", None)]:
        app = App(m)
        try:
            info = app.info()
        finally:
            app.close()
        assert (info["polarity"], info["background"], info["class_names"]) == (look, bg, names)
    assert info["models"] == []                                              # one model: no menu


# ---- the class an edit read -----------------------------------------------------------------------------

class MeanReader(torch.nn.Module):
    """An exact toy p_t(y | x_t) of 3 classes: class k is 'the image's mean is near centre[k]'."""

    def __init__(self, sde, centres=(-0.6, 0.0, 0.6), shape=(1, 8, 8)):
        super().__init__()
        self.sde, self.num_classes, self.shape = sde, len(centres), shape
        self.centres = torch.tensor(centres)

    def forward(self, x, t):
        m = (x / self.sde.scale(t)[:, None, None, None]).mean((1, 2, 3))
        var = self.sde.sigma(t) ** 2 / x[0].numel() + 0.01
        return -(m[:, None] - self.centres[None]) ** 2 / (2 * var[:, None])


def test_an_edit_reports_the_class_it_read_as_the_cli_prints_it():
    from sdekit.tasks.sdedit import describe_condition
    m = random_model((1, 8, 8), num_classes=3, ch=4)
    m.classifier = MeanReader(m.sde)
    canvas = data_url(Image.new("L", (8, 8), 204))                           # pixels 0.8: model space 0.6, class 2
    task = web.parse_task(m, {"kind": "edit", "label": "auto", "t0": 0.2, "steps": 2, "n": 1, "image": canvas})
    out = web.run_task(m, task)
    assert out["condition"] == {"label": 2, "name": None, "read": True, "guidance": 0.0, "text": "class 2 (read)"}
    fixed = web.run_task(m, web.parse_task(m, {"kind": "edit", "label": 0, "t0": 0.2, "steps": 2, "n": 1, "image": canvas}))
    assert fixed["condition"]["text"] == "class 0" and not fixed["condition"]["read"]
    plain = web.run_task(m, web.parse_task(m, {"kind": "edit", "label": -1, "t0": 0.2, "steps": 2, "n": 1, "image": canvas}))
    assert plain["condition"] is None
    assert describe_condition(torch.tensor([3]), "auto", 2.0, EMOJI_CATEGORIES) == "class 3 Food & Drink (read) guidance 2"
    queue = web.JobQueue(m)
    try:
        job = queue.submit(task)
        t = time.monotonic()
        while job.status != "done" and time.monotonic() - t < 60:
            time.sleep(0.02)
        assert job.status == "done" and job.message.endswith("; class 2 (read)") and job.condition["label"] == 2
    finally:
        queue.close()


# ---- several models behind one server ----------------------------------------------------------------------

@pytest.fixture
def site(grey, emoji):
    srv = web.make_server([grey, emoji], "127.0.0.1", 0, web.Limits(waiting=2))
    web.start_in_thread(srv)
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    web.stop(srv)


def info_at(base, path):
    s, _, b = call(base + path)
    assert s == 200, (path, s, b)
    return json.loads(b)


def test_each_model_has_its_own_page_and_api_under_its_name(site):
    srv, base = site
    assert isinstance(srv.app, web.Site) and [a.model.name for a in srv.app.apps] == ["grey", "emoji"]
    root, g, e = info_at(base, "/api/info"), info_at(base, "/m/grey/api/info"), info_at(base, "/m/emoji/api/info")
    assert root["name"] == g["name"] == "grey" and g["shape"] == [1, 16, 16]
    assert e["name"] == "emoji" and e["shape"] == [3, 32, 32] and e["background"] == "#ffffff"
    assert e["class_names"] == list(EMOJI_CATEGORIES) and e["polarity"] == "on-white"
    # the menu: every model, its link relative to the page that asked, the page's own marked
    assert [(m["name"], m["href"], m["current"]) for m in root["models"]] == [("grey", "m/grey/", True),
                                                                              ("emoji", "m/emoji/", False)]
    assert [(m["href"], m["current"]) for m in e["models"]] == [("../../m/grey/", False), ("../../m/emoji/", True)]
    assert e["models"][1]["shape"] == [3, 32, 32]
    for prefix in ("", "/m/grey", "/m/emoji"):
        s, h, b = call(f"{base}{prefix}/")
        assert s == 200 and b'src="static/app.js"' in b and "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert call(f"{base}{prefix}/static/app.js")[0] == 200
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(base + "/m/emoji", timeout=10)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as err:
        assert err.code == 308 and err.headers["Location"] == "emoji/"
    assert call(base + "/m/nowhere/api/info")[0] == 404


def test_a_job_on_each_model_runs_in_its_own_queue(site):
    srv, base = site
    ids = {}
    for name in ("grey", "emoji"):
        s, st = post_json(f"{base}/m/{name}/api/jobs", {"kind": "sample", "n": 2, "steps": 2, "sampler": "em", "seed": 1})
        assert s == 202, st
        ids[name] = st["id"]
    for name, channels in (("grey", "L"), ("emoji", "RGB")):
        st = wait_done(f"{base}/m/{name}", ids[name])
        assert st["status"] == "done" and len(st["results"]) == 2
        assert all(u.startswith(f"/m/{name}/api/jobs/{ids[name]}/") for u in st["results"])
        s, _, png = call(base + st["results"][0])
        im = Image.open(__import__("io").BytesIO(png))
        assert s == 200 and im.mode == channels and im.size == ((16, 16) if name == "grey" else (32, 32))
    assert call(f"{base}/m/grey/api/jobs/{ids['emoji']}")[0] == 404          # another model's job
    assert call(f"{base}/api/jobs/{ids['grey']}")[0] == 200                   # / is the first model
    assert srv.app.apps[1].queue.get(ids["emoji"]) is not None and srv.app.apps[0].queue.get(ids["emoji"]) is None
    s, st = post_json(f"{base}/m/emoji/api/jobs/{ids['emoji']}/cancel", {})
    assert s == 200 and st["status"] == "done"


def test_a_mounted_api_refuses_other_sites(site):
    _, base = site
    s, _, b = call(base + "/m/emoji/api/info", headers={"Sec-Fetch-Site": "cross-site"})
    assert s == 403 and "cross-site" in json.loads(b)["error"]
    s, _, _ = call(base + "/m/emoji/api/info", headers={"Origin": "http://evil.example"})
    assert s == 403
    s, _, b = call(base + "/m/emoji/api/jobs", b"{}", "POST", {"Content-Type": "text/plain"})
    assert s == 415


def test_names_become_distinct_path_segments():
    assert slug("emoji") == "emoji" and slug("runs/my model!") == "runs-my-model"
    assert slug("random", ["random"]) == "random-2" and slug("random", ["random", "random-2"]) == "random-3"
    assert slug("///") == "model"


def test_one_model_in_a_list_is_served_alone_at_the_root(grey):
    app = web.make_app([grey])
    try:
        assert isinstance(app, App) and app.info()["models"] == []
    finally:
        app.close()


def test_installed_bundles_default_first(tmp_path, monkeypatch):
    folders = {n: tmp_path / n for n in ("mnist", "digits", "emoji", "mnist-cd")}
    monkeypatch.setattr(bundle, "BUNDLED_MODELS", folders)
    assert bundle.installed() == []
    for n in ("digits", "emoji"):
        (folders[n]).mkdir()
        (folders[n] / "config.json").write_text("{}")
    assert bundle.installed() == ["digits", "emoji"]                     # no MNIST: digits is the default
    (folders["mnist-cd"]).mkdir()
    (folders["mnist-cd"] / "config.json").write_text("{}")
    (folders["mnist"]).mkdir()
    (folders["mnist"] / "config.json").write_text("{}")
    assert bundle.installed() == ["mnist", "digits", "emoji", "mnist-cd"]


def test_serve_without_a_model_serves_every_installed_bundle(tmp_path, monkeypatch, capsys, grey):
    from sdekit.apps.cli import main
    folders = {"mnist": tmp_path / "mnist", "digits": tmp_path / "digits", "emoji": tmp_path / "emoji",
               "mnist-cd": tmp_path / "mnist-cd"}
    save_bundle(folders["mnist"], grey.net, shape=grey.shape, name="mnist", data="mnist")
    emoji_bundle(folders["emoji"])
    monkeypatch.setattr(bundle, "BUNDLED_MODELS", folders)
    served = {}

    def serve_once(self):                                  # record what would be served, then return as on Ctrl-C
        served["app"] = self.app
        served["info"] = [a.info() for a in self.app.apps]
    monkeypatch.setattr(web.Server, "serve_forever", serve_once)
    assert main(["serve", "--port", "0", "--threads", "1"]) in (0, None)
    out = capsys.readouterr().out
    assert "mnist (1, 16, 16), emoji (3, 32, 32) on http://127.0.0.1:" in out and "each at /m/<name>/" in out
    assert [i["name"] for i in served["info"]] == ["mnist", "emoji"]
    assert served["info"][1]["background"] == "#ffffff" and served["info"][0]["background"] == "#000000"
    # --model several times: names and folders, in the order given
    assert main(["serve", "--port", "0", "--threads", "1", "--model", "emoji", "--model", str(folders["mnist"])]) in (0, None)
    assert [a.model.name for a in served["app"].apps] == ["emoji", "mnist"]
    assert main(["serve", "--port", "0", "--threads", "1", "--model", "mnist-cd"]) == 2     # not installed
    assert "not installed" in capsys.readouterr().err


def test_a_consistency_models_page_defaults_to_consistency_sampling(tmp_path):
    """mnist-cd's kind: every tab starts at the library's sampler for it, "consistency"; others keep theirs."""
    from sdekit.models.nets import Preconditioned, build_net
    net = build_net({"type": "unet", "in_channels": 1, "resolution": 8, "ch": 4, "ch_mult": [1, 2],
                     "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0})
    save_bundle(tmp_path / "cd", Preconditioned(net, sdekit.VPSDE(), kind="consistency", sigma_min=0.005),
                shape=(1, 8, 8), name="cd", data="mnist")
    cd = sdekit.load(tmp_path / "cd")
    app = App(cd)
    try:
        info = app.info()
    finally:
        app.close()
    assert {k: v[0] for k, v in info["samplers"].items()} == {"edit": "consistency", "inpaint": "consistency",
                                                             "sample": "consistency"}
    assert all(d["sampler"] == "consistency" and d["steps"] == 2 for d in info["defaults"].values())
    assert info["polarity"] == "light-on-dark"
    task = web.parse_task(cd, {"kind": "sample", "n": 1})
    assert task.sampler == "consistency" and task.steps == 2
    assert web.run_task(cd, task)["results"].shape == (1, 1, 8, 8)
    assert web.parse_task(random_model((1, 8, 8), ch=4), {"kind": "sample"}).sampler == "abm"


# ---- classes by name ----------------------------------------------------------------------------------

def test_classes_may_be_named_in_python_the_cli_and_the_page(tmp_path, emoji, capsys):
    """"Food & Drink", "food" and 3 are one class of the emoji model everywhere; an unknown name is a one-line
    error listing the names; a model whose classes have no names takes numbers only."""
    from sdekit.apps.cli import main
    from sdekit.data.datasets import class_index
    assert [emoji.class_index(v) for v in ("Food & Drink", "food", "FOOD", " flags ", 3, "3")] == [3, 3, 3, 8, 3, 3]
    with pytest.raises(UserError, match="unknown class 'pizza'.*3 'Food & Drink'"):
        emoji.class_index("pizza")
    with pytest.raises(UserError, match="no names"):
        class_index({"shape": [1, 28, 28], "data": "mnist", "num_classes": 10}, "seven")
    g = torch.Generator().manual_seed(0)
    a = emoji.sample(2, "ddim", 2, generator=torch.Generator().manual_seed(0), class_labels="food")
    b = emoji.sample(2, "ddim", 2, generator=torch.Generator().manual_seed(0), class_labels=3)
    c = emoji.sample(2, "ddim", 2, generator=g, class_labels=["food", 8])
    assert torch.equal(a, b) and c.shape == a.shape
    folder = tmp_path / "emoji"
    emoji_bundle(folder)
    assert main(["sample", "--model", str(folder), "--class", "Food & Drink", "-n", "2", "--steps", "2",
                 "--sampler", "ddim", "--out", str(tmp_path / "s.png")]) == 0
    assert "class 3 Food & Drink" in capsys.readouterr().out
    code = main(["sample", "--model", str(folder), "--class", "pizza", "--out", str(tmp_path / "t.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'Food & Drink'" in err and "'all' or 'none'" in err
    assert not (tmp_path / "t.png").exists()
    task = web.parse_task(emoji, {"kind": "sample", "label": "Flags"})
    assert task.label == 8
    with pytest.raises(UserError, match="unknown class 'pizza'"):
        web.parse_task(emoji, {"kind": "sample", "label": "pizza"})


@pytest.mark.parametrize("labels, guidance, match", [
    ([1, 2], 0.0, "2 class labels for 4 samples"),
    (3.5, 0.0, "whole numbers"),
    (torch.tensor([1.0, 2.5, 0.0, 1.0]), 0.0, "whole numbers"),
    (None, 2.0, "needs class labels"),
    (-1, 2.0, "needs class labels"),
    (3, -1.0, "finite number >= 0"),
    (3, float("nan"), "finite number >= 0"),
])
def test_sample_refuses_labels_and_guidance_before_any_work(emoji, labels, guidance, match, monkeypatch):
    """Model.sample checks what the CLI checks, with a one-line UserError before the network runs."""
    def never(*a, **k):
        raise AssertionError("the network ran")
    monkeypatch.setattr(emoji.net, "forward", never)
    with pytest.raises(UserError, match=match):
        emoji.sample(4, "ddim", 2, class_labels=labels, guidance=guidance)


def test_jobs_take_guidance_and_refuse_unknown_fields(emoji):
    """"guidance" conditions edits and samples (and is reported back); a field the API does not know is a 400,
    not silently dropped; guidance without a class is refused before the job is queued."""
    from sdekit.apps.web.tasks import run_task
    with pytest.raises(UserError, match="unknown field 'guidence'"):
        web.parse_task(emoji, {"kind": "sample", "label": 3, "guidence": 2})
    with pytest.raises(UserError, match="needs class labels"):
        web.parse_task(emoji, {"kind": "sample", "guidance": 2})
    with pytest.raises(UserError, match=">= 0"):
        web.parse_task(emoji, {"kind": "sample", "label": 3, "guidance": -1})
    plain = web.parse_task(emoji, {"kind": "sample", "n": 2, "steps": 2, "sampler": "ddim", "seed": 1, "label": "food"})
    guided = web.parse_task(emoji, {"kind": "sample", "n": 2, "steps": 2, "sampler": "ddim", "seed": 1, "label": "food",
                                    "guidance": 3})
    assert guided.guidance == 3.0 and plain.guidance is None
    a, b = run_task(emoji, plain), run_task(emoji, guided)
    assert not torch.equal(a["results"], b["results"])
    assert b["condition"]["label"] == 3 and b["condition"]["name"] == "Food & Drink" and b["condition"]["guidance"] == 3
    expected = emoji.to_unit(emoji.sample(2, "ddim", 2, generator=torch.Generator().manual_seed(1), class_labels=3,
                                          guidance=3.0))
    torch.testing.assert_close(b["results"], expected)


def test_edit_says_how_it_converted_the_guide(tmp_path, capsys):
    """A guide of another shape is centre-cropped and a grey guide given to a colour model is made colour:
    both said on the result line, as transparency and mask scaling are."""
    from sdekit.apps.cli import main
    folder = emoji_bundle(tmp_path / "emoji")
    Image.new("RGB", (100, 60), (200, 30, 30)).save(tmp_path / "wide.png")
    Image.new("L", (32, 32), 128).save(tmp_path / "grey.png")
    for guide, words in (("wide.png", "the guide is 100x60: its centre 60x60 was edited"),
                         ("grey.png", "the guide is grey: each colour channel takes its grey")):
        assert main(["edit", "--model", str(folder), "--guide", str(tmp_path / guide), "--t0", "0.3", "--steps", "2",
                     "--sampler", "ddim", "--class", "none", "--out", str(tmp_path / f"o-{guide}")]) == 0
        assert words in capsys.readouterr().out
    assert main(["edit", "--model", str(folder), "--guide", str(tmp_path / "wide.png"), "--t0", "0.3", "--steps", "2",
                 "--sampler", "ddim", "--class", "none", "--out", str(tmp_path / "o2.png")]) == 0
    assert "grey" not in capsys.readouterr().out

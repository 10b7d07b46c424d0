"""End to end in headless Chromium: open the page, paint a stroke, run SDEdit, get the images.

Environment: SDEKIT_WEB_MODEL=<bundle folder> or "bundled" runs it on a trained model instead of a
tiny random one; SDEKIT_SCREENSHOT=<path.png> also writes the page's screenshot there (the
documentation's picture). The screenshot always goes to test-artifacts/web.png.
"""
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import sdekit
from sdekit.models.bundle import load, random_model
from sdekit.apps.web import server as web

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.browser
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is missing (pip install playwright; no browser download needed)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def served():
    name = os.environ.get("SDEKIT_WEB_MODEL")
    model = random_model(shape=(1, 16, 16), sde="vp") if not name else load(None if name == "bundled" else name)
    srv = web.make_server(model, "127.0.0.1", 0)
    web.start_in_thread(srv)
    yield model, f"http://127.0.0.1:{srv.server_address[1]}"
    web.stop(srv)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for every page of this module (the system's: nothing is downloaded)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(served, browser):
    _, base = served
    pg = browser.new_page(viewport={"width": 1180, "height": 900})
    pg.requests, pg.posts = [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("request", lambda r: pg.posts.append(r.url) if r.method == "POST" else None)
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(base)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    yield pg
    pg.close()


def set_value(page, selector, value):
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", str(value))


def wait_for_images(page, n):
    """Wait until n result images are shown (generous: the machine may be busy), or fail with the page's status."""
    try:
        page.wait_for_function("n => document.querySelectorAll('#results img.result').length === n && "
                               "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
                               arg=n, timeout=120_000)
    except Exception:
        pytest.fail(f"no results: status {page.inner_text('#status')!r}, message {page.inner_text('#message')!r}")


def _edit_t0(model) -> float:
    """The t0 the edit tab shows: 0.2 as set by the test, or a trained model's default edit's."""
    from sdekit.tasks.sdedit import default_class, default_t0
    return default_t0(model, default_class(model) != -1) if os.environ.get("SDEKIT_WEB_MODEL") else 0.2


def test_paint_a_stroke_and_run_sdedit(served, page):
    model, base = served
    C, H, W = model.shape
    canvas = page.locator("#mask")
    box = canvas.bounding_box()
    assert box["width"] == pytest.approx(W * (384 // W), abs=1)              # comfortable zoom

    # a 7, in sixteenths of the image: a bar along row 3, then a diagonal down to row 13
    z = box["width"] / 16
    at = lambda u, v: (box["x"] + u * z, box["y"] + v * z)
    page.mouse.move(*at(4.5, 3))
    page.mouse.down()
    page.mouse.move(*at(11, 3), steps=6)
    page.mouse.move(*at(7, 13), steps=10)
    page.mouse.up()
    painted = page.evaluate("""() => { const c = document.getElementById('paint');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n / (c.width * c.height); }""")
    assert 0.01 < painted < 0.3

    if os.environ.get("SDEKIT_WEB_MODEL"):        # a trained model: the page starts at its default edit
        assert float(page.input_value("#t0")) == pytest.approx(_edit_t0(model))
        if model.classifier is not None:
            assert page.input_value("#label") == "auto"            # "read from the drawing"
    else:
        set_value(page, "#t0", 0.2)
        assert page.inner_text("#t0-out") == "0.20"
        set_value(page, "#steps", 8)
    set_value(page, "#n", 3)
    set_value(page, "#seed", 1)
    page.click("#run")
    wait_for_images(page, 3)
    sizes = page.eval_on_selector_all("#results img.result", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes == [[W, H]] * 3
    # the guide the model saw is the stroke, box-filtered to the model's resolution
    guide = page.evaluate("""f => { const i = document.querySelector('#results figure.guide img');
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(i, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
        const at = (u, v) => d[(Math.floor(v * f) * c.width + Math.floor(u * f)) * 4];
        return [at(8, 3), at(2, 10)]; }""", W / 16)
    assert guide[0] > 200 and guide[1] == 0
    assert "done" in page.inner_text("#status")
    assert page.get_attribute("#results a[download]", "download").endswith(".png")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SDEKIT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SDEKIT_SCREENSHOT"])
    assert all(u.startswith(base) or u.startswith("data:") or u.startswith("blob:") for u in page.requests), page.requests
    assert not page.errors


def test_a_bad_upload_shows_a_message(page, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"definitely not a PNG")
    page.set_input_files("#upload", str(bad))
    page.wait_for_function("() => document.getElementById('message').textContent.length > 0", timeout=10000)
    assert page.inner_text("#message").startswith("photo.png: not an image")        # named once
    assert not page.errors


def test_an_upload_reports_its_size(page, tmp_path):
    from PIL import Image
    im = Image.new("RGB", (300, 200), "black")
    im.paste(Image.new("RGB", (60, 120), "white"), (120, 40))
    im.save(tmp_path / "bar.png")
    page.set_input_files("#upload", str(tmp_path / "bar.png"))
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('bar.png')", timeout=10000)
    assert page.inner_text("#status").startswith("bar.png: 300×200, resized") and "undefined" not in page.inner_text("#status")
    assert not page.errors


def test_sampling_tab(served, page):
    model, _ = served
    page.click("#tabs button[data-tab=sample]")
    assert not page.is_visible("#paint") and not page.is_visible("#t0")
    set_value(page, "#steps", 5)
    set_value(page, "#n", 4)
    page.click("#run")
    wait_for_images(page, 4)
    assert page.eval_on_selector_all("#results img.result", "els => els.map(e => e.naturalWidth)") == [model.shape[2]] * 4
    assert not page.is_hidden("#grid-link")


def results(page):
    return page.eval_on_selector_all("#results img.result", "els => els.length")


def test_each_tab_keeps_its_own_inputs_results_and_status(served, page):
    model = served[0]
    page.click("#tabs button[data-tab=edit]")         # the results of test_paint_a_stroke_and_run_sdedit, then an upload
    assert results(page) == 3 and page.inner_text("#status").startswith("bar.png: 300×200")
    assert page.input_value("#n") == "3" and float(page.input_value("#t0")) == pytest.approx(_edit_t0(model))
    page.click("#tabs button[data-tab=inpaint]")              # never run: nothing of the other tabs
    assert results(page) == 0 and page.inner_text("#status") == "ready" and page.is_hidden("#grid-link")
    assert page.eval_on_selector("#progress", "e => e.value") == 0                     # the library's default steps
    assert page.input_value("#steps") == str(__import__("sdekit").get_sampler("pc").default_steps)
    set_value(page, "#steps", 7)
    page.click("#tabs button[data-tab=sample]")
    assert results(page) == 4 and page.input_value("#steps") == "5" and page.input_value("#n") == "4"
    page.click("#tabs button[data-tab=inpaint]")
    assert page.input_value("#steps") == "7"                  # switching tabs does not reset inputs


def stand_in_inpaint(sde, score_fn, x, known, steps=10, generator=None, **options):
    """Used only where sdekit.inpaint is not available: known pixels kept, the rest from the prior."""
    fill = sde.prior_sampling(x.shape, generator=generator)
    score_fn(fill, torch.full((x.shape[0],), sde.T))
    return known * x + (1 - known) * fill.clamp(-1, 1)


def test_inpaint_tab_with_a_painted_mask(served, page, monkeypatch):
    model, _ = served
    if importlib.util.find_spec("sdekit.tasks.guidance") is None:
        monkeypatch.setitem(vars(sdekit), "inpaint", stand_in_inpaint)
    C, H, W = model.shape
    page.click("#tabs button[data-tab=inpaint]")
    assert page.is_checked("input[name=layer][value=mask]") and not page.is_visible("#t0")
    box = page.locator("#mask").bounding_box()
    z = box["width"] / W
    page.mouse.move(box["x"] + 2 * z, box["y"] + 1 * z)
    page.mouse.down()
    page.mouse.move(box["x"] + 14 * z, box["y"] + 1 * z, steps=6)
    page.mouse.up()
    set_value(page, "#steps", 4)
    set_value(page, "#n", 2)
    page.click("#run")
    wait_for_images(page, 2)
    m = page.evaluate("""() => { const i = [...document.querySelectorAll('#results figure.guide img')].find(e => e.alt === 'mask');
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(i, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
        return [d[(1 * c.width + 8) * 4], d[(10 * c.width + 8) * 4]]; }""")
    assert m == [0, 255]                  # mask.png as the library reads it: row 1 regenerated (black), row 10 kept (white)
    assert "white = keep" in page.inner_text("#mask-rule")
    page.click("text=undo")                                # the mask stroke is undone
    assert page.evaluate("""() => { const c = document.getElementById('mask');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 0); }""")
    assert not page.errors


def test_a_refused_run_does_not_read_done(page):
    page.click("#tabs button[data-tab=inpaint]")             # its last run is done
    assert page.inner_text("#status").startswith("done")
    set_value(page, "#steps", 0)
    page.click("#run")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('steps')", timeout=10000)
    assert page.inner_text("#status") == "not run" and page.eval_on_selector("#progress", "e => e.value") == 0
    assert not page.errors


def test_an_empty_canvas_asks_before_running(page):
    page.click("#tabs button[data-tab=edit]")
    page.check("input[name=layer][value=paint]")
    page.click("#clear")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    posts = len(page.posts)
    page.click("#run")
    page.wait_for_timeout(300)
    assert asked and "empty" in asked[0] and len(page.posts) == posts       # dismissed: nothing sent
    assert not page.errors


# ---- a colour model: the page adapts (palette and picker, canvas size, results at the canvas's size) ----

def scenes(size: int) -> torch.Tensor:
    """Six little landscapes (sky, sun, hills, a house) as pixels [6, 3, size, size] in [0, 1]."""
    from PIL import Image, ImageDraw
    s = size / 64
    out = []
    for sky, ground, sun, house in [("#87ceeb", "#4f9a3a", "#fcd34d", "#b5472e"), ("#1d3557", "#2f5233", "#f1faee", None),
                                    ("#f4a261", "#8d5524", "#e63946", "#f1faee"), ("#a8dadc", "#e9c46a", "#ffffff", None),
                                    ("#3a86ff", "#6a994e", "#ffbe0b", "#3d405b"), ("#cdb4db", "#52796f", "#ff006e", None)]:
        im = Image.new("RGB", (size, size), sky)
        d = ImageDraw.Draw(im)
        d.ellipse([44 * s, 6 * s, 56 * s, 18 * s], fill=sun)
        d.ellipse([-20 * s, 34 * s, 50 * s, 90 * s], fill=ground)
        d.rectangle([0, 44 * s, size, size], fill=ground)
        if house:
            d.rectangle([30 * s, 30 * s, 46 * s, 46 * s], fill=house)
            d.polygon([(28 * s, 31 * s), (38 * s, 22 * s), (48 * s, 31 * s)], fill="#3d2b1f")
        out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


class ExactDenoiser(torch.nn.Module):
    """E[x0 | x_t] of data that are exactly ``pictures`` (model space [-1, 1]), under a discrete VP
    schedule: what a perfectly trained network predicts (prediction "x0"), so edits give real pictures."""

    def __init__(self, pictures: torch.Tensor, sde):
        super().__init__()
        self.sde = sde
        self.register_buffer("x0", pictures.flatten(1))

    def forward(self, x, timestep):
        s = self.sde.scale(timestep.double() / (self.sde.N - 1)).float()[:, None]      # sqrt(alphas_cumprod)
        d2 = (x.flatten(1)[:, None, :] - s[:, :, None] * self.x0[None]).pow(2).sum(-1)     # [B, K]
        w = torch.softmax(-d2 / (2 * (1 - s ** 2)), dim=1)
        return (w @ self.x0).view_as(x)


def colour_model(size: int):
    from sdekit.core.sde import DiscreteVPSDE
    sde = DiscreteVPSDE(schedule="linear")
    return sdekit.wrap(ExactDenoiser(2 * scenes(size) - 1, sde), prediction="x0", alphas_cumprod=sde.alphas_cumprod,
                       shape=(3, size, size), name=f"landscapes-{size}")


def open_page(browser, base):
    pg = browser.new_page(viewport={"width": 1180, "height": 900})
    pg.errors, pg.jobs = [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.jobs.append(r.post_data) if r.url.endswith("/api/jobs") else None)
    pg.goto(base)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    return pg


@pytest.fixture(scope="module")
def rgb(browser):
    srv = web.make_server(colour_model(64), "127.0.0.1", 0)
    web.start_in_thread(srv)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    pg = open_page(browser, base)
    yield pg, base
    pg.close()
    web.stop(srv)


def fetched(base, path):
    """The image at ``path`` on the server, as Pillow reads it."""
    import io
    import urllib.request
    from PIL import Image
    with urllib.request.urlopen(base + path) as r:
        return Image.open(io.BytesIO(r.read()))


def pixel_of_canvas(page, u, v):
    """The paint layer's colour at model pixel (u, v) (its centre)."""
    return page.evaluate("""([u, v]) => { const c = document.getElementById('paint'), z = c.width / 64;
        return [...c.getContext('2d').getImageData(Math.floor((u + 0.5) * z), Math.floor((v + 0.5) * z), 1, 1).data].slice(0, 3); }""",
                         [u, v])


def drag(page, points, z):
    box = page.locator("#mask").bounding_box()
    at = lambda u, v: (box["x"] + u * z, box["y"] + v * z)
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for q in points[1:]:
        page.mouse.move(*at(*q), steps=8)
    page.mouse.up()


def test_a_colour_model_gets_a_colour_palette_and_paints_in_colour(rgb):
    page, base = rgb
    assert page.is_visible("#colour") and page.is_hidden("#grey-group")
    names = page.eval_on_selector_all("#swatches button", "els => els.map(e => e.title)")
    assert len(names) == 12 and {"red", "sky blue", "green"} <= set(names)
    box = page.locator("#mask").bounding_box()
    assert box["width"] == pytest.approx(64 * 6, abs=1) and box["height"] == pytest.approx(64 * 6, abs=1)
    assert pixel_of_canvas(page, 3, 3) == [128, 128, 128]             # a natural-image model starts mid grey
    assert "upload a photo" in page.inner_text("#canvas-hint")
    z = box["width"] / 64

    page.click("#swatches button[title='sky blue']")                  # a palette colour: the sky
    page.click("#fill")
    assert pixel_of_canvas(page, 3, 3) == [0x87, 0xce, 0xeb]
    set_value(page, "#colour", "#2e8b3c")                              # the picker: any colour, for the ground
    set_value(page, "#brush", 25)
    assert page.inner_text("#brush-out") == "25% · 16 px"               # relative to the image: 16 of 64 pixels
    drag(page, [(0, 52), (64, 52)], z)
    drag(page, [(0, 60), (64, 60)], z)
    page.click("#swatches button[title='yellow']")
    set_value(page, "#brush", 12.5)
    drag(page, [(50, 12), (50.5, 12)], z)                               # the sun: a dab
    assert pixel_of_canvas(page, 32, 56) == [0x2e, 0x8b, 0x3c]

    set_value(page, "#t0", 0.5)
    set_value(page, "#steps", 20)
    set_value(page, "#n", 3)
    set_value(page, "#seed", 3)
    page.click("#run")
    wait_for_images(page, 3)
    sizes = page.eval_on_selector_all("#results img.result", "els => els.map(e => [e.naturalWidth, e.naturalHeight, "
                                      "e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
    assert [s[:2] for s in sizes] == [[64, 64]] * 3
    assert all(s[2:] == pytest.approx([box["width"], box["height"]], abs=1) for s in sizes)    # the canvas's size
    job = page.evaluate("() => document.querySelector('#results img.result').src").split("/api/jobs/")[1].split("/")[0]
    result, guide = fetched(base, f"/api/jobs/{job}/result-0.png"), fetched(base, f"/api/jobs/{job}/guide.png")
    assert result.mode == "RGB" and result.size == (64, 64) and guide.mode == "RGB" and guide.size == (64, 64)
    px = np.array(result).reshape(-1, 3)
    assert len(np.unique(px, axis=0)) > 3 and (px.max(1) != px.min(1)).any()         # a colour picture
    # what the server was sent and used: the picked colours, exactly, where they were painted
    assert guide.getpixel((32, 56)) == (0x2e, 0x8b, 0x3c) and guide.getpixel((5, 5)) == (0x87, 0xce, 0xeb)
    assert guide.getpixel((50, 12)) == (0xfc, 0xbf, 0x49)
    assert '"image":"data:image/png;base64,' in page.jobs[-1]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_rgb.png"), full_page=True)
    if os.environ.get("SDEKIT_SCREENSHOT_RGB"):
        shutil.copyfile(ARTIFACTS / "web_rgb.png", os.environ["SDEKIT_SCREENSHOT_RGB"])
    assert not page.errors


def test_paint_over_an_uploaded_photo(rgb, tmp_path):
    from PIL import Image
    page, base = rgb
    photo = Image.new("RGB", (300, 200), (200, 30, 40))                # wide: the centre square is kept
    photo.paste(Image.new("RGB", (150, 200), (20, 60, 180)), (150, 0))
    photo.save(tmp_path / "photo.png")
    page.set_input_files("#upload", str(tmp_path / "photo.png"))
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('photo.png')", timeout=10000)
    assert pixel_of_canvas(page, 10, 10) == [200, 30, 40] and pixel_of_canvas(page, 54, 10) == [20, 60, 180]
    page.click("#swatches button[title='white']")
    set_value(page, "#brush", 10)
    z = page.locator("#mask").bounding_box()["width"] / 64
    drag(page, [(8, 40), (56, 40)], z)                                 # a white bar across both halves
    set_value(page, "#steps", 3)
    set_value(page, "#n", 1)
    page.click("#run")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('done')", timeout=120_000)
    job = page.evaluate("() => document.querySelector('#results img.result').src").split("/api/jobs/")[1].split("/")[0]
    guide = fetched(base, f"/api/jobs/{job}/guide.png")
    assert guide.getpixel((10, 10)) == (200, 30, 40) and guide.getpixel((54, 10)) == (20, 60, 180)   # the photo
    assert guide.getpixel((20, 40)) == (255, 255, 255) and guide.getpixel((44, 40)) == (255, 255, 255)   # the stroke
    assert not page.errors


def test_a_256_pixel_model_is_shown_1_to_1(browser):
    srv = web.make_server(colour_model(256), "127.0.0.1", 0)
    web.start_in_thread(srv)
    try:
        page = open_page(browser, f"http://127.0.0.1:{srv.server_address[1]}")
        box = page.locator("#mask").bounding_box()
        assert (box["width"], box["height"]) == pytest.approx((256, 256), abs=1)
        assert page.eval_on_selector("#paint", "c => [c.width, c.height]") == [256, 256]
        assert "shown 1:1" in page.inner_text("#canvas-hint")
        assert page.inner_text("#brush-out") == "12.5% · 32 px"
        page.click("#tabs button[data-tab=sample]")
        set_value(page, "#steps", 2)
        set_value(page, "#n", 1)
        page.click("#run")
        wait_for_images(page, 1)
        shown = page.eval_on_selector("#results img.result", "e => [e.naturalWidth, e.getBoundingClientRect().width]")
        assert shown == [256, pytest.approx(256, abs=1)]
        assert not page.errors
        page.close()
    finally:
        web.stop(srv)


# ---- a phone's width; edit under a result; cancel; labels; queue words; favicon --------------------------

def fresh_page(browser, base, width=1180, height=900):
    pg = browser.new_page(viewport={"width": width, "height": height})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(base)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    return pg


def overflow(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth")


def test_the_page_fits_a_phone(served, browser):
    _, base = served
    pg = fresh_page(browser, base, 375, 740)
    try:
        for tab in ("edit", "inpaint", "sample"):
            pg.click(f"#tabs button[data-tab={tab}]")
            assert overflow(pg) <= 375, tab
        pg.click("#tabs button[data-tab=edit]")
        pg.check("input[name=layer][value=paint]")                                  # the inpaint tab chose the mask
        pg.locator("#mask").scroll_into_view_if_needed()
        box = pg.locator("#mask").bounding_box()
        paint_box = pg.locator("#paint").bounding_box()
        assert pg.is_visible("#paint") and 0 <= box["x"] and box["x"] + box["width"] <= 375 and box["width"] > 250
        assert box == pytest.approx(paint_box, abs=0.5)                             # the mask covers the canvas
        assert box["height"] == pytest.approx(box["width"], abs=1)                  # square, not squashed
        z = box["width"] / 16                                                        # painting still hits its pixel
        pg.mouse.move(box["x"] + 8.5 * z, box["y"] + 8.5 * z)
        pg.mouse.down(); pg.mouse.up()
        hit = pg.evaluate("""() => { const c = document.getElementById('paint'), k = c.width / 16;
            return c.getContext('2d').getImageData(8.5 * k, 8.5 * k, 1, 1).data[0]; }""")
        assert hit > 128
        set_value(pg, "#steps", 3)
        set_value(pg, "#n", 4)
        pg.click("#run")
        wait_for_images(pg, 4)
        assert overflow(pg) <= 375                                                  # the results fit too
        assert not pg.errors
    finally:
        pg.close()


def test_edit_under_an_inpaint_result_starts_with_a_fresh_mask_on_the_paint_layer(served, browser):
    model, base = served
    C, H, W = model.shape
    pg = fresh_page(browser, base)
    try:
        pg.click("#tabs button[data-tab=inpaint]")
        assert pg.is_checked("input[name=layer][value=mask]")
        box = pg.locator("#mask").bounding_box()
        z = box["width"] / W
        pg.mouse.move(box["x"] + 2 * z, box["y"] + 2 * z)
        pg.mouse.down()
        pg.mouse.move(box["x"] + 14 * z, box["y"] + 2 * z, steps=5)
        pg.mouse.up()
        set_value(pg, "#steps", 3)
        set_value(pg, "#n", 2)
        pg.once("dialog", lambda d: d.accept())                          # "the canvas is empty": run anyway
        pg.click("#run")
        wait_for_images(pg, 2)
        url = pg.eval_on_selector_all("#results img.result", "els => els[1].src")
        pg.click("#results figure:has(img.result) >> nth=1 >> text=edit")
        pg.wait_for_function("() => document.getElementById('status').textContent.startsWith('result #2')")
        assert pg.eval_on_selector("#tabs button.active", "e => e.dataset.tab") == "edit"
        assert pg.is_checked("input[name=layer][value=paint]") and not pg.is_checked("input[name=layer][value=mask]")
        assert pg.evaluate("""() => { const c = document.getElementById('mask');
            return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 0); }""")
        same = pg.evaluate("""async url => { const i = new Image(); i.src = url; await i.decode();
            const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(i, 0, 0); const r = g.getImageData(0, 0, c.width, c.height).data;
            const p = document.getElementById('paint'), k = p.width / c.width;
            const d = p.getContext('2d').getImageData(0, 0, p.width, p.height).data;
            for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++)
              if (d[((y * k + 1) * p.width + x * k + 1) * 4] !== r[(y * c.width + x) * 4]) return false;
            return true; }""", url)
        assert same                                                       # the result is the new guide, pixel for pixel
        pg.click("text=undo")                                             # one undo: the old guide and its mask
        assert not pg.evaluate("""() => { const c = document.getElementById('mask');
            return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 0); }""")
        assert not pg.errors
    finally:
        pg.close()


def test_results_keep_their_settings_after_a_cancel_and_labels_match_messages(served, browser):
    _, base = served
    pg = fresh_page(browser, base)
    try:
        pg.click("#tabs button[data-tab=sample]")
        set_value(pg, "#steps", 3)
        set_value(pg, "#n", 2)
        set_value(pg, "#seed", 5)
        pg.click("#run")
        wait_for_images(pg, 2)
        made = pg.inner_text("#results-settings")
        assert "3 steps" in made and "2 results" in made and "seed 5" in made
        # a run that is cancelled: the results shown stay with the settings that made them
        pg.evaluate("""() => { window.seen = []; new MutationObserver(() => window.seen.push(
            document.getElementById('status').textContent)).observe(document.getElementById('status'),
            { childList: true, characterData: true, subtree: true }); }""")
        set_value(pg, "#steps", 2000)
        set_value(pg, "#n", 16)
        pg.click("#run")
        pg.wait_for_function("() => document.getElementById('status').textContent.startsWith('working')", timeout=60000)
        pg.click("#cancel")
        pg.wait_for_function("() => document.getElementById('status').textContent.startsWith('cancelled')", timeout=60000)
        assert pg.inner_text("#results-settings") == made and results(pg) == 2
        assert "earlier run" in pg.inner_text("#status")
        seen = pg.evaluate("() => window.seen")
        assert not any("in the queue" in s for s in seen), seen                 # nothing else ran
        # the field the server names is the field the page labels
        set_value(pg, "#n", 99)
        pg.click("#run")
        pg.wait_for_function("() => document.getElementById('message').textContent.length > 0", timeout=10000)
        assert pg.inner_text("#message").startswith("n must lie in 1..")
        assert "(n)" in pg.inner_text("label[for=n]")
        assert not pg.errors
    finally:
        pg.close()


def test_the_page_has_a_favicon(served, browser):
    _, base = served
    pg = fresh_page(browser, base)
    try:
        href = pg.get_attribute("link[rel=icon]", "href")
        status = pg.evaluate("h => fetch(h).then(r => r.status + ' ' + r.headers.get('content-type'))", href)
        assert status.startswith("200 image/svg+xml")
    finally:
        pg.close()

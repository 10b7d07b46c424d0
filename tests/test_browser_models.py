"""In headless Chromium: a server of a grey model and a colour model drawn on white (emoji), the page's
model menu, the colour page's white canvas and palette, a colour edit, and the class an edit read."""
import io
import urllib.request

import numpy as np
import pytest
from PIL import Image

import sdekit
from sdekit.models.bundle import random_model
from sdekit.data.datasets import EMOJI_CATEGORIES
from sdekit.apps.web import server as web

from test_web_models import MeanReader, emoji_bundle

from test_browser import browser  # noqa: E402,F401  (the shared Chromium fixture; skips without a browser)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    grey = random_model((1, 16, 16), num_classes=3, ch=4)
    grey.name, grey.classifier = "grey", MeanReader(grey.sde, shape=(1, 16, 16))
    emoji = sdekit.load(emoji_bundle(tmp_path_factory.mktemp("emoji") / "emoji"))
    srv = web.make_server([grey, emoji], "127.0.0.1", 0)
    web.start_in_thread(srv)
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    web.stop(srv)


@pytest.fixture
def page(site, browser):
    pg = browser.new_page(viewport={"width": 1180, "height": 900})
    pg.errors, pg.requests = [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto(site + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    yield pg
    pg.close()


def set_value(page, selector, value):
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", str(value))


def pixel(page, u, v):
    """The paint layer's colour at the centre of model pixel (u, v)."""
    return page.evaluate("""([u, v]) => { const c = document.getElementById('paint'), z = c.width / window.modelW;
        return [...c.getContext('2d').getImageData(Math.floor((u + 0.5) * z), Math.floor((v + 0.5) * z), 1, 1).data].slice(0, 3); }""",
                         [u, v])


def drag(page, points, size):
    box = page.locator("#mask").bounding_box()
    z = box["width"] / size
    at = lambda u, v: (box["x"] + (u + 0.5) * z, box["y"] + (v + 0.5) * z)
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for q in points[1:]:
        page.mouse.move(*at(*q), steps=8)
    page.mouse.up()


def run_and_wait(page):
    page.click("#run")
    try:
        page.wait_for_function("() => document.querySelectorAll('#results img.result').length > 0 && "
                               "document.getElementById('status').textContent.startsWith('done')", timeout=120_000)
    except Exception:
        pytest.fail(f"no results: status {page.inner_text('#status')!r}, message {page.inner_text('#message')!r}")


def fetched(page, site, which):
    """The image ``which`` (a result's or the guide's img src) as Pillow reads it."""
    src = page.evaluate(f"() => document.querySelector({which!r}).src")
    assert src.startswith(site + "/m/emoji/api/jobs/"), src
    with urllib.request.urlopen(src) as r:
        return Image.open(io.BytesIO(r.read()))


def test_switch_to_the_colour_model_paint_in_colour_on_white_and_get_a_colour_edit(site, page):
    menu = page.eval_on_selector_all("#model-menu option", "os => os.map(o => [o.textContent, o.selected])")
    assert page.is_visible("#model-menu") and [m[1] for m in menu] == [True, False]
    assert menu[0][0].startswith("grey") and menu[1][0] == "emoji (32×32 colour)"
    assert "grey" in page.inner_text("#model-info")
    page.select_option("#model-menu", label="emoji (32×32 colour)")
    page.wait_for_url(site + "/m/emoji/", timeout=15000)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    page.evaluate("() => { window.modelW = 32; }")
    assert "emoji" in page.inner_text("#model-info")
    assert page.eval_on_selector("#model-menu", "s => s.options[s.selectedIndex].textContent") == "emoji (32×32 colour)"

    assert pixel(page, 0, 0) == [255, 255, 255] and pixel(page, 20, 9) == [255, 255, 255]   # starts white
    assert "Paint in colour on white, as the emoji are drawn" in page.inner_text("#canvas-hint")
    names = page.eval_on_selector_all("#swatches button", "els => els.map(e => e.title)")
    assert names == ["yellow", "red", "green", "blue", "brown", "black", "orange", "pink", "white"]
    classes = page.eval_on_selector_all("#label option", "os => os.map(o => o.textContent)")
    assert classes == ["any", *EMOJI_CATEGORIES]                             # names, not numbers

    page.click("#swatches button[title='red']")
    set_value(page, "#brush", 20)
    drag(page, [(6, 16), (26, 16)], 32)                                      # a red bar across the middle
    assert pixel(page, 16, 16) == [0xdd, 0x2e, 0x44] and pixel(page, 16, 3) == [255, 255, 255]
    set_value(page, "#t0", 0.5)
    set_value(page, "#steps", 4)
    set_value(page, "#n", 1)
    set_value(page, "#seed", 2)
    run_and_wait(page)
    result = fetched(page, site, "#results img.result")
    guide = fetched(page, site, "#results figure.guide img")
    assert result.mode == "RGB" and result.size == (32, 32) and guide.mode == "RGB"
    px = np.asarray(result).reshape(-1, 3).astype(int)
    assert (px.max(1) - px.min(1) > 8).mean() > 0.1                          # a colour picture, not grey
    assert guide.getpixel((16, 16)) == (0xdd, 0x2e, 0x44) and guide.getpixel((16, 3)) == (255, 255, 255)
    assert all(u.startswith(site) or u.startswith(("data:", "blob:")) for u in page.requests), page.requests
    assert not page.errors


def test_the_status_line_names_the_class_an_edit_read(site, page):
    page.evaluate("() => { window.modelW = 16; }")
    assert "read from the drawing (edit)" in page.eval_on_selector_all("#label option", "os => os.map(o => o.textContent)")
    page.select_option("#label", "auto")
    set_value(page, "#grey", 128)
    page.click("#fill")                                                      # mid grey: model space 0, class 1
    assert pixel(page, 8, 8) == [128, 128, 128]
    set_value(page, "#t0", 0.2)
    set_value(page, "#steps", 2)
    set_value(page, "#n", 1)
    run_and_wait(page)
    assert "class 1 (read)" in page.inner_text("#status")
    assert "class read from the drawing: 1" in page.inner_text("#results-settings")
    page.select_option("#model-menu", index=1)                               # and the menu leads on
    page.wait_for_url(site + "/m/emoji/", timeout=15000)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    page.select_option("#model-menu", index=0)
    page.wait_for_url(site + "/m/grey/", timeout=15000)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    assert page.inner_text("#status") == "ready" and not page.errors

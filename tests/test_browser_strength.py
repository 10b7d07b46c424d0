"""End to end in headless Chromium: paint a strength map (a t0 per pixel) beside a stroke and get an edit
that keeps what the map keeps (the fixtures of test_browser.py)."""
import pytest

from test_browser import browser, page, served, set_value, wait_for_images  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

PIXELS = """name => { const i = [...document.querySelectorAll('#results img')].filter(e => e.alt === name)[0];
    const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(i, 0, 0);
    return Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((v, k) => k % 4 === 0)); }"""


def test_paint_a_strength_map_and_edit(served, page):
    model, _ = served
    C, H, W = model.shape
    box = page.locator("#mask").bounding_box()
    z = box["width"] / W
    at = lambda u, v: (box["x"] + u * z, box["y"] + v * z)
    page.mouse.move(*at(2, 8))                                  # a stroke on the paint layer
    page.mouse.down()
    page.mouse.move(*at(14, 8), steps=8)
    page.mouse.up()

    page.check("input[name=layer][value=strength]")
    assert page.is_visible("#amount") and page.is_visible("#strength-rule")
    set_value(page, "#amount", 0)                              # t0 = 0: keep
    assert page.eval_on_selector("#amount-swatch", "e => getComputedStyle(e).backgroundColor") == "rgb(0, 160, 255)"
    set_value(page, "#brush", 25)                               # 4 model pixels wide
    page.mouse.move(*at(0, 2))
    page.mouse.down()
    page.mouse.move(*at(16, 2), steps=8)
    page.mouse.up()
    shown = page.evaluate("""([x, y]) => Array.from(document.getElementById('strength').getContext('2d')
        .getImageData(x, y, 1, 1).data)""", [int(8 * z), int(2 * z)])
    assert shown == [0, 160, 255, 255]                          # its colour shows the amount

    set_value(page, "#t0", 0.6)
    set_value(page, "#steps", 6)
    set_value(page, "#n", 2)
    set_value(page, "#seed", 1)
    page.click("#run")
    wait_for_images(page, 2)
    t0map = page.evaluate(PIXELS, "t0 map")                     # the map the edit used, grey = t0
    guide = page.evaluate(PIXELS, "guide")
    result = page.evaluate(PIXELS, "#1")
    kept = [k for k, v in enumerate(t0map) if v == 0]
    assert 2 * W <= len(kept) < H * W and all(k // W <= 5 for k in kept)            # the painted rows
    assert {round(v / 255, 1) for v in t0map if v} == {0.6}                          # the rest: the slider
    assert max(abs(result[k] - guide[k]) for k in kept) <= 1
    free = [k for k in range(H * W) if t0map[k]]
    assert sum(abs(result[k] - guide[k]) for k in free) / len(free) > 5
    assert "done" in page.inner_text("#status")
    assert not page.errors

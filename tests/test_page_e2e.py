"""The page end to end: ``binwise serve`` in a subprocess, driven by headless Chromium (Playwright).

Needs Debian's chromium (/usr/bin/chromium) and the Python ``playwright`` package: both are
installed by scripts/setup-browser.sh. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest
from font_checks import CHINESE, NO_GLYPH, requires_chinese_font
from inference_models import garbage26_test_photos, tiny_onnx

from binwise.serving.process import serving
from binwise.taxonomy.classes import GARBAGE26

CHROMIUM = os.environ.get("BINWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (class folder, bin id): the first test photo of each; the quick fixture model gets both right
PHOTOS = [("Eggshell", "wet"), ("Battery", "hazardous")]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(run scripts/setup-browser.sh)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (run scripts/setup-browser.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(garbage26_model, tmp_path_factory):
    """``binwise serve`` on a free loopback port; yields its base URL."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(garbage26_model, log, "--log-level", "warning") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def open_page(browser, url: str):
    """The page at ``url`` in a new tab, loaded; no JavaScript errors allowed."""
    page = browser.new_page(viewport={"width": 480, "height": 960}, locale="en-US")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def page(browser, server):
    with open_page(browser, server) as page:
        yield page


def test_photo_shows_its_bin_top3_overlay_and_both_languages(page, garbage26_data, tmp_path):
    bins = {b.id: b for b in GARBAGE26.bins}
    for folder, bin_id in PHOTOS:
        photo = sorted((garbage26_data / "test" / folder).glob("*.jpg"))[0]
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(f"#bin[data-bin={bin_id}]", timeout=30_000)
        assert page.is_visible("#result") and not page.is_visible("#error")
        assert page.text_content("#bin-name") == bins[bin_id].en
        # the card is painted in the bin's colour, and the icon drew something
        colour = page.eval_on_selector("#bin", "el => getComputedStyle(el).backgroundColor")
        r, g, b = (int(bins[bin_id].color[i:i + 2], 16) for i in (1, 3, 5))
        assert colour == f"rgb({r}, {g}, {b})"
        assert page.eval_on_selector("#bin-icon", "el => el.childElementCount") >= 2
        rows = page.locator("#top li .class-name")
        assert rows.count() == 3
        assert rows.first.text_content().startswith(folder)
        assert page.text_content("#bin-confidence").endswith("sure")

    page.screenshot(path=str(tmp_path / "page-en.png"), full_page=True)
    page.click("#lang")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.text_content("#bin-name") == bins[PHOTOS[-1][1]].zh
    assert page.locator("#top li .class-name").first.text_content().startswith(
        GARBAGE26.classes_zh[GARBAGE26.classes_en.index(PHOTOS[-1][0])])
    page.click("#lang")
    assert page.text_content("#bin-name") == bins[PHOTOS[-1][1]].en

    page.check("#explain")
    page.wait_for_selector("#photo[data-showing=overlay]", timeout=60_000)
    assert page.get_attribute("#photo", "src").startswith("data:image/png;base64,")
    assert page.eval_on_selector("#photo", "img => img.complete && img.naturalWidth") == 224
    assert page.is_visible("#cam-key") and not page.is_visible("#explain-note")
    page.uncheck("#explain")
    assert page.get_attribute("#photo", "data-showing") == "photo"
    assert not page.is_visible("#cam-key")


def test_bad_file_shows_the_services_error_and_the_page_goes_on(page, garbage26_data, tmp_path):
    note = tmp_path / "note.jpg"
    note.write_text("not a photo")
    page.set_input_files("#file", str(note))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "note.jpg: not an image" in page.text_content("#error")
    assert not page.is_visible("#result")

    folder, bin_id = PHOTOS[0]
    page.set_input_files("#file", str(sorted((garbage26_data / "test" / folder).glob("*.jpg"))[0]))
    page.wait_for_selector(f"#bin[data-bin={bin_id}]", timeout=30_000)
    assert not page.is_visible("#error")


# How many lines an element's text takes: its line boxes have distinct tops.
TEXT_LINES = """el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((box) => Math.round(box.top))).size;
}"""

# Each character drawn on a canvas in the page's own font, as its alpha values.
DRAW_CHARACTERS = """characters => characters.map((c) => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 48;
    const context = canvas.getContext("2d");
    context.font = `32px ${getComputedStyle(document.body).fontFamily}`;
    context.textBaseline = "top";
    context.fillText(c, 4, 4);
    return Array.from(context.getImageData(0, 0, 48, 48).data.filter((_, i) => i % 4 === 3));
})"""


def test_at_phone_width_the_language_button_stays_on_one_line(page):
    assert not page.is_visible("#region-picker")  # one region (the model's own): nothing to pick
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for label in ("中文", "English"):
            assert page.text_content("#lang") == label
            assert page.eval_on_selector("#lang", TEXT_LINES) == 1, f"{label!r} wraps at 390 px"
            page.click("#lang")
    finally:
        page.set_viewport_size({"width": 480, "height": 960})


@requires_chinese_font
def test_chinese_renders_with_real_glyphs_in_the_pages_font(page):
    *glyphs, placeholder = page.evaluate(DRAW_CHARACTERS, [*CHINESE, NO_GLYPH])
    for c, alpha in zip(CHINESE, glyphs):
        assert sum(a > 128 for a in alpha) > 20, f"{c!r} drew nothing"
        assert alpha != placeholder, f"{c!r} drew the missing-glyph box"
    assert len({tuple(alpha) for alpha in glyphs}) == len(CHINESE), "characters drew the same box"


def test_under_an_onnx_model_the_page_says_why_grad_cam_is_off(browser, tmp_path):
    with serving(tiny_onnx(), tmp_path / "serve.log", "--log-level", "warning") as (url, _), \
            open_page(browser, url) as page:
        page.set_input_files("#file", str(garbage26_test_photos(1)[0]))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        assert page.is_disabled("#explain")
        assert page.is_visible("#explain-note")
        assert "needs the .safetensors model" in page.text_content("#explain-note").lower()
        page.click("#lang")
        assert "需要 .safetensors 模型" in page.text_content("#explain-note")
        page.click("#lang")


# (status, what the page says in English and in Chinese)
OUTCOMES = {"unsure": ("Not sure — try another photo", "不太确定——请换一张照片试试"),
            "unknown": ("This doesn't look like garbage", "这看起来不像垃圾")}


def test_the_page_shows_ok_unsure_and_unknown_in_both_languages(browser, calibrated_garbage26_model,
                                                                garbage26_data, tmp_path):
    """A calibrated model served with --min-confidence 0.99: the fixture head is 99.8% sure of the
    Battery photo (ok), 98.6% of the Eggshell photo (unsure, and its bin still shown when the
    classes it hesitates between share it); a plain grey square resembles no training photo (unknown)."""
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(grey)
    photos = {"ok": sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0],
              "unsure": sorted((garbage26_data / "test" / "Eggshell").glob("*.jpg"))[0],
              "unknown": grey}
    bins = {b.id: b for b in GARBAGE26.bins}
    with serving(calibrated_garbage26_model, tmp_path / "serve.log", "--log-level", "warning",
                 "--min-confidence", "0.99") as (url, _), open_page(browser, url) as page:
        for status, photo in photos.items():
            page.set_input_files("#file", str(photo))
            page.wait_for_selector(f"#result[data-status={status}]", timeout=30_000)
            name, detail = page.text_content("#bin-name"), page.text_content("#bin-confidence")
            if status == "ok":
                assert name == bins["hazardous"].en and detail.endswith("sure")
            else:
                assert name == OUTCOMES[status][0]
            if status == "unsure":
                assert " or " in detail or detail.startswith("Eggshell"), detail
            if status == "unknown":
                assert page.get_attribute("#bin", "data-bin") == ""
            page.click("#lang")
            assert page.text_content("#bin-name") == (bins["hazardous"].zh if status == "ok" else OUTCOMES[status][1])
            page.click("#lang")


def test_wrong_tell_us_records_the_right_class_and_is_hidden_without_a_store(browser, calibrated_garbage26_model,
                                                                           server, garbage26_data, tmp_path):
    """Under --min-confidence 0.99 the Eggshell photo is unsure: its choices come first; a grey
    square is unknown: "not garbage" leads. Both corrections reach the store, in both languages."""
    from PIL import Image

    from binwise.serving.feedback.stores import open_store

    with open_page(browser, server) as page:  # the module's server has no feedback store
        page.set_input_files("#file", str(sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0]))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        assert not page.is_visible("#wrong")

    grey = tmp_path / "grey.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(grey)
    eggshell = sorted((garbage26_data / "test" / "Eggshell").glob("*.jpg"))[0]
    db = tmp_path / "feedback" / "feedback.sqlite"
    with serving(calibrated_garbage26_model, tmp_path / "serve.log", "--log-level", "warning", "--min-confidence",
                 "0.99", "--feedback-db", str(db)) as (url, _), open_page(browser, url) as page:
        page.set_input_files("#file", str(eggshell))
        page.wait_for_selector("#result[data-status=unsure]", timeout=30_000)
        assert page.text_content("#wrong") == "Wrong? Tell us" and not page.is_visible("#feedback-form")
        page.click("#wrong")
        first_group = page.locator("#feedback-class optgroup").first
        assert first_group.get_attribute("label") == "The model's guesses"
        assert "Eggshell" in first_group.locator("option").all_text_contents()
        groups = page.locator("#feedback-class optgroup")
        assert [groups.nth(i).get_attribute("label") for i in range(1, 6)] == [b.en for b in GARBAGE26.bins] + [
            "Not garbage"]
        page.select_option("#feedback-class", str(GARBAGE26.classes_en.index("Eggshell")))
        page.fill("#feedback-note", "a broken eggshell")
        page.click("#feedback-send")
        page.wait_for_selector("#feedback-status[data-outcome=thanks]", timeout=30_000)
        assert page.text_content("#feedback-status") == "Thank you — recorded."
        page.click("#lang")
        assert page.text_content("#feedback-status") == "谢谢，已记录。"
        assert page.text_content("#wrong") == "识别错了？告诉我们"

        page.set_input_files("#file", str(grey))
        page.wait_for_selector("#result[data-status=unknown]", timeout=30_000)
        assert page.text_content("#feedback-status") == ""  # a new photo, a new feedback
        page.click("#wrong")
        assert page.locator("#feedback-class optgroup").first.get_attribute("label") == "不是垃圾"
        assert page.input_value("#feedback-class") == "not garbage"
        page.click("#feedback-send")
        page.wait_for_selector("#feedback-status[data-outcome=thanks]", timeout=30_000)
        page.click("#lang")
    store = open_store(str(db), create=False)
    rows = store.rows()
    store.close()
    assert [(r.predicted_status, r.corrected, r.note) for r in rows] == [("unsure", "Eggshell", "a broken eggshell"),
                                                                      ("unknown", "not garbage", "")]


def test_at_phone_width_a_picked_region_gives_its_bins_in_both_languages_and_is_remembered(
        browser, garbage26_model, garbage26_data, tmp_path):
    bottle = sorted((garbage26_data / "test" / "Glass Bottle").glob("*.jpg"))[0]
    with serving(garbage26_model, tmp_path / "serve.log", "--log-level", "warning", "--region", "germany",
                 "--region", "beijing") as (url, _), open_page(browser, url) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.is_visible("#region-picker")
        options = page.eval_on_selector("#region", "s => [...s.options].map(o => o.value)")
        assert options == ["garbage26", "germany", "beijing"] and page.input_value("#region") == "garbage26"
        box = page.locator("#region-picker").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, "the picker overflows a phone's width"

        page.select_option("#region", "germany")
        page.set_input_files("#file", str(bottle))
        page.wait_for_selector("#bin[data-bin=glass]", timeout=30_000)
        assert page.text_content("#bin-name") == "bottle glass (Altglas)"
        page.click("#lang")
        assert page.text_content("#bin-name") == "玻璃瓶" and page.text_content("#region-picker span") == "分类规则"
        page.click("#lang")
        page.select_option("#region", "garbage26")  # the same photo again, under the model's own bins
        page.wait_for_selector("#bin[data-bin=recyclable]", timeout=30_000)

        page.select_option("#region", "beijing")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#region") == "beijing"


def test_at_phone_width_kept_photos_need_consent_and_reviewers_label_them_in_both_languages(
        browser, garbage26_model, tmp_path):
    """--keep-uncertain: the page says so and a user can refuse; two reviewers, each with their own key,
    label the kept photo on /review at a phone's width, and it is decided."""
    from PIL import Image

    from binwise.serving.feedback import review
    from binwise.serving.feedback.stores import open_store

    photos = []
    for shade in (90, 160):  # no garbage: answered unsure or unknown
        photos.append(tmp_path / f"grey{shade}.png")
        Image.new("RGB", (300, 300), (shade, shade, shade)).save(photos[-1])
    keys = tmp_path / "reviewers.txt"
    keys.write_text("ana ana-key-0123456789abcdef\nbo bo-key-0123456789abcdef\n")
    db = tmp_path / "feedback" / "feedback.sqlite"
    with serving(garbage26_model, tmp_path / "serve.log", "--log-level", "warning", "--feedback-db", str(db),
                 "--keep-uncertain", "--reviewer-keys", str(keys), "--min-confidence", "0.999") as (url, _):
        with open_page(browser, url) as page:
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.is_visible("#keep") and "keeps photos it is unsure about" in page.text_content("#keep")
            page.check("#no-keep")  # refused: this photo must not be kept
            page.set_input_files("#file", str(photos[0]))
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            page.uncheck("#no-keep")
            page.set_input_files("#file", str(photos[1]))
            page.wait_for_function("document.querySelector('#photo').src.startsWith('blob:')")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            page.click("#lang")
            assert page.text_content("#keep label") == " 不要保留我的照片"
            page.click("#lang")
        store = open_store(str(db), create=False)
        kept = review.items(store)
        store.close()
        assert len(kept) == 1, "the refused photo was kept"

        for name, lang in (("ana", "en-US"), ("bo", "zh-CN")):
            page = browser.new_page(viewport={"width": 390, "height": 844}, locale=lang)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/review")
            page.wait_for_selector("body[data-ready=true]")
            page.fill("#key", f"{name}-key-0123456789abcdef")
            page.click("#login button")
            page.wait_for_selector("#item:not([hidden])", timeout=30_000)
            page.wait_for_function("document.querySelector('#photo').naturalWidth > 0")
            assert page.locator("#choices button").count() == 5
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page overflows a phone"
            title, not_garbage = page.text_content("h1"), page.text_content("#not-garbage")
            assert (title, not_garbage) == (("Label the photos the model was unsure about", "Not garbage")
                                            if lang == "en-US" else ("为模型拿不准的照片标注类别", "不是垃圾"))
            page.click("#lang")
            assert page.text_content("#not-garbage") == ("不是垃圾" if lang == "en-US" else "Not garbage")
            page.click("#not-garbage")
            page.wait_for_selector("#done:not([hidden])", timeout=30_000)
            page.close()
            assert not errors, f"JavaScript errors on the review page: {errors}"
    store = open_store(str(db), create=False)
    assert review.report(store).decided == {"not garbage": 1}
    store.close()

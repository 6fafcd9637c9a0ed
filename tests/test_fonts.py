"""Chinese in the figures: binwise's matplotlib font configuration draws real glyphs."""

import logging

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from font_checks import CHINESE, NO_GLYPH, requires_chinese_font

from binwise.evaluation import fonts


def rendered(text: str) -> np.ndarray:
    """``text`` drawn black on white in the default font family, as grey levels."""
    fig = plt.figure(figsize=(0.6, 0.6), dpi=100)
    fig.text(0.5, 0.5, text, fontsize=30, ha="center", va="center")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., 0].copy()
    plt.close(fig)
    return pixels


@requires_chinese_font
@pytest.mark.filterwarnings("ignore:Glyph 57344")  # the placeholder is drawn on purpose
def test_figures_draw_chinese_glyphs_not_placeholders():
    fonts.use_cjk_fallback()
    assert fonts.cjk_family() in matplotlib.rcParams["font.family"]
    placeholder = rendered(NO_GLYPH)
    glyphs = {c: rendered(c) for c in CHINESE}
    for c, pixels in glyphs.items():
        assert (pixels < 128).sum() > 20, f"{c!r} drew nothing"
        assert not np.array_equal(pixels, placeholder), f"{c!r} drew the missing-glyph placeholder"
    for i, a in enumerate(CHINESE):
        for b in CHINESE[i + 1:]:
            assert not np.array_equal(glyphs[a], glyphs[b]), f"{a!r} and {b!r} drew the same placeholder"
    # the fallback is per glyph: Latin text keeps the default sans-serif font
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        latin = rendered("Ag")
    assert np.array_equal(rendered("Ag"), latin)
    assert fonts.bilingual("Battery", "电池") == "Battery 电池"


def test_without_a_chinese_font_figures_name_classes_in_english_and_say_what_to_install(monkeypatch, caplog):
    from matplotlib import font_manager

    monkeypatch.setattr(fonts, "_chinese_families", lambda entries: set())
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: [])
    fonts.cjk_family.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="binwise"):
            assert fonts.bilingual("Battery", "电池") == "Battery"
            assert fonts.bilingual("Paper", "纸张") == "Paper"
        warnings = [r for r in caplog.records if r.name == "binwise.evaluation.fonts"]
        assert len(warnings) == 1 and "fonts-wqy-microhei" in warnings[0].getMessage()
    finally:
        fonts.cjk_family.cache_clear()

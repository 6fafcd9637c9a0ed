"""Whether the machine has a font for Chinese: the figure and page tests that look at Chinese
glyphs skip without one (scripts/setup-fonts.sh installs one), and fail when one is installed but
binwise or the page does not use it."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def chinese_font_installed() -> bool:
    if not shutil.which("fc-list"):
        return False
    listed = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, timeout=60)
    return bool(listed.stdout.strip())


requires_chinese_font = pytest.mark.skipif(
    not chinese_font_installed(),
    reason="no Chinese font installed (fc-list :lang=zh lists none); run scripts/setup-fonts.sh")

# Distinct characters of one Unicode block (CJK Unified Ideographs): a placeholder for missing
# glyphs (a box, or matplotlib's Last Resort sign for the block) draws them all alike.
CHINESE = "可回收物干垃圾"
# A private-use code point: no font here has a glyph for it, so it draws the placeholder.
NO_GLYPH = "\uE000"

"""Chinese in the figures: an installed font that draws Simplified Chinese becomes matplotlib's
fallback behind its default sans-serif font (matplotlib >= 3.6 falls back glyph by glyph, so
Latin text keeps its usual look). Without one, figures show the English names only and a log
warning says, once, which font to install."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

# A font counts as Chinese when it has all of these: the four bins' names and a few class names.
PROBE_CHARACTERS = "可回收物有害垃圾厨余干电池蛋壳"
INSTALL_HINT = ("no font for Chinese names found; figures show English names only. Install one, "
                "e.g. Debian's fonts-wqy-microhei (scripts/setup-fonts.sh does)")


@functools.cache
def cjk_family() -> str | None:
    """The matplotlib family name of an installed font that covers Simplified Chinese, or None."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    families = _chinese_families(manager.ttflist)
    if not families:
        # matplotlib caches its font list on first use: a font installed since then is missing
        known = {entry.fname for entry in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    pass  # unreadable or not a font FreeType knows: not one we can use anyway
        families = _chinese_families(manager.ttflist)
    if not families:
        log.warning(INSTALL_HINT)
        return None
    # prefer a proportional sans-serif Simplified face (e.g. "Noto Sans CJK SC" over "... JP",
    # "WenQuanYi Micro Hei" over its "Mono")
    return min(families, key=lambda name: ("Mono" in name, "Serif" in name, " SC" not in name, name))


def _chinese_families(entries) -> set[str]:
    import matplotlib
    from matplotlib.ft2font import FT2Font

    # matplotlib's own fonts have no Chinese, and its Last Resort font maps every character to a
    # placeholder glyph, which would pass the probe
    bundled = matplotlib.get_data_path()
    families, checked = set(), {}
    for entry in entries:
        if entry.fname.startswith(bundled):
            continue
        if entry.fname not in checked:
            try:
                font = FT2Font(entry.fname)
                checked[entry.fname] = all(font.get_char_index(ord(c)) for c in PROBE_CHARACTERS)
            except (OSError, RuntimeError, ValueError):
                checked[entry.fname] = False
        if checked[entry.fname]:
            families.add(entry.name)
    return families


def use_cjk_fallback() -> None:
    """Append the Chinese font (if any) to matplotlib's ``font.family``; call before drawing."""
    import matplotlib

    family = cjk_family()
    if family and family not in matplotlib.rcParams["font.family"]:
        matplotlib.rcParams["font.family"] = [*matplotlib.rcParams["font.family"], family]


def bilingual(en: str, zh: str = "") -> str:
    """'English 中文' where there is a Chinese name and a font to draw it, else the English name."""
    return f"{en} {zh}" if zh and cjk_family() else en

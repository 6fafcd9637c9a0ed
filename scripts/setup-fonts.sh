#!/usr/bin/env bash
# A font that draws Simplified Chinese, for the figures (matplotlib falls back to it glyph by
# glyph) and for the page in headless Chromium (tests/test_page_e2e.py). Debian's
# fonts-wqy-microhei is the smallest that covers it: a 1.6 MB download, 5 MB installed.
# Idempotent: does nothing when fontconfig already knows a Chinese font; never fails a setup.
set -euo pipefail

if command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family)" ]; then
    echo "setup-fonts: Chinese font present: $(fc-list :lang=zh family | cut -d, -f1 | sort | head -1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-fonts: no Chinese font; install one as root (Debian: apt-get install fonts-wqy-microhei)," \
         "else figures show English names only and the page shows boxes for Chinese"
    exit 0
fi
echo "setup-fonts: installing Debian's fonts-wqy-microhei"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei fontconfig >/dev/null; }; then
    echo "setup-fonts: apt-get could not install fonts-wqy-microhei; figures show English names only"
    exit 0
fi
echo "setup-fonts: $(fc-list :lang=zh family | cut -d, -f1 | sort | head -1)"

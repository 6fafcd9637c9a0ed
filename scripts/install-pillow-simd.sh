#!/usr/bin/env bash
# Replace Pillow with Pillow-SIMD in a virtual environment (default: .venv).
#
# Pillow-SIMD is a fork of Pillow with the same API whose resize uses AVX2: binwise's resize of a
# photo to the model's input takes about a quarter of the time, with the same pixels within one
# grey level (docs/inference.md#faster-preprocessing-with-pillow-simd). It is published as source
# only, so this builds it: it needs a C compiler and the headers of the codecs binwise reads with
# (Debian: build-essential libjpeg62-turbo-dev zlib1g-dev libwebp-dev libtiff-dev); without them
# the build would quietly leave out WebP or compressed TIFF. The wheel is built before Pillow is
# removed, so a failed build leaves the environment as it was. Installing binwise again brings Pillow back; run
# this again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
version=12.1.1.post0  # the newest Pillow-SIMD on 2026-11-28; it follows Pillow's releases with a delay
python=$venv/bin/python

fail() { echo "install-pillow-simd: $*" >&2; exit 1; }
[ -x "$python" ] || fail "no virtual environment at $venv (create it with scripts/setup.sh)"
grep -qw avx2 /proc/cpuinfo || fail "this CPU has no AVX2, so Pillow-SIMD would not be faster; Pillow stays"
command -v cc >/dev/null || fail "no C compiler (cc); install build-essential"
for header in jpeglib.h zlib.h webp/decode.h tiffio.h; do
    [ -e "/usr/include/$header" ] || [ -e "/usr/include/x86_64-linux-gnu/$header" ] ||
        fail "missing $header; install libjpeg62-turbo-dev zlib1g-dev libwebp-dev libtiff-dev (Debian) or the like"
done

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$python" -m pip install --quiet "setuptools>=77" wheel pybind11
# -mavx2: without it Pillow-SIMD builds its plain C paths only
CC="cc -mavx2" "$python" -m pip wheel --quiet --no-cache-dir --no-deps --no-build-isolation -w "$wheels" "pillow-simd==$version" ||
    fail "building pillow-simd $version failed (see above); Pillow was left installed"
# check the build in a scratch folder first (it shadows the installed Pillow there)
"$python" -m pip install --quiet --no-deps --target "$wheels/check" "$wheels"/pillow_simd-*.whl
PYTHONPATH="$wheels/check" "$python" - <<'EOF' || fail "the build is incomplete (see above); Pillow was left installed"
from PIL import Image, features
assert "post" in Image.__version__, f"imported Pillow {Image.__version__}, not the Pillow-SIMD build"
missing = [codec for codec in ("jpg", "zlib", "webp", "libtiff") if not features.check(codec)]
assert features.check_feature("libjpeg_turbo") and not missing, f"Pillow-SIMD was built without {missing or 'libjpeg-turbo'}"
EOF
for dist in pillow pillow-simd; do
    if "$python" -m pip show --quiet "$dist" 2>/dev/null; then "$python" -m pip uninstall --quiet -y "$dist"; fi
done
"$python" -m pip install --quiet --no-deps "$wheels"/pillow_simd-*.whl
"$python" -c "from PIL import Image; print(f'Pillow-SIMD {Image.__version__} installed')"

"""The ONNX inference path runs where torch is not installed."""

import json
import subprocess
import sys

from inference_models import garbage26_test_photos, tiny_onnx

# Block torch, torchvision and PyYAML as if they were not installed, run the CLI, then make sure none
# was imported on the way.
WITHOUT_TORCH = """
import sys
for name in ("torch", "torchvision", "yaml"):
    sys.modules[name] = None
from binwise.cli import main
rc = main(sys.argv[1:])
leaked = [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "yaml") and sys.modules[m] is not None]
assert not leaked, leaked
sys.exit(rc)
"""


def test_predict_with_an_onnx_model_does_not_import_torch():
    photos = garbage26_test_photos(3)
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "predict", str(tiny_onnx()),
                             *map(str, photos), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["source"] for r in rows] == [str(p) for p in photos]
    assert all(len(r["top"]) == 3 for r in rows)


def test_the_classifier_api_does_not_import_torch():
    code = WITHOUT_TORCH.replace("from binwise.cli import main\nrc = main(sys.argv[1:])", (
        "import binwise\n"
        "p = binwise.Classifier.load(sys.argv[1]).predict(sys.argv[2])\n"
        "print(p.top[0].en)\n"
        "rc = 0"))
    result = subprocess.run([sys.executable, "-c", code, str(tiny_onnx()), str(garbage26_test_photos(1)[0])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()

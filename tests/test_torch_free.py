"""The ONNX inference path runs where torch is not installed."""

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from binwise.paths import resolve_data
from binwise.serving.process import serving
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx

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


# --- the torch-free install: a wheel built from this checkout, installed into a clean venv ---

REPO = Path(__file__).resolve().parents[1]
# What the wheel must not pull in; pip fails to resolve if any dependency asks for them.
BLOCKED = "torch<0\ntorchvision<0\nkornia<0\n"


@pytest.fixture(scope="module")
def torch_free_python(tmp_path_factory) -> Path:
    """The python of a new venv holding only the wheel's plain install (no extras), torch blocked."""
    root = tmp_path_factory.mktemp("torch-free")
    source = root / "source"  # a copy, so building leaves nothing in the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), str(source)])
    (wheel,) = (root / "dist").glob("binwise_sort-*.whl")
    run([sys.executable, "-m", "venv", str(root / "venv")])
    python = root / "venv" / "bin" / "python"
    (root / "blocked.txt").write_text(BLOCKED)
    run([str(python), "-m", "pip", "install", "--quiet", "--constraint", str(root / "blocked.txt"), str(wheel)])
    assert run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"]).stdout.strip() == "None"
    return python


def run(command: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{command[:4]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def binwise(python: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(python), "-m", "binwise.cli", *map(str, args)], check=check)


def small_tree(root: Path, photos_per_class: int = 2) -> Path:
    """A garbage26 ImageFolder of links to a few real photos per class, train and test."""
    data = resolve_data()
    for split in ("train", "test"):
        for folder in sorted((data / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for photo in sorted(folder.glob("*.jpg"))[:photos_per_class]:
                (root / split / folder.name / photo.name).symlink_to(photo)
    return root


def test_every_command_that_needs_no_torch_works_in_a_torch_free_install(torch_free_python, tmp_path):
    python, onnx = torch_free_python, tiny_onnx()
    photos = garbage26_test_photos(3)

    info = binwise(python, "info", onnx).stdout
    assert "ONNX, fp32" in info and "Battery 电池" in info
    assert "parameters" in binwise(python, "info", tiny_model()).stdout  # metadata needs no torch either

    grid = tmp_path / "grid.png"
    predicted = json.loads(binwise(python, "predict", onnx, *photos, "--json", "--grid", grid).stdout)
    assert [row["source"] for row in predicted] == list(map(str, photos)) and grid.stat().st_size > 10_000

    data = small_tree(tmp_path / "data")
    report = binwise(python, "eval", onnx, data, "--out", tmp_path / "eval").stdout
    assert "52 photos" in report and (tmp_path / "eval" / "confusion.png").is_file()
    checked = json.loads(binwise(python, "check-data", data, "--json").stdout)
    assert checked["splits"]["test"]["photos"] == 52 and not checked["unreadable"]
    bench = binwise(python, "bench", onnx, "--data", data, "--photos", "8", "--runs", "3").stdout
    assert "onnx-fp32" in bench and "img/s" in bench

    with serving(onnx, tmp_path / "serve.log", python=str(python)) as (url, _):
        with urllib.request.urlopen(url + "/v1/model", timeout=30) as response:
            assert json.load(response)["classes"][22]["en"] == "Battery"

    # commands that need torch say which extra, in one line, and exit 2
    for command in (["train", data, "--run-dir", tmp_path / "run"], ["predict", tiny_model(), photos[0]],
                    ["export", tiny_model(), "--format", "onnx", "--out", tmp_path / "x.onnx"]):
        result = binwise(python, *command, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "'train' extra" in result.stderr


def test_explain_with_an_onnx_model_says_in_one_line_that_it_needs_the_safetensors_file(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "explain", str(tiny_onnx()),
                             str(garbage26_test_photos(1)[0]), "--out", str(tmp_path / "cam.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Grad-CAM needs the binwise .safetensors model file" in lines[0], result.stderr
    assert not (tmp_path / "cam.png").exists()

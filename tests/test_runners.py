"""One table of the ways to run a model file, read by every command; the library leaves the process alone."""

import json
import subprocess
import sys

import pytest
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx

from binwise.cli import build_parser, main
from binwise.errors import BinwiseError
from binwise.inference.classifier import BACKENDS, RUNNERS, Classifier


@pytest.mark.parametrize("command", ["predict", "serve"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_runner_in_the_table_is_a_backend_of_predict_and_serve(command, backend):
    argv = [command, "model.safetensors"] + (["photo.jpg"] if command == "predict" else []) + ["--backend", backend]
    assert build_parser().parse_args(argv).backend == backend
    assert set(RUNNERS) <= set(BACKENDS)


@pytest.mark.parametrize("backend, model", [("torch", tiny_model), ("onnxruntime", tiny_onnx)])
def test_a_backend_named_on_the_command_line_runs_its_file(backend, model, capsys):
    photo = garbage26_test_photos(1)[0]
    assert main(["predict", str(model()), str(photo), "--backend", backend, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["en"]


def test_a_backend_refuses_a_file_of_another_runner():
    with pytest.raises(BinwiseError, match="needs an exported .tflite file"):
        Classifier.load(tiny_onnx(), backend="litert")
    with pytest.raises(BinwiseError, match="needs a binwise .safetensors model"):
        Classifier.load(tiny_onnx(), backend="torch")


def test_loading_a_classifier_leaves_the_allocator_and_torch_threads_as_they_were():
    """In a fresh process: torch's thread count is unchanged by Classifier.load(threads=1), and a
    freed 256 MiB block still goes back to the kernel (keep_freed_memory would keep it)."""
    script = f"""
import numpy as np, torch
from binwise.inference.classifier import Classifier

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

torch.set_num_threads(2)
Classifier.load({str(tiny_model())!r}, threads=1)
Classifier.load({str(tiny_onnx())!r}, threads=1)
assert torch.get_num_threads() == 2, torch.get_num_threads()
before = rss_mib()
block = np.ones(256 * 2**20, np.uint8)
del block
assert rss_mib() - before < 64, (before, rss_mib())
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]

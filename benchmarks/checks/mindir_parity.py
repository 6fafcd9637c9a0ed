"""Does the MINDIR export compute binwise's logits? A model file against its MINDIR run in MindSpore.

    .venv/bin/python benchmarks/checks/mindir_parity.py MODEL.safetensors [--data DIR]

Exports MODEL with ``binwise export --format mindir`` (MindSpore from .venv-mindspore or
$BINWISE_MINDSPORE_PYTHON), runs the MINDIR on every test photo of the dataset in MindSpore
(tests/mindspore_reference/crosscheck.py) and prints the relative L2 distance of its logits from
binwise's and how often the top-1 class agrees. Goal: relative L2 <= 1e-4.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from binwise.export.mindir_file import export_mindir, mindspore_python
from binwise.images import is_image_file, load_for_model
from binwise.model.file import load_model
from binwise.paths import resolve_data

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", help="dataset whose test/ photos are run (default: garbage26)")
    args = parser.parse_args(argv)
    model_file = load_model(args.model)
    photos = sorted(p for p in (resolve_data(args.data) / "test").rglob("*") if is_image_file(p))
    pixels = np.stack([load_for_model(p, model_file.preprocessing) for p in photos])
    with torch.no_grad():
        expected = model_file.model(torch.from_numpy(pixels)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_mindir(args.model, work / "model.mindir")
        np.save(work / "input.npy", pixels)
        job = {"action": "mindir", "mindir": str(work / "model.mindir"), "input": str(work / "input.npy"),
               "logits": str(work / "logits.npy"), "user_info": str(work / "user_info.json")}
        (work / "jobs.json").write_text(json.dumps([job]))
        subprocess.run([mindspore_python(), "crosscheck.py", str(work / "jobs.json")],
                       cwd=REPO / "tests" / "mindspore_reference", check=True, capture_output=True)
        got = np.load(work / "logits.npy")
    error = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    print(f"{len(photos)} photos: relative L2 {error:.2e}, same top-1 {(got.argmax(1) == expected.argmax(1)).mean():.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

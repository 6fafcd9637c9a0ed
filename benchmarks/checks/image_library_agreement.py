"""Do two Python environments, say one with Pillow and one with Pillow-SIMD, see the same photos?

    python benchmarks/checks/image_library_agreement.py --python .venv/bin/python \
        --python .venv-simd/bin/python MODEL [MODEL...] [--data DIR] [--json out.json]

Runs itself in each environment on every test photo of the dataset (default: garbage26): the
224x224 crop that environment's image library makes, and each model's top-1 class. Prints, for
the second environment against the first: the largest pixel difference in grey levels, the share
of pixels that differ, and per model how many photos get a different top-1 class.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def dump(out: str, models: list[str], data: str | None) -> None:
    """In one environment: crops and top-1 classes of the test photos, saved to ``out`` (.npz)."""
    from binwise.evaluation.bench import image_library
    from binwise.images import is_image_file
    from binwise.paths import resolve_data
    from binwise.inference.classifier import Classifier

    photos = sorted(str(p) for p in (resolve_data(data) / "test").rglob("*") if is_image_file(p))
    top1 = {}
    for model in models:  # each model crops with its own preprocessing; the last one's crops are kept
        classifier = Classifier.load(model)
        crops = np.stack([classifier.load_image(p) for p in photos])
        top1[model] = classifier.predict_arrays(crops).argmax(1).tolist()
    np.savez(out, crops=crops, meta=json.dumps({"library": image_library(), "photos": photos, "top1": top1}))


def compare(pythons: list[str], models: list[str], data: str | None) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, python in enumerate(pythons):
            out = str(Path(tmp) / f"{i}.npz")
            command = [python, __file__, "--dump", out, *models] + (["--data", data] if data else [])
            subprocess.run(command, check=True)
            with np.load(out) as saved:
                runs.append((saved["crops"], json.loads(str(saved["meta"]))))
    (crops_a, meta_a), (crops_b, meta_b) = runs
    levels = np.abs(crops_a.astype(np.int16) - crops_b)
    return {"environments": [meta_a["library"], meta_b["library"]], "photos": len(meta_a["photos"]),
            "crop_max_levels": int(levels.max()), "crop_pixels_differing": float((levels > 0).mean()),
            "top1_disagreements": {m: sum(a != b for a, b in zip(meta_a["top1"][m], meta_b["top1"][m]))
                                   for m in models}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model files (.safetensors or .onnx)")
    parser.add_argument("--python", action="append", default=[], help="an environment's python (twice)")
    parser.add_argument("--data", help="dataset with a test/ folder (default: binwise.paths.resolve_data)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--dump", help=argparse.SUPPRESS)  # the child run in one environment
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.dump, args.models, args.data)
        return 0
    if len(args.python) != 2:
        parser.error("give --python twice: the two environments to compare")
    report = json.dumps(compare(args.python, args.models, args.data), indent=2)
    print(report)
    if args.json:
        Path(args.json).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

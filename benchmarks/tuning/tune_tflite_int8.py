"""Choosing the TFLite int8 recipe on validation photos, never on the test split.

    PYTHONPATH=src .venv-litert/bin/python benchmarks/tuning/tune_tflite_int8.py --model runs/garbage26/model.safetensors

Needs a Python with the ``tflite-export`` extra. A model trained on all of garbage26's train split
has seen every train photo, so its top two classes are far apart on them and int8 agrees with fp32
there whatever the recipe (measured: 400 of 400 before any change). So the variants are chosen on
a validation model: the same probe (``binwise train --mode head``) trained on garbage26's train
split less ``held_out.VALIDATION_SHARE`` of each class, which it never sees (with ``--folds``, on
that many disjoint such splits, each with its own model, and over all), calibrated on its own train
photos (as ``binwise export --int8`` does). Each variant (ai-edge-quantizer recipes: what is int8,
int16 or float; absolute min/max or the quantizer's moving average; the number of calibration
photos) is measured there on the held-out photos and their mirror images (twice the photos, to
tell variants apart: the ones that differ are near ties), then applied to ``--model`` and measured on the
test split (reported, never used to choose): how often int8's top-1 agrees with fp32's, the
accuracy drop, the mean KL divergence of int8's class probabilities from fp32's, the logits'
relative L2 change (overall and the median photo's), the similarity's largest change, the
operators left in float, the file size and a rough speed (LiteRT, 2 threads, batch 32; noisy on a
shared machine). The "source grid" variants put the backbone's weights back on the grid of the
uint8 file they came from (``binwise.export.tflite_grid``), as ``binwise export --int8`` does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from binwise.export.onnx_file import DEFAULT_CALIBRATION_COUNT, calibration_photos
from binwise.export.tflite_file import converted, default_int8_recipe, quantize_int8
from binwise.images import load_crop
from binwise.model.file import load_model
from binwise.inference.tflite_runner import operator_names
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

from common import FOLDS, over_folds, validation_model, validation_trees
from tune_int8_weights import closeness

REPO = Path(__file__).resolve().parents[2]
THREADS = 2


def recipe_with(base: list[dict], operation: str, activation_bits: int | None = None,
                float_ops: bool = False, scope: str = ".*") -> list[dict]:
    """``base`` with every ``operation`` (a TFLite operator name) whose output tensor's name
    matches ``scope`` (a regex) either left in float or given ``activation_bits``-bit symmetric
    activations."""
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(base)
    name = qtyping.TFLOperationName(operation)
    if float_ops:
        manager.add_quantization_config(scope, name, algorithm_key="no_quantize")
    else:
        config = qtyping.OpQuantizationConfig(
            activation_tensor_config=qtyping.TensorQuantizationConfig(activation_bits, symmetric=True),
            weight_tensor_config=qtyping.TensorQuantizationConfig(8, symmetric=True,
                                                                 granularity=qtyping.QuantGranularity.CHANNELWISE),
            compute_precision=qtyping.ComputePrecision.INTEGER)
        manager.add_quantization_config(scope, name, config)
    return manager.get_quantization_recipe()


# ai-edge-quantizer matches a recipe's scope regex against an op's output tensor names joined by
# ";" (with a trailing ";"); litert-torch names each tensor by the torch modules that made it.
STEM = r".*Sequential_features/binwise\.model\.ConvBNReLU_0/.*"  # features[0]: pad, conv
# the pixel normalisation's MUL and ADD, named by the wrapper module alone (a model with the
# similarity output; the scope numbers follow the converter's order)
NORMALISATION = r"ScoredModel_module;[89];$"


def stem_in_float(base: list[dict], normalisation: bool) -> list[dict]:
    """``base`` with the first convolution (and its padding) in float; with ``normalisation``,
    the MUL and ADD in front of it too, so that it reads the normalised pixels unrounded."""
    recipe = base
    for op in ("PAD", "TRANSPOSE", "CONV_2D"):
        recipe = recipe_with(recipe, op, float_ops=True, scope=STEM)
    for op in ("MUL", "ADD") if normalisation else ():
        recipe = recipe_with(recipe, op, float_ops=True, scope=NORMALISATION)
    return recipe


def variants() -> dict[str, dict]:
    """name -> quantize_int8 options (and the calibration photo count)."""
    from ai_edge_quantizer import recipe

    base = default_int8_recipe()
    minmax = {"calibration": "minmax"}  # the default until 2026-12-03
    before = {**minmax, "source_grid": False}  # the quantizer's own per-channel weight scales
    return {
        "a8w8 min/max, 300 photos (before)": before,
        "a8w8 moving average": {**before, "calibration": "moving-average"},
        "a8w8 min/max, 1000 photos": {**before, "photos": 1000},
        "a8w8, symmetric activations": {**before, "int8_recipe": [
            {**r, "op_config": {**r["op_config"], "activation_tensor_config": {
                **r["op_config"]["activation_tensor_config"], "symmetric": True}}} for r in base]},
        "a8w8, fully connected in float": {**before, "int8_recipe": recipe_with(base, "FULLY_CONNECTED",
                                                                                float_ops=True)},
        "a8w8, fully connected a16w8": {**before, "int8_recipe": recipe_with(base, "FULLY_CONNECTED",
                                                                             activation_bits=16)},
        "a8w8, mean (pooling) and fully connected a16w8": {**before, "int8_recipe": recipe_with(
            recipe_with(base, "FULLY_CONNECTED", activation_bits=16), "MEAN", activation_bits=16)},
        "a16w8 everywhere": {**before, "int8_recipe": recipe.static_wi8_ai16()},
        # weights back on the grid of the uint8 file the backbone came from (binwise.export.tflite_grid)
        "a8w8, weights on their source grid": minmax,
        "source grid, least-Lp ranges (default)": {"calibration": "lp"},
        "source grid, moving average": {"calibration": "moving-average"},
        "source grid, depthwise convolutions in float": {**minmax, "int8_recipe": recipe_with(
            base, "DEPTHWISE_CONV_2D", float_ops=True)},
        "source grid, first convolution in float": {**minmax, "int8_recipe": stem_in_float(base, normalisation=False)},
        "source grid, normalisation and first convolution in float": {**minmax, "int8_recipe": stem_in_float(
            base, normalisation=True)},
        "source grid, fully connected a16w8": {**minmax, "int8_recipe": recipe_with(base, "FULLY_CONNECTED",
                                                                          activation_bits=16)},
    }


def run(model: bytes, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every signature output of ``model`` on ``pixels``, dequantized, by name; and the seconds taken."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=THREADS)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    outputs, start = [], time.perf_counter()
    for i in range(0, len(pixels), 32):
        outputs.append(runner(**{input_name: pixels[i:i + 32]}))
    seconds = time.perf_counter() - start
    details = runner.get_output_details()
    result = {}
    for name, detail in details.items():
        values = np.concatenate([o[name] for o in outputs]).astype(np.float32)
        scale, zero_point = detail["quantization"]
        result[name] = (values - zero_point) * scale if scale else values
    return {**result, "seconds_per_photo": seconds / len(pixels)}


def float_operators(model: bytes) -> dict[str, int]:
    """Operators computing in float (a float32 output), by name: what is not integer."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(model, 0)
    names = operator_names(flatbuffer, schema)
    graph = flatbuffer.Subgraphs(0)
    ops = (graph.Operators(i) for i in range(graph.OperatorsLength()))
    return dict(Counter(names[op.OpcodeIndex()] for op in ops
                        if graph.Tensors(op.Outputs(0)).Type() == schema.TensorType.FLOAT32))


def measure(model_path: Path, data: Path, names: list[str], mirrored: bool = False) -> dict:
    """Every variant in ``names`` quantizing ``model_path`` (calibrated on ``data``'s train split),
    against fp32 on ``data``'s test split (and, ``mirrored``, its mirror images too)."""
    from checks.tflite_parity import test_photos

    model_file = load_model(model_path)
    pre = model_file.preprocessing
    photos, labels = test_photos(model_file, data)
    pixels = np.stack([load_crop(p, pre) for p in photos])
    if mirrored:
        pixels, labels = np.concatenate([pixels, pixels[:, :, ::-1]]), np.concatenate([labels, labels])
    fp32 = converted(model_file)
    want = run(fp32, pixels)
    results = {"model": str(model_path), "photos": len(pixels),
               "fp32": {"file_mb": len(fp32) / 1e6, "ms_per_photo": 1e3 * want["seconds_per_photo"],
                        "top1_accuracy": float((want["logits"].argmax(1) == labels).mean())},
               "variants": {}}
    for name in names:
        options = dict(variants()[name])
        calibration = calibration_photos(data, options.pop("photos", DEFAULT_CALIBRATION_COUNT))
        start = time.perf_counter()
        int8 = quantize_int8(fp32, calibration, pre, **options)
        try:
            got = run(int8, pixels)
        except RuntimeError as e:  # LiteRT refusing the quantized graph
            results["variants"][name] = {"error": str(e).splitlines()[-1]}
            print(model_path.name, name, results["variants"][name], flush=True)
            continue
        row = {"calibration_photos": len(calibration), "quantize_seconds": time.perf_counter() - start,
               "file_mb": len(int8) / 1e6, "float_operators": float_operators(int8),
               **closeness(got["logits"], want["logits"]),
               "accuracy_drop_points": 100 * float((want["logits"].argmax(1) == labels).mean()
                                                   - (got["logits"].argmax(1) == labels).mean()),
               "logits_relative_l2": float(np.linalg.norm(got["logits"] - want["logits"])
                                           / np.linalg.norm(want["logits"])),
               "ms_per_photo": 1e3 * got["seconds_per_photo"]}
        if "similarity" in want:
            row["similarity_max_change"] = float(np.abs(got["similarity"] - want["similarity"]).max())
        results["variants"][name] = row
        print(model_path.name, name, json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a binwise .safetensors model trained on garbage26")
    parser.add_argument("--only", nargs="*", help="run only these variants (by name)")
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "binwise-held-out",
                        help="where the validation tree and model go (kept for reruns; the same as "
                             "tune_int8_weights.py's, so both int8 formats are chosen on one model)")
    parser.add_argument("--folds", type=int, default=1,
                        help=f"measure on this many disjoint validation folds (1-{FOLDS}; each trains its own "
                             "validation model), and over all of them")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" /
                                              f"tune_tflite_int8_{datetime.date.today()}.json"))
    args = parser.parse_args()

    from binwise.paths import resolve_data

    names = args.only or list(variants())
    folds = [measure(validation_model(tree), tree, names, mirrored=True)
             for tree in validation_trees(args.tree, args.folds)]
    results = {"date": str(datetime.date.today()),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
               "validation": folds[0]}  # fold 0, the tree of earlier runs
    if len(folds) > 1:
        results["validation_folds"] = folds
        results["validation_over_folds"] = over_folds([f["variants"] for f in folds], [f["photos"] for f in folds])
        for name, row in results["validation_over_folds"].items():
            print("all folds", name, json.dumps(row), flush=True)
    results["test"] = measure(Path(args.model), resolve_data(), names)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Exporting a model file to ONNX (fp32, or int8 by static quantization) for torch-free inference.

The ONNX file takes what ``binwise.images.load_crop`` gives: resized, centre-cropped RGB pixels as
uint8, (batch, H, W, 3), the layout cameras and phone image APIs hand out. Normalisation is the
graph's first step, so no deployment can normalise differently from training. The file carries
the model file's JSON metadata in ``metadata_props`` under ``binwise``, plus an ``export`` section
(precision, input, source model), so ``Classifier.load("x.onnx")`` knows its classes, bins and
preprocessing. The batch dimension is dynamic.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import BinwiseError
from ..images import is_image_file, load_crop
from ..model.metadata import GRAPH_INPUT, GRAPH_LOGITS, GRAPH_SIMILARITY, METADATA_KEY
from ..preprocessing import Preprocessing, with_pixel_input
from .activation_ranges import lp_ranges
from .weight_grid import uint8_grid

OPSET = 17
INPUT_DESCRIPTION = "uint8 RGB pixels (batch, height, width, 3), resized and centre-cropped; normalised in the graph"
DEFAULT_CALIBRATION_COUNT = 300


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike, int8: bool = False,
                calibration_dir: str | os.PathLike | None = None,
                calibration_count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0,
                calibration: str = "lp", int8_format: str = "qdq", weight_range: str = "unsigned",
                depthwise: str = "float", first_conv: str = "float", activations: str = "unsigned") -> Path:
    """Write ``model_path`` (a binwise .safetensors file) as ONNX to ``out``.

    With ``int8``, weights (per channel) and activations are quantized to 8 bits, with
    activation ranges calibrated on ``calibration_count`` photos sampled evenly from
    ``calibration_dir`` (an ImageFolder tree; by default the training split of the dataset
    ``binwise.paths.resolve_data`` finds) by ``calibration`` (see CALIBRATIONS). ``int8_format`` (see
    INT8_FORMATS): "qdq", standard ONNX operators only, or "qoperator", onnxruntime's fused
    operators (some in its own com.microsoft domain). ``weight_range``: see WEIGHT_RANGES;
    ``depthwise`` and ``first_conv``: see CONV_PRECISIONS; ``activations``: see ACTIVATION_RANGES.
    """
    import torch

    from ..fileio import atomic_write, sha256_of_file
    from ..model.file import load_model

    model_file = load_model(model_path)
    meta = model_file.metadata()
    if int8 and int8_format not in INT8_FORMATS:
        raise BinwiseError(f"unknown int8 format {int8_format!r}; choose one of {', '.join(INT8_FORMATS)}")
    if int8 and weight_range not in WEIGHT_RANGES:
        raise BinwiseError(f"unknown weight range {weight_range!r}; choose one of {', '.join(WEIGHT_RANGES)}")
    for layers, precision in (("depthwise", depthwise), ("first convolution", first_conv)):
        if int8 and precision not in CONV_PRECISIONS:
            raise BinwiseError(f"unknown {layers} precision {precision!r}; choose one of {', '.join(CONV_PRECISIONS)}")
    if int8:
        check_calibration(calibration)
        check_activation_range(activations, weight_range)
    meta["export"] = {"format": "onnx", "precision": "int8" if int8 else "fp32", "opset": OPSET,
                      **({"calibration": calibration, "int8_format": int8_format, "weight_range": weight_range, "depthwise": depthwise,
                          "first_conv": first_conv, "activations": activations} if int8 else {}),
                      "input": INPUT_DESCRIPTION,
                      "source": f"{Path(model_path).name}@{sha256_of_file(model_path)[:12]}"}
    size = model_file.preprocessing.input_size
    output_names = [GRAPH_LOGITS] if model_file.reference_features is None else [GRAPH_LOGITS, GRAPH_SIMILARITY]
    with tempfile.TemporaryDirectory() as tmp:
        traced, fp32 = Path(tmp) / "traced.onnx", Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            # the TorchScript exporter warns about shape arithmetic it traces as constants; the
            # input size is fixed by the model's preprocessing, so those constants are right
            warnings.simplefilter("ignore")
            torch.onnx.export(exported_module(model_file), torch.zeros(1, size, size, 3, dtype=torch.uint8),
                              str(traced), dynamo=False, opset_version=OPSET, input_names=[GRAPH_INPUT],
                              output_names=output_names, dynamic_axes={name: {0: "batch"} for name in
                                                                       [GRAPH_INPUT, *output_names]})
        simplify(traced, fp32)
        if int8:
            images = calibration_photos(calibration_dir, calibration_count, seed)
            exported = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, exported, images, model_file.preprocessing, calibration, int8_format, weight_range,
                          depthwise, first_conv, activations)
        else:
            exported = fp32
        atomic_write(out, lambda tmp_out: _write_with_metadata(exported, tmp_out, meta))
    return Path(out)


def exported_module(model_file):
    """The model behind its pixel normalisation; with the training photos' features in the model
    file, also the photo's similarity to the nearest of them (``novelty``), so that the export can
    call a photo unknown as the model file does."""
    pixel_model = with_pixel_input(model_file.model, model_file.preprocessing)
    if model_file.reference_features is None:
        return pixel_model
    from ..model.novelty import with_similarity

    return with_similarity(pixel_model, model_file.model, model_file.reference_features)


def simplify(source: Path, out: Path) -> None:
    """Fold constants with onnxruntime's basic graph optimisations (standard ONNX operators only,
    so the file stays portable), then merge zero Pad nodes into the convolutions they feed."""
    import onnx

    from ..inference.onnx_runner import onnx_session

    onnx_session(source, source, optimization="basic", optimized_copy=out)
    model = onnx.load(str(out))
    if fold_pads_into_convs(model.graph):
        used = {name for node in model.graph.node for name in node.input}
        for unused in [t for t in model.graph.initializer if t.name not in used]:
            model.graph.initializer.remove(unused)  # the folded Pads' pad amounts
    onnx.save(model, str(out))


def fold_pads_into_convs(graph) -> int:
    """Remove each constant zero Pad of the two spatial axes that feeds one Conv, moving its
    padding into the Conv's own (possibly asymmetric) ``pads``; returns how many were folded.

    TF 'SAME' stride-2 convolutions export as Pad (0 before, 1 after) + Conv, and onnxruntime runs
    that Pad as a copy of its own: 16.5% of the int8 model's time on garbage26's model, measured
    with onnxruntime's profiler.
    """
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    folded = []
    for pad in graph.node:
        if pad.op_type != "Pad" or len(pad.input) > 3 or pad.output[0] in graph_outputs:
            continue
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        pads = constants.get(pad.input[1]) if len(pad.input) > 1 else None
        value = constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        users = consumers[pad.output[0]]
        if (mode != b"constant" or pads is None or value is None or np.any(value != 0) or pads.shape != (8,)
                or np.any(pads[[0, 1, 4, 5]]) or len(users) != 1 or users[0].op_type != "Conv"):
            continue
        conv = users[0]
        attributes = {a.name: a for a in conv.attribute}
        if "auto_pad" in attributes and helper.get_attribute_value(attributes["auto_pad"]) not in (b"NOTSET", b""):
            continue
        before = list(attributes["pads"].ints) if "pads" in attributes else [0, 0, 0, 0]
        merged = [before[0] + int(pads[2]), before[1] + int(pads[3]), before[2] + int(pads[6]), before[3] + int(pads[7])]
        if "pads" in attributes:
            conv.attribute.remove(attributes["pads"])
        conv.attribute.append(helper.make_attribute("pads", merged))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    return len(folded)


def _write_with_metadata(onnx_path: Path, out: str, meta: dict) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, ensure_ascii=False)
    model.producer_name = "binwise"
    # onnxruntime's optimiser declares every domain it knows (com.microsoft, org.pytorch.aten, ...);
    # declare only those the nodes use, so other runtimes see a standard-only model as one
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, out)


def calibration_photos(data_dir: str | os.PathLike | None, count: int, seed: int = 0) -> list[Path]:
    """``count`` photos spread evenly over the classes of an ImageFolder tree (its train/ split
    if it has one), chosen reproducibly."""
    from ..paths import resolve_data

    root = resolve_data(data_dir)
    if (root / "train").is_dir():
        root = root / "train"
    per_class = [sorted(p for p in d.rglob("*") if is_image_file(p)) for d in sorted(root.iterdir()) if d.is_dir()]
    per_class = [photos for photos in per_class if photos]
    if not per_class:
        raise BinwiseError("no calibration photos (expected class folders of images)", root)
    rng = random.Random(seed)
    for photos in per_class:
        rng.shuffle(photos)
    # round-robin over classes so every class is represented
    chosen = [photos[i] for i in range(max(map(len, per_class))) for photos in per_class if i < len(photos)]
    return chosen[:count]


# How each activation tensor's range is taken from the calibration photos: "lp", the range of least
# Lp quantization error (activation_ranges; clips the rarest values to round all others more
# finely), the default; "minmax", the absolute min/max over all photos; "moving-average", a moving
# average of each photo's min and max. Chosen on five validation folds (benchmarks/tuning/tune_int8_weights.py
# --folds 5, docs/benchmarks.md): "lp" had the least KL divergence from fp32 on every fold.
CALIBRATIONS = ("lp", "minmax", "moving-average")
# "qdq": QuantizeLinear / DequantizeLinear pairs around float operators, all in the standard ONNX
# domain, so onnxruntime-web and -mobile and OpenVINO run it (each fuses the pairs into its own
# int8 kernels). "qoperator": onnxruntime's QLinear* operators, some only in its
# com.microsoft domain (QLinearAdd, QLinearGlobalAveragePool).
INT8_FORMATS = ("qdq", "qoperator")
# How the weights are stored: "unsigned", uint8 with a zero point, one scale per tensor; "reduced",
# int8 per channel in 7 bits ([-64, 64]); "full", int8 per channel in all 8 bits. Measured on a
# validation model's 440 held-out photos (benchmarks/tuning/tune_int8_weights.py), on a CPU without VNNI:
# - onnxruntime's x86 int8 kernels without VNNI (AVX2: AMD before Zen 4, older Intel) add pairs of
#   uint8 x int8 products in int16, which saturates with full-range int8 weights ("full": 90.9% of
#   photos answered as fp32 answers them, with the depthwise convolutions in float); 7 bits avoid it
#   but are coarse (97.5%).
# - binwise's backbone comes from a uint8 TFLite file, so each layer's weights lie on that file's
#   grid: one step and one zero point per tensor. "unsigned" gives each such layer its grid's own
#   scale and zero point (weight_grid_overrides), so its weights are exact; weights off a grid
#   (the trained head, a fine-tuned backbone) get 8 bits over the layer's range, like the source
#   file. With the depthwise and first convolutions in float, 99.2% of the 880 held-out and
#   mirrored photos; uint8 per channel was further (98.9% of the 440, tune_int8_depthwise_2026-12-02).
# "unsigned" is the default; onnxruntime runs uint8 x uint8 at about 85% of "reduced"'s speed on
# that CPU (no faster kernel exists for it). TensorRT needs symmetric int8 weights ("full") and
# activations (ACTIVATION_RANGES).
WEIGHT_RANGES = ("unsigned", "reduced", "full")
# Convolutions left in float ("float", the default: dequantized around them) or quantized
# ("int8"). MobileNetV2's 17 depthwise convolutions have 9 weights a filter, and int8 hurt them
# most: on the validation model leaving them in float raised agreement with fp32 from 95.7% to
# 97.5% with "reduced" weights, at no measurable cost in speed and 0.2 MB. The first convolution
# reads the normalised pixels (whose 256 levels, p / 127.5 - 1 for [-1, 1], the calibrated uint8
# grid does not meet); of the pointwise and first convolutions, each left in float in turn, it was
# the one int8 hurt most. In float (3.6% of the model's multiply-adds) it took agreement with
# fp32 from 98.75% to 99.2% with "unsigned" (mean KL 0.0026 -> 0.0016), and from 90.6% to 97.5%
# with "full", whose saturation it held most of.
CONV_PRECISIONS = ("float", "int8")
# Activations: "unsigned", uint8 with a zero point per tensor (the default: a ReLU6 output uses all
# 256 levels); "symmetric", int8 with zero point 0 and float biases, the only form TensorRT builds
# an engine from (its ONNX parser takes symmetric int8 only, and rejects a DequantizeLinear of an
# int32 bias: "only activation types allowed as input to this layer"). It needs symmetric weights
# ("full", TensorRT's [-127, 127], or "reduced"). On onnxruntime's CPU it is a simulation of that
# engine, not a fast path: see docs/inference.md.
ACTIVATION_RANGES = ("unsigned", "symmetric")


def check_calibration(calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise BinwiseError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATIONS)}")


def check_activation_range(activations: str, weight_range: str) -> None:
    if activations not in ACTIVATION_RANGES:
        raise BinwiseError(f"unknown int8 activations {activations!r}; choose one of {', '.join(ACTIVATION_RANGES)}")
    if activations == "symmetric" and weight_range == "unsigned":
        raise BinwiseError("symmetric int8 activations need symmetric weights: add --int8-weights full "
                           "(TensorRT's form) or reduced")


def quantize_int8(fp32_path: str | os.PathLike, out: str | os.PathLike, images: list, pre: Preprocessing,
                  calibration: str = "lp", int8_format: str = "qdq", weight_range: str = "unsigned",
                  depthwise: str = "float", first_conv: str = "float", activations: str = "unsigned") -> None:
    """Static int8 quantization with onnxruntime, calibrated on ``images`` (see ``export_onnx``, which
    checks the options before it exports)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = [{GRAPH_INPUT: load_crop(p, pre)[None]} for p in images]

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(feeds)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        # fold constants and infer shapes first, as onnxruntime recommends before quantizing
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        # The calibration was chosen by
        # benchmarks/tuning/tune_int8_calibration.py on training photos outside the calibration set: the
        # absolute min/max kept int8 closer to fp32 than a moving average on three models.
        # The normalisation in front of the first Conv stays float (as quantized Mul/Add it took
        # half of the int8 model's time), or goes where the pixels are the quantized input.
        import onnx

        graph = onnx.load(str(prepared)).graph
        *normalisation, first = chain_to_first_conv(graph)
        quantized = Path(tmp) / "quantized.onnx"
        quant_format = QuantFormat.QDQ if int8_format == "qdq" else QuantFormat.QOperator
        unsigned = weight_range == "unsigned"
        symmetric = activations == "symmetric"
        overrides = weight_grid_overrides(graph) if unsigned else {}
        if calibration == "lp":
            overrides.update({name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
                              for name, (lo, hi) in lp_ranges(activations_of(prepared), feeds).items()})
        quantize_static(str(prepared), str(quantized), Photos(), quant_format=quant_format,
                        per_channel=not unsigned, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                        reduce_range=weight_range == "reduced",
                        nodes_to_exclude=normalisation + ([first] if first_conv == "float" else [])
                        + (depthwise_convs(graph) if depthwise == "float" else []),
                        extra_options={"CalibMovingAverage": calibration == "moving-average",
                                       **({"ActivationSymmetric": True, "QuantizeBias": False} if symmetric else {}),
                                       "TensorQuantOverrides": overrides,
                                       # the grids' own scales, which a bias adjustment would change
                                       **({"QDQDisableWeightAdjustForInt32Bias": True} if unsigned else {})})
        model = onnx.load(str(quantized))
        if int8_format == "qoperator":
            pixels_as_quantized_input(model.graph)
        onnx.save(model, str(out))


def activations_of(model_path: Path):
    """A function from an input feed to every float tensor that a node of the ONNX model at
    ``model_path`` writes, by name (for ``activation_ranges.lp_ranges``)."""
    import onnx

    from ..inference.onnx_runner import onnx_session

    model = onnx.load(str(model_path))
    floats = [v for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    written = {out for node in model.graph.node for out in node.output}
    readers = defaultdict(set)
    for node in model.graph.node:
        for name in node.input:
            readers[name].add(node.op_type)
    # a tensor read only by a Clip or Relu is never quantized: onnxruntime folds the activation
    # into the quantization of its output (half of MobileNetV2's activations, so half the time)
    model.graph.output.extend(v for v in floats if v.name in written and not readers[v.name] <= {"Clip", "Relu"})
    names = [v.name for v in model.graph.output]
    session = onnx_session(model.SerializeToString(), "the ONNX graph", optimization="none")  # keep every tensor
    return lambda feed: dict(zip(names, session.run(names, feed)))


def pixels_as_quantized_input(graph) -> bool:
    """Feed the uint8 pixels straight into the first quantized convolution when the model's
    normalisation is the same for every channel (a, b), as TF MobileNets' [-1, 1] is.

    Cast -> Mul(a) -> Add(b) -> QuantizeLinear(s, z) is then replaced by reading each pixel p as
    the quantized value of p a + b with scale a and zero point -b / a, rounded to an integer (for
    [-1, 1], 127.5 becomes 128). The convolution's int32 bias is rescaled from the calibrated
    input scale to a, and the half step that rounding takes off every input is added back
    through it (exact except where the kernel covers the zero padding at the border). The float
    Cast, Mul, Add and QuantizeLinear it removes took a third of the int8 model's time on a batch
    of 32 (4.8 million values each); onnxruntime's per-channel QuantizeLinear, the exact
    alternative for per-channel normalisation, was slower still, so per-channel normalisation
    stays float. Returns whether the graph was changed.
    """
    from onnx import TensorProto, numpy_helper

    constants = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    for cast, mul, add, quantize in zip(nodes, nodes[1:], nodes[2:], nodes[3:]):
        if ([cast.op_type, mul.op_type, add.op_type, quantize.op_type] == ["Cast", "Mul", "Add", "QuantizeLinear"]
                and [mul.input[0], add.input[0], quantize.input[0]] == [cast.output[0], mul.output[0], add.output[0]]
                and all(name in constants for name in (mul.input[1], add.input[1], *quantize.input[1:3]))):
            break
    else:
        return False
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info]}
    a = numpy_helper.to_array(constants[mul.input[1]]).astype(np.float64)
    b = numpy_helper.to_array(constants[add.input[1]]).astype(np.float64)
    if types.get(cast.input[0]) != TensorProto.UINT8 or np.ptp(a) or np.ptp(b) or a.flat[0] <= 0:
        return False
    exact_zero_point = -b.flat[0] / a.flat[0]
    if not 0 <= exact_zero_point <= 255:
        return False
    convs = [n for n in graph.node if quantize.output[0] in n.input]
    if not all(n.op_type == "QLinearConv" and len(n.input) == 9 and n.input[0] == quantize.output[0]
               and {n.input[3], n.input[5], n.input[8]} <= set(constants)
               and not numpy_helper.to_array(constants[n.input[5]]).any() for n in convs):
        return False  # the bias correction below needs QLinearConvs with symmetric weights and a bias
    scale, zero_point = a.flat[0], np.round(exact_zero_point + 1e-9)  # 127.5 -> 128, not to even
    calibrated_scale = float(numpy_helper.to_array(constants[quantize.input[1]]))
    for conv in convs:
        # The int32 bias counts in units of input scale times weight scale: it was quantized with
        # the calibrated input scale, so it is rescaled to the new one (on a garbage26 model the
        # two differed by 4.6%, and so did every first-layer bias). And the pixels now read
        # (p - zero_point) a, so the true input is that plus (zero_point - exact) a everywhere: in
        # bias units its effect on an output is (zero_point - exact) times the sum of the filter's
        # int8 weights, added.
        weights = numpy_helper.to_array(constants[conv.input[3]]).astype(np.float64)
        bias = numpy_helper.to_array(constants[conv.input[8]]).astype(np.float64) * calibrated_scale / scale
        bias += (zero_point - exact_zero_point) * weights.reshape(len(weights), -1).sum(1)
        constants[conv.input[8]].CopyFrom(numpy_helper.from_array(np.round(bias).astype(np.int32), conv.input[8]))
    for name, value in ((quantize.input[1], np.array(scale, np.float32)),
                        (quantize.input[2], np.array(zero_point, np.uint8))):
        constants[name].CopyFrom(numpy_helper.from_array(value, name))
    for node in graph.node:
        node.input[:] = [cast.input[0] if name == quantize.output[0] else name for name in node.input]
    for node in (cast, mul, add, quantize):
        graph.node.remove(node)
    for name in (mul.input[1], add.input[1]):
        graph.initializer.remove(constants[name])
    removed = {cast.output[0], mul.output[0], add.output[0], quantize.output[0]}
    for info in [v for v in graph.value_info if v.name in removed]:
        graph.value_info.remove(info)
    return True


def weight_grid_overrides(graph) -> dict:
    """onnxruntime quantization overrides that give each Conv weight lying on a uint8 grid
    (``weight_grid.uint8_grid``) that grid's step and zero point, so that its uint8 weights are exact.

    onnxruntime's own scale, (max - min) / 255, lands on such a grid only when the values use both
    of its ends; a layer whose weights use levels 0 to 254 gets a scale 0.4% too small, and every
    weight a rounding error of up to half a step. In an exploration on the validation model (not
    kept in the repo), the exact grids cut the mean KL divergence from fp32 from 0.0050 to 0.0017
    and the logits' relative L2 from 0.097 to 0.057."""
    from onnx import numpy_helper

    constants = {t.name: t for t in graph.initializer}
    overrides = {}
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in constants:
            grid = uint8_grid(numpy_helper.to_array(constants[node.input[1]]))
            if grid is not None:
                step, zero_point = grid
                overrides[node.input[1]] = [{"scale": np.float32(step), "zero_point": np.uint8(zero_point)}]
    return overrides


def depthwise_convs(graph) -> list[str]:
    """Names of the Convs with one filter per input channel (group > 1)."""
    from onnx import helper

    def groups(node) -> int:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    return [n.name for n in graph.node if n.op_type == "Conv" and groups(n) > 1]


def chain_to_first_conv(graph) -> list[str]:
    """Names of the chain of nodes from the graph input to the first Conv: the normalisation, then
    the Conv that reads the normalised pixels."""
    chain, tensor = [], graph.input[0].name
    while True:
        node = next(n for n in graph.node if tensor in n.input)
        chain.append(node.name)
        if node.op_type == "Conv":
            return chain
        tensor = node.output[0]

"""Exporting a model file to TFLite (fp32, or int8 by static quantization) for LiteRT and phones.

The converter is litert-torch (the ``tflite-export`` extra); int8 is ai-edge-quantizer, which
litert-torch installs. Like the ONNX export, the .tflite file takes what ``binwise.images.load_crop``
gives: resized, centre-cropped RGB pixels as uint8, (batch, H, W, 3), and normalises them as the
graph's first step, so an app feeds the camera's pixels as they are. Its outputs are those of the
ONNX export, named so in the signature: ``logits`` and, when the model file has reference features,
``similarity`` (the unknown score, ``binwise.model.novelty``). The file carries:

- binwise's JSON metadata (the ONNX export's ``binwise`` dict) as the model's ``binwise``
  metadata entry, so ``Classifier.load("x.tflite")`` knows classes, bins and preprocessing;
- TFLite model metadata (``TFLITE_METADATA``, tflite-support's schema) describing the input image
  and each output, with the class names and bins as associated files zipped after the flatbuffer
  (``labels.txt`` English, ``labels_zh.txt`` Chinese, ``bins.txt``), which is where Android's
  metadata extractor and Task Library look for them.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BinwiseError
from ..images import load_crop
from ..preprocessing import Preprocessing
from ..taxonomy.classes import Taxonomy
from ..model.metadata import GRAPH_INPUT, GRAPH_LOGITS, GRAPH_SIMILARITY, METADATA_KEY
from ..inference.tflite_runner import SIGNATURE
from .activation_ranges import lp_ranges
from .onnx_file import (DEFAULT_CALIBRATION_COUNT, calibration_photos,
                        check_calibration, exported_module)
from .tflite_flatbuffer import packed, unpacked
from .tflite_grid import on_source_grid

EXTRA = "tflite-export"
INPUT_DESCRIPTION = ("uint8 RGB pixels (batch, height, width, 3), resized and centre-cropped; "
                     "normalised in the graph")


def export_tflite(model_path: str | os.PathLike, out: str | os.PathLike, int8: bool = False,
                  calibration_dir: str | os.PathLike | None = None,
                  calibration_count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0, calibration: str = "lp") -> Path:
    """Write ``model_path`` (a binwise .safetensors file) as TFLite to ``out``.

    With ``int8``, weights (per channel, symmetric) and activations (per tensor) are int8, the
    activation ranges calibrated on ``calibration_count`` training photos (chosen as for the ONNX
    int8 export, ``onnx_file.calibration_photos``) by ``calibration`` (see ``quantize_int8``).
    """
    litert_torch = _converter()
    from ..fileio import atomic_write, sha256_of_file
    from ..model.file import load_model

    if int8:
        check_calibration(calibration)  # before the conversion, not after it
    model_file = load_model(model_path)
    meta = model_file.metadata()
    meta["export"] = {"format": "tflite", "precision": "int8" if int8 else "fp32",
                      **({"calibration": calibration} if int8 else {}),
                      "converter": f"litert-torch {litert_torch.__version__}", "input": INPUT_DESCRIPTION,
                      "source": f"{Path(model_path).name}@{sha256_of_file(model_path)[:12]}"}
    flatbuffer = converted(model_file)
    if int8:
        images = calibration_photos(calibration_dir, calibration_count, seed)
        flatbuffer = quantize_int8(flatbuffer, images, model_file.preprocessing, calibration=calibration)
    packed = with_metadata(flatbuffer, meta)
    atomic_write(out, lambda tmp_out: Path(tmp_out).write_bytes(packed))
    return Path(out)


def converted(model_file) -> bytes:
    """The fp32 flatbuffer of ``onnx_file.exported_module(model_file)``: outputs named ``logits``
    and, when the model file has reference features, ``similarity`` (the unknown score), as in
    the ONNX export."""
    import torch

    litert_torch = _converter()
    module = exported_module(model_file)
    names = [GRAPH_LOGITS] if model_file.reference_features is None else [GRAPH_LOGITS, GRAPH_SIMILARITY]

    class NamedOutputs(torch.nn.Module):
        """litert-torch names a signature's outputs after the keys of a returned dict."""

        def __init__(self):
            super().__init__()
            self.module = module

        def forward(self, pixels):
            outputs = self.module(pixels)
            return dict(zip(names, outputs if isinstance(outputs, tuple) else (outputs,)))

    size = model_file.preprocessing.input_size
    litert_torch.config.show_progress = False
    pixels = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32.tflite"
        litert_torch.convert(NamedOutputs().eval(), (pixels,)).export(str(path))
        return path.read_bytes()


def _converter():
    try:
        import litert_torch
    except ModuleNotFoundError:
        raise BinwiseError(f"TFLite export needs litert-torch: install the '{EXTRA}' extra (pip install "
                           f"'binwise-sort[{EXTRA}]', or '.[{EXTRA}]' in a checkout)") from None
    return litert_torch


def quantize_int8(flatbuffer: bytes, images: list, pre: Preprocessing, int8_recipe: list[dict] | None = None,
                  calibration: str = "lp", source_grid: bool = True) -> bytes:
    """Static quantization with ai-edge-quantizer, calibrated on ``images``: ``int8_recipe`` (an
    ai-edge-quantizer recipe; default ``int8_recipe()``); each activation tensor's range by
    ``calibration`` (``onnx_file.CALIBRATIONS``: "lp", the range of least Lp quantization error,
    ``activation_ranges``; "minmax", its absolute min/max over the photos; "moving-average", the
    quantizer's own default, a moving average of each photo's range); with ``source_grid``, weights
    that came from an 8-bit file are put back on their grid (``tflite_grid.on_source_grid``)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    check_calibration(calibration)
    (input_name,) = Interpreter(model_content=flatbuffer).get_signature_list()[SIGNATURE]["inputs"]
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(default_int8_recipe() if int8_recipe is None else int8_recipe)
    update = qsv_utils.moving_average_update if calibration == "moving-average" else qsv_utils.min_max_update
    ranges = calibrator.Calibrator(bytearray(flatbuffer), num_threads=os.cpu_count() or 1, qsv_update_func=update)
    feeds = [{input_name: load_crop(p, pre)[None]} for p in images]
    ranges.calibrate({SIGNATURE: feeds}, manager)
    qsvs = ranges.get_model_qsvs()
    if calibration == "lp":
        for name, (lo, hi) in lp_ranges(activations_of(flatbuffer, set(qsvs)), feeds).items():
            qsvs[name] = {"min": np.full_like(qsvs[name]["min"], lo), "max": np.full_like(qsvs[name]["max"], hi)}
    quantized = quantizer.Quantizer(bytearray(flatbuffer), manager.get_quantization_recipe())
    int8 = bytes(quantized.quantize(qsvs, enable_progress_report=False).quantized_model)
    return on_source_grid(int8, flatbuffer) if source_grid else int8


def activations_of(flatbuffer: bytes, names: set[str]):
    """A function from an input feed to the float tensors of ``flatbuffer`` named in ``names`` (the
    calibrator's: activations only), by name, as its signature's run writes them (for
    ``activation_ranges.lp_ranges``)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner(SIGNATURE)
    wanted = [t for t in interpreter.get_tensor_details() if t["name"] in names and t["dtype"] == np.float32]

    def values(feed):
        runner(**feed)
        return {t["name"]: interpreter.get_tensor(t["index"]) for t in wanted}
    return values


def default_int8_recipe() -> list[dict]:
    """ai-edge-quantizer's static int8 recipe: int8 weights (per channel, symmetric) and
    activations (per tensor, asymmetric) everywhere."""
    from ai_edge_quantizer import recipe

    return recipe.static_wi8_ai8()


# --- metadata ---

LABEL_FILES = {"en": "labels.txt", "zh": "labels_zh.txt"}
BINS_FILE = "bins.txt"
TFLITE_METADATA = "TFLITE_METADATA"  # the name tflite-support's readers look up in Model.metadata


def with_metadata(flatbuffer: bytes, meta: dict) -> bytes:
    """The .tflite file: ``flatbuffer`` with binwise's JSON and TFLite model metadata added to its
    ``metadata`` table, followed by the zip of the label and bin files."""
    from ai_edge_litert import schema_py_generated as schema

    model = unpacked(flatbuffer)
    taxonomy = Taxonomy.from_dict(meta["taxonomy"])
    entries = {METADATA_KEY: json.dumps(meta, ensure_ascii=False).encode(),
               TFLITE_METADATA: model_metadata(meta, taxonomy, output_names(model))}
    model.metadata = [m for m in model.metadata or [] if m.name.decode() not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    return packed(model, len(flatbuffer) + 1024) + associated_files(taxonomy)


def output_names(model) -> list[str]:
    """The names of the graph's outputs in the graph's order (which the TFLite model metadata
    follows): from the signature, or logits alone in a file with one output."""
    graph_outputs = list(model.subgraphs[0].outputs)
    signature = next((s for s in model.signatureDefs or [] if s.signatureKey.decode() == SIGNATURE), None)
    if len(graph_outputs) == 1 or signature is None:
        return [GRAPH_LOGITS] * len(graph_outputs)
    by_tensor = {t.tensorIndex: t.name.decode() for t in signature.outputs}
    return [by_tensor[i] for i in graph_outputs]


def associated_files(taxonomy: Taxonomy) -> bytes:
    """The zip appended to the flatbuffer: one line per model output, in output order."""
    files = {LABEL_FILES["en"]: taxonomy.classes_en}
    if taxonomy.classes_zh:
        files[LABEL_FILES["zh"]] = taxonomy.classes_zh
    if taxonomy.bins:
        files[BINS_FILE] = ["\t".join((b.id, b.en, b.zh)) for b in map(taxonomy.bin_of, range(taxonomy.num_classes))]
    archive = io.BytesIO()
    # stored, not deflated: an app can then map a label file straight out of the model file
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, lines in files.items():
            z.writestr(name, "".join(f"{line}\n" for line in lines))
    return archive.getvalue()


# Field numbers and enum values of tflite-support's metadata_schema.fbs (file identifier M001)
_TENSOR_AXIS_LABELS, _DESCRIPTIONS = 2, 1
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2
_NORMALIZATION_OPTIONS = 1
_RGB = 1


def model_metadata(meta: dict, taxonomy: Taxonomy, outputs: list[str]) -> bytes:
    """A ModelMetadata flatbuffer: the input is an RGB image fed as it is (uint8, the graph
    normalises); the outputs, one entry each in the graph's order (``outputs``, their names), are
    one score per class with the label files attached and, in an export with the unknown score,
    the similarity to the nearest training photo."""
    import flatbuffers

    pre = Preprocessing.from_dict(meta["preprocessing"])
    export = meta["export"]
    b = flatbuffers.Builder(1024)

    def table(fields: list) -> int:
        """Fields as (slot, kind, value); strings and offsets must be built before the table."""
        b.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
        for slot, kind, value in fields:
            {"offset": b.PrependUOffsetTRelativeSlot, "byte": b.PrependInt8Slot,
             "uint": b.PrependUint32Slot}[kind](slot, value, 0)
        return b.EndObject()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(values) -> int:
        return b.CreateNumpyVector(np.asarray(values, np.float32))

    def associated_file(name: str, description: str, kind: int, locale: str | None = None) -> int:
        fields = [(0, "offset", b.CreateString(name)), (1, "offset", b.CreateString(description)), (2, "byte", kind)]
        if locale:
            fields.append((3, "offset", b.CreateString(locale)))
        return table(fields)

    scale, offset = pre.pixel_affine()
    files = [associated_file(LABEL_FILES["en"], "class names in English, one per output", _TENSOR_AXIS_LABELS, "en")]
    if taxonomy.classes_zh:
        files.append(associated_file(LABEL_FILES["zh"], "class names in Chinese, one per output",
                                     _TENSOR_AXIS_LABELS, "zh"))
    if taxonomy.bins:
        files.append(associated_file(BINS_FILE, "the bin of each output class, one line per output: "
                                     "bin id, English name, Chinese name, tab-separated", _DESCRIPTIONS))

    # input: an RGB image; its process unit says "feed the pixels as they are" (mean 0, std 1),
    # since the graph normalises them itself
    image = table([(0, "byte", _RGB), (1, "offset", table([(0, "uint", pre.input_size), (1, "uint", pre.input_size)]))])
    normalization = table([(0, "offset", floats([0.0])), (1, "offset", floats([1.0]))])
    input_tensor = table([
        (0, "offset", b.CreateString(GRAPH_INPUT)),
        (1, "offset", b.CreateString(
            f"{INPUT_DESCRIPTION}: x * {[round(s, 8) for s in scale]} + {[round(o, 6) for o in offset]} per "
            f"channel, i.e. (x / 255 - mean {list(pre.mean)}) / std {list(pre.std)}. Resize the shorter "
            f"side to {pre.resize_size} ({pre.interpolation}), then centre-crop {pre.input_size}x{pre.input_size}.")),
        (3, "offset", table([(0, "byte", _IMAGE_PROPERTIES), (1, "offset", image)])),
        (4, "offset", vector([table([(0, "byte", _NORMALIZATION_OPTIONS), (1, "offset", normalization)])])),
        (5, "offset", table([(0, "offset", floats([255.0])), (1, "offset", floats([0.0]))])),
    ])
    scores = table([
        (0, "offset", b.CreateString(GRAPH_LOGITS)),
        (1, "offset", b.CreateString(f"{taxonomy.num_classes} class scores (logits: softmax gives the probabilities)")),
        (3, "offset", table([(0, "byte", _FEATURE_PROPERTIES), (1, "offset", table([]))])),
        (6, "offset", vector(files)),
    ])
    threshold = (meta.get("calibration") or {}).get("min_similarity")
    similarity = table([
        (0, "offset", b.CreateString(GRAPH_SIMILARITY)),
        (1, "offset", b.CreateString(
            "one value per photo: the cosine similarity of its pooled backbone feature to the nearest training "
            "photo's; " + ("below the calibration's min_similarity " + f"{threshold:.4f}" if threshold is not None
                           else "low") + " means the photo does not look like anything the model was trained on")),
        (3, "offset", table([(0, "byte", _FEATURE_PROPERTIES), (1, "offset", table([]))])),
        (5, "offset", table([(0, "offset", floats([1.0])), (1, "offset", floats([-1.0]))])),
    ])
    tensors = {GRAPH_LOGITS: scores, GRAPH_SIMILARITY: similarity}
    subgraph = table([(0, "offset", b.CreateString("classify")), (2, "offset", vector([input_tensor])),
                      (3, "offset", vector([tensors[name] for name in outputs]))])
    root = table([
        (0, "offset", b.CreateString(f"binwise {taxonomy.name or 'garbage'} classifier")),
        (1, "offset", b.CreateString(
            f"Sorts a photo into one of {taxonomy.num_classes} classes" +
            (f" and {len(taxonomy.bins)} bins" if taxonomy.bins else "") +
            f"; {export['precision']}, exported by binwise from {export['source']}")),
        (2, "offset", b.CreateString(export["source"])),
        (3, "offset", vector([subgraph])),
        (4, "offset", b.CreateString("binwise")),
        (7, "offset", b.CreateString("1.0.0")),
    ])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())

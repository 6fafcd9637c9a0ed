"""One check of a model file's metadata, whatever the file's format, before anything trusts it.

Every reader (the .safetensors model file, an .onnx or .tflite export) hands its parsed JSON here.
A model file comes from anywhere: a value of the wrong type, a size that would allocate terabytes,
a zero standard deviation or a class list that does not match the outputs must each end in one
error naming the file and the field, never in a traceback, a hang or a service answering 500.
Torch-free, so the ONNX inference path can use it. Readers get a ``ModelMeta``: checked once, typed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import BinwiseError
from ..preprocessing import Preprocessing
from ..taxonomy.classes import Taxonomy
from ..taxonomy.checks import Problems, check_taxonomy, is_int, is_number

FORMAT = "binwise-model"
FORMAT_VERSION = 1
METADATA_KEY = "binwise"  # in safetensors' __metadata__, ONNX metadata_props, TFLite metadata
# an exported graph's input and outputs (ONNX and TFLite): uint8 NHWC pixels in; class logits and,
# when the model file has the training photos' features, the similarity to the nearest one out
GRAPH_INPUT, GRAPH_LOGITS, GRAPH_SIMILARITY = "pixels", "logits", "similarity"

# Bounds for the architecture: MobileNetV2 is published for widths 0.35-1.4; room is left around
# them, but not for a width or class count that allocates gigabytes.
WIDTH_RANGE = (0.1, 4.0)
MAX_CHANNELS = 10_000
INPUT_SIZE_RANGE = (32, 1024)
MAX_RESIZE = 4096
PADDINGS = ("symmetric", "tf_same")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class ModelMeta:
    """Everything a model needs at inference besides its weights, as every format carries it (the
    .safetensors model file, .onnx, .tflite and MINDIR exports): ``to_dict`` is the JSON written."""

    architecture: dict  # "name" and MobileNetV2Config's fields (model.network builds the network)
    taxonomy: Taxonomy
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)  # where the weights came from, the run's settings and splits
    metrics: dict = field(default_factory=dict)  # the training run's test report
    calibration: dict = field(default_factory=dict)  # as training.calibration fitted it; empty: defaults
    export: dict = field(default_factory=dict)  # how an exported file was made; empty in a model file
    binwise_version: str | None = None  # of the binwise that wrote it

    @classmethod
    def parse(cls, raw: str | bytes, path: str | os.PathLike) -> "ModelMeta":
        """From a file's JSON text: parsed, checked (``parse_metadata``) and typed, or one BinwiseError."""
        return cls.from_checked(parse_metadata(raw, path), path)

    @classmethod
    def from_checked(cls, meta: dict, path: str | os.PathLike) -> "ModelMeta":
        try:
            return cls(dict(meta["architecture"]), Taxonomy.from_dict(meta["taxonomy"]),
                       Preprocessing.from_dict(meta["preprocessing"]), dict(meta.get("provenance") or {}),
                       dict(meta.get("metrics") or {}), dict(meta.get("calibration") or {}),
                       dict(meta.get("export") or {}), meta.get("binwise_version"))
        except (KeyError, TypeError, ValueError) as e:
            raise BinwiseError(f"invalid model metadata: {e}", path) from None

    def to_dict(self) -> dict:
        optional = {name: value for name, value in (("calibration", self.calibration), ("export", self.export))
                    if value}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "binwise_version": self.binwise_version,
                "architecture": self.architecture, "taxonomy": self.taxonomy.to_dict(),
                "preprocessing": self.preprocessing.to_dict(), "provenance": self.provenance,
                "metrics": self.metrics, **optional}

    def statuses(self):
        """The calibration the status rule uses (``status.Calibration``; defaults when none was fitted)."""
        from .status import Calibration

        return Calibration.from_metadata({"calibration": self.calibration})


def parse_metadata(raw: str | bytes, path: str | os.PathLike) -> dict:
    """A model file's binwise metadata from its JSON text, checked (``check_metadata``)."""
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise BinwiseError(f"unreadable binwise metadata ({reason})", path) from None
    if not isinstance(meta, dict):
        raise BinwiseError("not a binwise model file (its metadata is not a JSON object)", path)
    if meta.get("format") != FORMAT:
        raise BinwiseError(f"not a binwise model file (format {str(meta.get('format'))[:60]!r})", path)
    version = meta.get("format_version", 0)
    if not is_int(version):
        raise BinwiseError(f"invalid model metadata: format_version {str(version)[:20]!r} is not an integer", path)
    if version > FORMAT_VERSION:
        raise BinwiseError(f"model file format version {version} is newer than this binwise ({FORMAT_VERSION}); "
                           "upgrade binwise", path)
    return check_metadata(meta, path)


def check_metadata(meta, path: str | os.PathLike) -> dict:
    """``meta`` when it is a usable binwise model description; else BinwiseError naming the problem."""
    problems = Problems(path)
    if not isinstance(meta, dict):
        problems.fail("the metadata is not a JSON object")
    for section in ("architecture", "taxonomy", "preprocessing"):
        if not isinstance(meta.get(section), dict):
            problems.fail(f"the metadata has no {section!r} object")
    classes = check_taxonomy(meta["taxonomy"], problems)
    check_architecture(meta["architecture"], classes, problems)
    check_preprocessing(meta["preprocessing"], problems)
    for section in ("provenance", "metrics", "export", "calibration"):
        if section in meta and not isinstance(meta[section], dict):
            problems.fail(f"the metadata's {section!r} is not a JSON object")
    if meta.get("calibration"):
        check_calibration(meta["calibration"], problems, classes)
    return meta


def check_architecture(arch: dict, classes: int, problems: Problems) -> None:
    problems.need(arch.get("name") == "mobilenet_v2", f"unsupported architecture {arch.get('name')!r:.60}")
    num_classes = arch.get("num_classes", 1000)
    problems.need(is_int(num_classes) and num_classes == classes,
                  f"the architecture has {num_classes!r:.20} outputs but the taxonomy names {classes} classes")
    width = arch.get("width_mult", 1.0)
    problems.need(is_number(width) and WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1],
                  f"width_mult {width!r:.20} is outside {WIDTH_RANGE[0]}-{WIDTH_RANGE[1]}")
    for key in ("input_channel", "last_channel", "round_nearest"):
        value = arch.get(key, 8)
        problems.need(is_int(value) and 1 <= value <= MAX_CHANNELS, f"{key} {value!r:.20} is not a channel count")
    dropout = arch.get("dropout", 0.0)
    problems.need(is_number(dropout) and 0 <= dropout < 1, f"dropout {dropout!r:.20} is not in [0, 1)")
    problems.need(arch.get("padding", "symmetric") in PADDINGS, f"padding must be one of {', '.join(PADDINGS)}")
    # files before 2026-12-08 record the head's activation, always null; heads output logits
    problems.need(arch.get("activation") is None, "architecture.activation must be null: heads output logits")
    setting = arch.get("inverted_residual_setting", [[1, 1, 1, 1]])
    problems.need(isinstance(setting, list) and 0 < len(setting) <= 32
                  and all(isinstance(row, list) and len(row) == 4 and all(is_int(v) and 1 <= v <= MAX_CHANNELS for v in row)
                          for row in setting),
                  "inverted_residual_setting must be rows of four positive integers (t, c, n, s)")


def check_preprocessing(pre: dict, problems: Problems) -> None:
    size, resize = pre.get("input_size", 224), pre.get("resize_size", 256)
    problems.need(is_int(size) and INPUT_SIZE_RANGE[0] <= size <= INPUT_SIZE_RANGE[1],
                  f"input_size {size!r:.20} is not an integer in {INPUT_SIZE_RANGE[0]}-{INPUT_SIZE_RANGE[1]}")
    problems.need(is_int(resize) and size <= resize <= MAX_RESIZE,
                  f"resize_size {resize!r:.20} is not an integer from input_size to {MAX_RESIZE}")
    for key in ("mean", "std"):
        values = pre.get(key, [0.5] * 3)
        problems.need(isinstance(values, list) and len(values) == 3 and all(is_number(v) for v in values),
                      f"preprocessing {key} must be three finite numbers")
    problems.need(all(v > 0 for v in pre.get("std", [0.5] * 3)), "preprocessing std must be positive")
    problems.need(pre.get("interpolation", "bilinear") in INTERPOLATIONS,
                  f"interpolation must be one of {', '.join(INTERPOLATIONS)}")


def check_calibration(calibration: dict, problems: Problems, classes: int) -> None:
    """The temperature and thresholds ``binwise.model.status`` applies to every answer, and the
    held-out answers' mix the service watches for drift."""
    mix = calibration.get("held_out_mix")
    if mix is not None:
        statuses, top = (mix.get("statuses"), mix.get("top_classes")) if isinstance(mix, dict) else (None, None)
        problems.need(isinstance(statuses, dict) and set(statuses) == {"ok", "unsure", "unknown"}
                      and all(is_int(n) and n >= 0 for n in statuses.values()),
                      "calibration held_out_mix.statuses must count ok, unsure and unknown photos")
        problems.need(isinstance(top, list) and len(top) == classes and all(is_int(n) and n >= 0 for n in top),
                      f"calibration held_out_mix.top_classes must count photos for each of the {classes} classes")
    temperature = calibration.get("temperature")
    problems.need(is_number(temperature) and 1e-3 <= temperature <= 1e3,
                  f"calibration temperature {str(temperature)[:20]!r} is not a number in 0.001-1000")
    confidence = calibration.get("min_confidence")
    # choose_min_confidence may return the float just above 1 (answer nothing)
    problems.need(is_number(confidence) and 0 <= confidence <= 1 + 1e-9,
                  f"calibration min_confidence {str(confidence)[:20]!r} is not a probability")
    max_cost = calibration.get("max_cost")
    problems.need(max_cost is None or (is_number(max_cost) and max_cost >= 0),
                  f"calibration max_cost {str(max_cost)[:20]!r} is not a cost (a number >= 0)")
    similarity = calibration.get("min_similarity")
    problems.need(similarity is None or (is_number(similarity) and -1 <= similarity <= 1),
                  f"calibration min_similarity {str(similarity)[:20]!r} is not a cosine similarity in [-1, 1]")

"""TFLite export (litert-torch) and the LiteRT runner behind predict, eval, bench, serve and info.

The converter is the ``tflite-export`` extra. It may live in its own venv (it downgrades pydantic
under the service), so the exports run as a subprocess of the first Python that has it: this one,
``$BINWISE_LITERT_PYTHON``, or ``.venv-litert/bin/python``; without one those tests skip. The
error-path tests need no converter.
"""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import torch
from PIL import Image
from inference_models import garbage26_test_photos, tiny_model
from test_torch_free import WITHOUT_TORCH

from binwise.evaluation.bench import run_bench
from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.export.tflite_file import BINS_FILE, LABEL_FILES, TFLITE_METADATA
from binwise.images import load_crop
from binwise.model.file import load_model, read_metadata
from binwise.inference.classifier import Classifier
from binwise.preprocessing import with_pixel_input
from binwise.taxonomy.classes import GARBAGE26

REPO = Path(__file__).resolve().parents[1]


def converter_python() -> str:
    if importlib.util.find_spec("litert_torch"):
        return sys.executable
    for candidate in (os.environ.get("BINWISE_LITERT_PYTHON"), REPO / ".venv-litert" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("no litert-torch (the 'tflite-export' extra) here, in $BINWISE_LITERT_PYTHON or .venv-litert")


def export(tmp_path_factory, *options: str, model: Path | None = None) -> Path:
    """``model`` (default: the tiny test model) exported to TFLite in the converter's Python."""
    model = model or tiny_model()
    out = tmp_path_factory.mktemp("tflite") / f"{model.stem}.tflite"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's binwise, in whichever venv
    result = subprocess.run([converter_python(), "-m", "binwise.cli", "export", str(model), "--format",
                             "tflite", "--out", str(out), *options], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    return export(tmp_path_factory)


def torch_logits(pixels: np.ndarray) -> np.ndarray:
    model_file = load_model(tiny_model())
    with torch.no_grad():
        return with_pixel_input(model_file.model, model_file.preprocessing)(torch.from_numpy(pixels)).numpy()


def crops(count_step: int = 13) -> np.ndarray:
    pre = load_model(tiny_model()).preprocessing
    return np.stack([load_crop(p, pre) for p in garbage26_test_photos()[::count_step]])


def test_fp32_logits_match_torch_at_any_batch_size(tiny_tflite):
    pixels = crops()
    expected = torch_logits(pixels)
    runner = Classifier.load(tiny_tflite).runner
    for got in (runner(pixels), np.concatenate([runner(p[None]) for p in pixels]),
                runner.concurrent()(pixels[:3])):
        n = len(got)
        assert np.linalg.norm(got - expected[:n]) / np.linalg.norm(expected[:n]) <= 1e-4


def metadata_table(buffer: bytes, root: int, *path: tuple[int, int]):
    """Follow (field slot, vector index) steps from a flatbuffer table; returns the table reached."""
    table = flatbuffers.table.Table(buffer, root)
    for slot, index in path:
        offset = table.Offset(4 + 2 * slot)
        assert offset, f"field {slot} missing"
        element = table.Vector(offset) + 4 * index if index is not None else offset + table.Pos
        table = flatbuffers.table.Table(buffer, table.Indirect(element))
    return table


def string_field(table, slot: int) -> str:
    return table.String(table.Offset(4 + 2 * slot) + table.Pos).decode()


def test_the_file_carries_labels_bins_and_binwise_metadata(tiny_tflite):
    from ai_edge_litert import schema_py_generated as schema

    data = tiny_tflite.read_bytes()
    with zipfile.ZipFile(tiny_tflite) as packed:  # the associated files, zipped after the flatbuffer
        lines = {name: packed.read(name).decode().splitlines() for name in packed.namelist()}
    assert lines[LABEL_FILES["en"]] == list(GARBAGE26.classes_en)
    assert lines[LABEL_FILES["zh"]] == list(GARBAGE26.classes_zh)
    battery = GARBAGE26.bin_of(GARBAGE26.classes_en.index("Battery"))
    assert lines[BINS_FILE][22] == f"{battery.id}\t{battery.en}\t有害垃圾"
    assert len(lines[BINS_FILE]) == 26

    meta = Classifier.load(tiny_tflite).meta
    source = read_metadata(tiny_model())
    assert meta.taxonomy == source.taxonomy and meta.preprocessing == source.preprocessing
    assert meta.export["format"] == "tflite" and meta.export["precision"] == "fp32"

    # TFLite model metadata: the output's associated files name the zipped label files
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    metadata = model.Buffers(entries[TFLITE_METADATA]).DataAsNumpy().tobytes()
    assert metadata[4:8] == b"M001"
    start = flatbuffers.encode.Get(flatbuffers.packer.uoffset, metadata, 0)
    output = metadata_table(metadata, start, (3, 0), (3, 0))  # subgraph_metadata[0].output_tensor_metadata[0]
    files = [string_field(metadata_table(metadata, start, (3, 0), (3, 0), (6, i)), 0) for i in range(3)]
    assert files == [LABEL_FILES["en"], LABEL_FILES["zh"], BINS_FILE]
    assert string_field(output, 0) == "logits"
    pixels = metadata_table(metadata, start, (3, 0), (2, 0))
    assert "normalised in the graph" in string_field(pixels, 1) and "[0.5, 0.5, 0.5]" in string_field(pixels, 1)


def output_metadata_names(path: Path) -> list[str]:
    """The output tensor names in the file's TFLite model metadata, in order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    metadata = model.Buffers(entries[TFLITE_METADATA]).DataAsNumpy().tobytes()
    start = flatbuffers.encode.Get(flatbuffers.packer.uoffset, metadata, 0)
    subgraph = metadata_table(metadata, start, (3, 0))
    count = subgraph.VectorLen(subgraph.Offset(4 + 2 * 3))
    return [string_field(metadata_table(metadata, start, (3, 0), (3, i)), 0) for i in range(count)]


@pytest.fixture(scope="module")
def scored_tflite(tmp_path_factory, calibrated_garbage26_model) -> Path:
    """The calibrated garbage26 fixture model (with reference features) as fp32 TFLite."""
    return export(tmp_path_factory, model=calibrated_garbage26_model)


@pytest.fixture(scope="module")
def status_photos(garbage26_data, tmp_path_factory) -> list[Path]:
    """A battery and an eggshell the fixture model is sure of, and a grey square (not garbage)."""
    grey = tmp_path_factory.mktemp("photos") / "grey.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(grey)
    return [sorted((garbage26_data / "test" / name).glob("*.jpg"))[0] for name in ("Battery", "Eggshell")] + [grey]


def test_the_export_carries_the_unknown_score(scored_tflite, calibrated_garbage26_model, status_photos):
    classifier = Classifier.load(scored_tflite)
    assert classifier.runner.scored and classifier.status_note is None
    assert output_metadata_names(scored_tflite) == [name for name in classifier.runner.outputs] == ["logits",
                                                                                                 "similarity"]
    in_torch = Classifier.load(calibrated_garbage26_model).predict(status_photos)
    in_tflite = classifier.predict(status_photos)
    assert [p.status for p in in_tflite] == [p.status for p in in_torch] == ["ok", "ok", "unknown"]
    assert [p.similarity for p in in_tflite] == pytest.approx([p.similarity for p in in_torch], abs=1e-5)
    assert [p.top[0].probability for p in in_tflite] == pytest.approx([p.top[0].probability for p in in_torch],
                                                                      abs=1e-4)


def test_predict_says_unknown_through_the_tflite_file(scored_tflite, status_photos, capsys):
    assert main(["predict", str(scored_tflite), *map(str, status_photos), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["ok", "ok", "unknown"] and rows[2]["bin"] is None


def test_a_file_with_logits_only_is_read_and_never_unknown(tiny_tflite):
    runner = Classifier.load(tiny_tflite).runner
    assert not runner.scored and list(runner.outputs) == ["logits"] and output_metadata_names(tiny_tflite) == ["logits"]
    assert Classifier.load(tiny_tflite).predict(garbage26_test_photos(1)[0]).similarity is None


def test_info_and_predict_without_torch(tiny_tflite, capsys):
    assert main(["info", str(tiny_tflite)]) == 0
    info = capsys.readouterr().out
    assert "TFLite, fp32" in info and "Battery 电池" in info and "uint8 [1, 224, 224, 3]" in info

    photos = garbage26_test_photos(3)
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "predict", str(tiny_tflite), *map(str, photos),
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    expected = Classifier.load(tiny_model()).predict(photos)
    assert [r["top"][0]["en"] for r in rows] == [p.top[0].en for p in expected]


def test_stream_and_threads_agree_with_one_call(tiny_tflite):
    classifier = Classifier.load(tiny_tflite)
    photos = garbage26_test_photos()[::10]
    direct = [p.top[0].index for p in classifier.predict(photos)]
    streamed = [p.top[0].index for _, p in classifier.predict_stream(photos, batch_size=4, workers=3)]
    assert streamed == direct


def test_bench_measures_a_tflite_model_alone(tiny_tflite, garbage26_data):
    results = run_bench(tiny_tflite, photos=8, runs=3, threads=1, batch_size=4, log=lambda line: None)
    assert list(results["backends"]) == ["tflite-fp32"]
    assert results["backends"]["tflite-fp32"]["images_per_s"] > 0


@pytest.mark.slow
def test_int8_export_is_quantized_and_follows_fp32(tiny_tflite, tmp_path_factory):
    int8 = export(tmp_path_factory, "--int8", "--calibration-count", "26")
    classifier = Classifier.load(int8)
    assert classifier.meta.export["precision"] == "int8"
    assert classifier.runner.output["dtype"] == np.int8  # dequantized by the runner
    assert int8.stat().st_size < 0.6 * tiny_tflite.stat().st_size
    pixels = crops(5)
    fp32, quantized = Classifier.load(tiny_tflite).runner(pixels), classifier.runner(pixels)
    assert quantized.dtype == np.float32
    # a random-head model quantizes poorly (a trained one: benchmarks/checks/tflite_parity.py), but its
    # int8 logits must still follow the fp32 ones
    assert np.corrcoef(fp32.ravel(), quantized.ravel())[0, 1] > 0.5


@pytest.mark.slow
def test_int8_export_keeps_the_statuses_and_the_backbone_weights(calibrated_garbage26_model, status_photos,
                                                                  pretrained_weights, tmp_path_factory):
    int8 = export(tmp_path_factory, "--int8", "--calibration-count", "52", model=calibrated_garbage26_model)
    in_torch = Classifier.load(calibrated_garbage26_model).predict(status_photos)
    in_int8 = Classifier.load(int8).predict(status_photos)
    assert [p.status for p in in_int8] == [p.status for p in in_torch]
    assert [p.similarity for p in in_int8] == pytest.approx([p.similarity for p in in_torch], abs=0.05)

    # the first convolution's int8 values are the ImageNet file's (binwise.export.tflite_grid)
    from ai_edge_litert import schema_py_generated as schema
    from test_tflite_grid import first_op, int8_weights, source_layers

    conv, step, _, _ = source_layers(pretrained_weights)
    values, scale, _ = int8_weights(int8.read_bytes(), first_op(int8.read_bytes(), schema.BuiltinOperator.CONV_2D))
    exact = np.abs(np.round(conv / step)).max(axis=(1, 2, 3)) <= 127
    assert exact.sum() >= len(exact) - 3
    assert np.array_equal(values[exact], np.round(conv / step)[exact])
    np.testing.assert_allclose(scale.ravel()[exact], step, rtol=1e-5)


def test_outputs_other_than_logits_and_similarity_are_refused():
    from binwise.inference.tflite_runner import named_outputs

    class Interpreter:  # two outputs, named as no binwise export names them
        def get_output_details(self):
            return [{"index": 1}, {"index": 2}]

        def get_signature_list(self):
            return {"serving_default": {"inputs": ["pixels"], "outputs": ["output_0", "output_1"]}}

    with pytest.raises(BinwiseError, match=r"2 outputs \(output_0, output_1\), not logits alone or logits and "
                                           "similarity"):
        named_outputs(Interpreter(), "x.tflite")


# --- without the converter or the runtime ---

def test_a_tflite_file_without_binwise_metadata_or_damaged_is_refused(pretrained_weights, tmp_path):
    with pytest.raises(BinwiseError, match="TFLite file without binwise metadata"):
        Classifier.load(pretrained_weights)  # the ImageNet weights: a real .tflite, but not binwise's
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\0\0\0\0TFL3" + b"\xff" * 64)
    with pytest.raises(BinwiseError, match="damaged.tflite"):
        Classifier.load(damaged)
    not_tflite = tmp_path / "photo.tflite"
    not_tflite.write_bytes(garbage26_test_photos(1)[0].read_bytes())
    with pytest.raises(BinwiseError, match="not a TFLite model"):
        Classifier.load(not_tflite)


# The CLI with one module blocked, as if its extra were not installed
BLOCKING = """
import sys
sys.modules[sys.argv[1]] = None
from binwise.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_blocking(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKING, module, *args], capture_output=True, text=True,
                          timeout=120)


def test_missing_runtime_or_converter_is_one_line_naming_the_extra(pretrained_weights, tmp_path):
    result = run_blocking("ai_edge_litert", "predict", str(pretrained_weights), str(garbage26_test_photos(1)[0]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "'tflite' extra" in result.stderr, result.stderr

    result = run_blocking("litert_torch", "export", str(tiny_model()), "--format", "tflite",
                          "--out", str(tmp_path / "x.tflite"))
    assert result.returncode == 2 and not (tmp_path / "x.tflite").exists()
    assert len(result.stderr.strip().splitlines()) == 1 and "'tflite-export' extra" in result.stderr, result.stderr

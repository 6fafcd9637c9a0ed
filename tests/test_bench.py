import json

from inference_models import tiny_model, tiny_onnx, tiny_onnx_int8

from binwise.bench import run_bench, sample_jpeg
from binwise.cli import main
from binwise.images import open_image
from binwise.paths import resolve_data


def test_sample_photo_is_a_500x375_jpeg():
    photo = next((resolve_data() / "test").rglob("*.jpg"))
    data = sample_jpeg(photo)
    assert data[:3] == b"\xff\xd8\xff"
    assert open_image(data).size == (500, 375)


def test_bench_measures_every_backend(tmp_path):
    results = run_bench(tiny_model(), tiny_onnx(), tiny_onnx_int8(), photos=40, runs=3, threads=1,
                        batch_size=16, log=lambda line: None)
    assert list(results["backends"]) == ["torch", "onnx-fp32", "onnx-int8"]
    for entry in results["backends"].values():
        assert 0 < entry["p50_ms"] <= entry["p90_ms"]
        assert entry["photos"] == 40 and entry["images_per_s"] > 0
    assert results["settings"]["threads"] == 1 and results["settings"]["folder_photos"] == 40


def test_cli_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_model()), "--onnx", str(tiny_onnx()), "--backends", "onnx-fp32",
                 "--photos", "20", "--runs", "2", "--json", str(out)]) == 0
    assert "onnx-fp32" in capsys.readouterr().out
    assert list(json.loads(out.read_text())["backends"]) == ["onnx-fp32"]
    assert main(["bench", str(tiny_model()), "--backends", "tensorrt"]) == 2

import json

from inference_models import tiny_model, tiny_onnx, tiny_onnx_int8

from binwise.evaluation.bench import format_table, run_bench, sample_jpeg
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


def test_bench_rounds_interleave_backends_and_report_medians():
    logged = []
    results = run_bench(tiny_model(), tiny_onnx(), tiny_onnx_int8(), photos=12, runs=3, threads=1,
                        batch_size=4, backends=("torch", "onnx-int8"), repeat=3, log=logged.append)
    measuring = [line for line in logged if line.startswith("measuring")]
    assert measuring == [f"measuring {name}, round {r} of 3 ..." for r in (1, 2, 3) for name in ("torch", "onnx-int8")]
    for entry in results["backends"].values():
        rounds = entry["rounds"]
        assert len(rounds) == 3
        assert entry["p50_ms"] == sorted(r["p50_ms"] for r in rounds)[1]
        assert entry["images_per_s"] == sorted(r["images_per_s"] for r in rounds)[1]
    table = format_table(results)
    assert "medians of 3 rounds" in table and "round by round: photo" in table


def test_cli_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_model()), "--onnx", str(tiny_onnx()), "--backends", "onnx-fp32",
                 "--photos", "20", "--runs", "2", "--json", str(out)]) == 0
    assert "onnx-fp32" in capsys.readouterr().out
    assert list(json.loads(out.read_text())["backends"]) == ["onnx-fp32"]
    assert main(["bench", str(tiny_model()), "--backends", "tensorrt"]) == 2
    assert main(["bench", str(tiny_model()), "--repeat", "0"]) == 2

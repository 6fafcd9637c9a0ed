"""The web service (binwise.serving.app) and its dynamic batcher, in process, on a real garbage26 model."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from binwise.serving.batching import DynamicBatcher, QueueFull
from binwise.inference.classifier import Classifier
from binwise.preprocessing import Preprocessing
from binwise.serving.app import create_app
from binwise.taxonomy.classes import GARBAGE26


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, max_upload_bytes=2 * 1024 * 1024)) as client:
        yield client


@pytest.fixture(scope="module")
def photos(garbage26_data):
    """(class index, photo path) of the first test photo of a few classes in different bins."""
    names = ["Eggshell", "Battery", "Ceramic Bowl", "Plastic Bottle"]
    return [(GARBAGE26.classes_en.index(n), sorted((garbage26_data / "test" / n).glob("*.jpg"))[0])
            for n in names]


def assert_error(response, status: int, error: str, *words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    for word in words:
        assert word in body["detail"], body


def test_classify_upload_matches_python_api(client, classifier, photos):
    for _, path in photos:
        response = client.post("/v1/classify", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = classifier.predict(path, top_k=5)
        assert answer["model"] == classifier.model_id
        assert answer["source"] == path.name
        assert [c["index"] for c in answer["top"]] == [c.index for c in expected.top]
        assert np.allclose([c["probability"] for c in answer["top"]], [c.probability for c in expected.top],
                           atol=1e-5)
        assert answer["bin"] == {"id": expected.bin.id, "en": expected.bin.en, "zh": expected.bin.zh,
                                 "color": expected.bin.color}
        assert answer["bin_probability"] == pytest.approx(expected.bin_probability, abs=1e-5)
        assert answer["confidence"] == pytest.approx(answer["top"][0]["probability"])


def test_photos_land_in_their_bins(client, photos):
    # the quick fixture model is right on these photos; a wrong bin here means the service
    # mangles the pixels or the labels
    for class_index, path in photos:
        answer = client.post("/v1/classify", files={"file": (path.name, path.read_bytes())}).json()
        assert answer["bin"]["id"] == GARBAGE26.class_bins[class_index], (path, answer["top"][:2])


def test_raw_body_gives_the_same_answer_as_multipart(client, photos):
    data = photos[0][1].read_bytes()
    raw = client.post("/v1/classify?top_k=3", content=data, headers={"content-type": "image/jpeg"}).json()
    form = client.post("/v1/classify?top_k=3", files={"file": ("a.jpg", data, "image/jpeg")}).json()
    assert len(raw["top"]) == 3
    assert raw["top"] == form["top"] and raw["bin"] == form["bin"]


@pytest.mark.parametrize("query, problem", [("top_k=0", "top_k"), ("top_k=27", "top_k"),
                                            ("top_k=three", "top_k"), ("explain=maybe", "explain")])
def test_bad_query_parameters_are_422(client, photos, query, problem):
    response = client.post(f"/v1/classify?{query}", files={"file": ("a.jpg", photos[0][1].read_bytes())})
    assert_error(response, 422, "invalid_parameter", problem)


def test_explain_returns_a_grad_cam_overlay(client, photos):
    response = client.post("/v1/classify?explain=true", files={"file": ("a.jpg", photos[0][1].read_bytes())})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["explain"]["class_index"] == answer["top"][0]["index"]
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["explain"]["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (224, 224)
    # a blend with the jet colour map: not the plain photo, not one flat colour
    assert np.asarray(overlay).std() > 10


def test_model_metadata(client, classifier):
    info = client.get("/v1/model").json()
    assert info["model"] == classifier.model_id and info["backend"] == "torch" and info["explain"] is True
    assert [c["en"] for c in info["classes"]] == list(GARBAGE26.classes_en)
    assert [b["id"] for b in info["bins"]] == ["dry", "recyclable", "wet", "hazardous"]
    assert Preprocessing.from_dict(info["preprocessing"]) == classifier.preprocessing
    assert "provenance" not in info  # where it came from (server paths, training config) stays with the operator
    assert info["limits"]["max_upload_bytes"] == 2 * 1024 * 1024


def test_model_metadata_shows_provenance_only_when_asked_and_never_server_paths(classifier, tmp_path):
    from binwise.serving.app import public_metrics

    with TestClient(create_app(classifier, show_provenance=True)) as client:
        assert "garbage26 train photos" in client.get("/v1/model").json()["provenance"]["source"]
    metrics = {"test_top1": 0.95, "test_top1_ci95": [0.9, 0.98], "unreadable_photos": [str(tmp_path / "x.jpg")],
               "data": str(tmp_path), "test_photos": 130, "chosen": None}
    assert public_metrics(metrics) == {"test_top1": 0.95, "test_top1_ci95": [0.9, 0.98], "test_photos": 130,
                                       "chosen": None}


def test_api_key_guards_every_api_request_but_not_the_page(classifier, photos):
    garbage_jpeg = photos[0][1].read_bytes()
    with TestClient(create_app(classifier, api_key="s3cret")) as client:
        assert client.get("/v1/model").status_code == 401
        refused = client.post("/v1/classify", files={"file": ("a.jpg", garbage_jpeg)}, headers={"X-API-Key": "wrong"})
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        ok = client.post("/v1/classify", files={"file": ("a.jpg", garbage_jpeg)},
                         headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["top"]
        assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200


def test_cors_is_off_unless_an_origin_is_configured(classifier):
    origin = {"Origin": "https://sorting-app.example"}
    with TestClient(create_app(classifier)) as client:
        assert "access-control-allow-origin" not in client.get("/v1/model", headers=origin).headers
    with TestClient(create_app(classifier, cors_origins=("https://sorting-app.example",))) as client:
        allowed = client.get("/v1/model", headers=origin).headers
        assert allowed["access-control-allow-origin"] == "https://sorting-app.example"
        assert "access-control-allow-origin" not in client.get("/v1/model", headers={"Origin": "https://evil.example"}).headers


def test_health_page_docs_and_unknown_paths(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["queued"] == 0
    page = client.get("/")
    assert page.status_code == 200 and 'capture="environment"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    docs = client.get("/docs")
    # Swagger UI from the package, not from a CDN: the service has no network in deployment
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]["requestBody"]
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/classify"), 405, "method_not_allowed")


def test_upload_limit_is_413_with_or_without_content_length(client, photos):
    big = b"\xff\xd8" + bytes(2 * 1024 * 1024)
    assert_error(client.post("/v1/classify", content=big, headers={"content-type": "image/jpeg"}),
                 413, "upload_too_large", "2,097,152 bytes")
    assert_error(client.post("/v1/classify", files={"file": ("big.jpg", big, "image/jpeg")}),
                 413, "upload_too_large")

    def chunks():  # streamed: no Content-Length header, the limit is enforced while reading
        for _ in range(40):
            yield bytes(64 * 1024)

    assert_error(client.post("/v1/classify", content=chunks(), headers={"content-type": "image/jpeg"}),
                 413, "upload_too_large")
    assert client.post("/v1/classify", files={"file": ("a.jpg", photos[0][1].read_bytes())}).status_code == 200


def test_requests_that_are_not_photo_uploads(client):
    assert_error(client.post("/v1/classify", content=b"hi", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type", "text/plain", "'file'")
    assert_error(client.post("/v1/classify", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(client.post("/v1/classify", content=b"", headers={"content-type": "image/png"}),
                 422, "empty_upload")
    assert_error(client.post("/v1/classify", files={"photo": ("a.jpg", b"x")}), 422, "missing_file", "'file'")
    assert_error(client.post("/v1/classify", data={"file": "a text field"}, files={"other": ("a.jpg", b"x")}),
                 422, "missing_file")
    broken = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"  # never closed
    response = client.post("/v1/classify", content=broken,
                           headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code in (400, 422) and set(response.json()) == {"error", "detail"}


def test_concurrent_requests_are_batched_and_answered_correctly(classifier, photos):
    app = create_app(classifier, max_batch=8, max_wait_ms=200)
    payloads = [path.read_bytes() for _, path in photos] * 4
    with TestClient(app) as client:
        expected = [client.post("/v1/classify", files={"file": ("a.jpg", p)}).json()["top"] for p in payloads[:4]]
        with ThreadPoolExecutor(len(payloads)) as pool:
            answers = list(pool.map(lambda p: client.post("/v1/classify", files={"file": ("a.jpg", p)}).json(),
                                    payloads))
        health = client.get("/healthz").json()
    for i, answer in enumerate(answers):
        assert [c["index"] for c in answer["top"]] == [c["index"] for c in expected[i % 4]]
        assert np.allclose([c["probability"] for c in answer["top"]],
                           [c["probability"] for c in expected[i % 4]], atol=1e-5)
    assert health["images"] == 4 + len(payloads)
    sizes = app.state.batcher.batch_sizes
    # the 16 concurrent photos shared model calls (the first 4, sent one by one, did not)
    assert max(sizes) > 1 and sum(sizes.values()) - 4 < len(payloads), sizes


def test_full_queue_is_503_and_the_service_recovers(classifier, photos):
    app = create_app(classifier, max_batch=1, max_wait_ms=0, max_queue=1)
    payload = photos[0][1].read_bytes()
    release = threading.Event()
    with TestClient(app) as client:
        # occupy the model thread, so the first photo waits in the model thread's queue, the
        # second in the batcher's queue (size 1), and the rest are refused
        app.state.batcher.executor.submit(release.wait, 30)
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(client.post, "/v1/classify", files={"file": ("a.jpg", payload)})
                       for _ in range(6)]
            deadline = time.monotonic() + 30
            while sum(f.done() for f in futures) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            release.set()
            responses = [f.result(timeout=30) for f in futures]
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503, 503, 503], statuses
        for r in responses:
            if r.status_code == 503:
                assert_error(r, 503, "busy", "retry")
        assert client.post("/v1/classify", files={"file": ("a.jpg", payload)}).status_code == 200


def test_batcher_gathers_waiting_images_up_to_max_batch():
    def run_batch(batch):
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    async def main():
        batcher = DynamicBatcher(run_batch, max_batch=4, max_wait_ms=50, max_queue=16)
        batcher.on_queue_wait = waits.append
        await batcher.start()
        arrays = [np.full((3, 2, 2), i, np.float32) for i in range(10)]
        results = await asyncio.gather(*(batcher.submit(a) for a in arrays))
        await batcher.stop()
        return results, batcher.batch_sizes

    waits = []
    results, sizes = asyncio.run(main())
    assert [float(r[0]) for r in results] == [12.0 * i for i in range(10)]
    assert sizes == {4: 2, 2: 1}
    # one wait per photo; the last two waited out max_wait_ms for company that never came
    assert len(waits) == 10 and min(waits) >= 0 and sorted(waits)[-2] >= 0.045


def test_batcher_refuses_past_its_queue_and_passes_model_errors_to_every_waiter():
    release = threading.Event()

    def run_batch(batch):
        release.wait(10)
        if batch[0, 0] < 0:
            raise ValueError("negative input")
        return batch

    async def main():
        batcher = DynamicBatcher(run_batch, max_batch=2, max_wait_ms=0, max_queue=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.zeros(1)))
        await asyncio.sleep(0.05)  # the batcher takes it and blocks in run_batch
        queued = [asyncio.ensure_future(batcher.submit(np.full(1, -1.0))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="2 images"):
            await batcher.submit(np.zeros(1))
        release.set()
        await first
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(o, ValueError) and "negative" in str(o) for o in outcomes)


def test_serve_command_rejects_bad_settings(capsys, garbage26_model):
    from binwise.cli import main

    assert main(["serve", str(garbage26_model), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    assert main(["serve", "no-such-model.safetensors"]) == 2
    assert "no-such-model.safetensors: no such model file" in capsys.readouterr().err


def test_onnx_model_is_served_without_torch_and_refuses_explain(photos):
    from inference_models import tiny_onnx

    onnx_classifier = Classifier.load(tiny_onnx())
    data = photos[0][1].read_bytes()
    with TestClient(create_app(onnx_classifier)) as client:
        info = client.get("/v1/model").json()
        assert info["backend"] == "onnxruntime" and info["explain"] is False
        answer = client.post("/v1/classify", files={"file": ("a.jpg", data)}).json()
        assert [c["index"] for c in answer["top"]] == [c.index for c in onnx_classifier.predict(data).top]
        assert_error(client.post("/v1/classify?explain=true", files={"file": ("a.jpg", data)}),
                     400, "explain_unavailable", "PyTorch model file")
    # the ONNX path of the service must not import torch (a torch-free install serves .onnx files)
    script = ("import sys; from binwise.inference.classifier import Classifier; from binwise.serving.app import create_app; "
              f"create_app(Classifier.load({str(tiny_onnx())!r})); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_error_status_comes_from_the_problem_not_from_the_file_name(client, photos):
    """An upload's file name is part of the message; it must not change the status."""
    truncated = photos[0][1].read_bytes()[:300]
    assert_error(client.post("/v1/classify", files={"file": ("image too large - not an image.jpg", truncated)}),
                 422, "damaged_image", "image too large - not an image.jpg")


def test_refused_uploads_close_the_connection_and_busy_answers_say_when_to_retry(classifier, photos):
    jpeg = photos[0][1].read_bytes()
    with TestClient(create_app(classifier, max_upload_bytes=1000)) as client:
        too_large = client.post("/v1/classify", content=jpeg, headers={"content-type": "image/jpeg"})
        assert too_large.status_code == 413 and too_large.headers["connection"] == "close"
    app = create_app(classifier, max_explain=1)
    with TestClient(app) as client:
        app.state.explaining = 1  # as if one Grad-CAM request were running
        busy = client.post("/v1/classify?explain=true", files={"file": ("a.jpg", jpeg)})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "Grad-CAM" in busy.json()["detail"]
        assert client.post("/v1/classify", files={"file": ("a.jpg", jpeg)}).status_code == 200


def test_ambiguous_framing_and_stalled_uploads_are_refused():
    import asyncio

    from starlette.requests import Request

    from binwise.serving.uploads import ServiceError, read_upload

    def request(headers: dict, receive):
        scope = {"type": "http", "method": "POST", "path": "/v1/classify",
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        return Request(scope, receive)

    async def stalls():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"late", "more_body": False}

    async def check(headers, receive, status):
        with pytest.raises(ServiceError) as refused:
            await read_upload(request(headers, receive), 10_000, pause_limit_s=0.2)
        assert refused.value.status == status
        return refused.value.detail

    both = {"content-type": "image/jpeg", "content-length": "4", "transfer-encoding": "chunked"}
    assert "Content-Length and Transfer-Encoding" in asyncio.run(check(both, stalls, 400))
    assert "paused for more than 0.2 s" in asyncio.run(check({"content-type": "image/jpeg"}, stalls, 408))

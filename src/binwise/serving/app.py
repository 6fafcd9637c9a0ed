"""The binwise web service: upload a photo, get its bin.

``create_app(classifier)`` builds a FastAPI app around a loaded ``Classifier``:

- ``POST /v1/classify``: a photo as multipart field ``file`` or as the raw request body with an
  image content type. Answers the status (ok, unsure or unknown, see ``binwise.model.status``), the top-k
  classes, the bin and the model id; ``?explain=true`` adds a Grad-CAM overlay (torch models only).
- ``POST /v1/feedback``: a photo the model got wrong and its right class (``binwise.serving.feedback``),
  when the app has a feedback store.
- ``GET /v1/model``: classes, bins, preprocessing, calibration and test metrics of the model (its
  provenance, which names files on the server, only with ``show_provenance``).
- ``GET /healthz``: liveness, queue length and the batch sizes run so far; ``GET /readyz``:
  readiness (the model has scored a test photo).
- ``GET /metrics``: Prometheus metrics (``metrics``; behind the API key when there is one).
- ``GET /``: the page (``serving/static``); ``/docs``: the OpenAPI docs.

Photos are decoded and preprocessed in a thread pool, then a DynamicBatcher runs the model on
batches of concurrent requests in one model thread. Every error is JSON
``{"error": code, "detail": message}``, and no input can take the service down.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hmac
import datetime
import io
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import DynamicBatcher, QueueFull
from ..errors import BinwiseError
from ..images import open_image
from ..memory import DecodeBudget, IdleTrimmer, UploadBudget
from .config import ServeConfig
from .drift import DriftMonitor, DriftReference
from .metrics import ServiceMetrics
from .uploads import (MAX_HEADER_BYTES, MAX_HEADER_FIELDS, ServiceError, client_address, error_for_image,
                      error_response, read_upload, upload_bytes)
from ..taxonomy.files import Region, read_region

STATIC_DIR = files("binwise.serving") / "static"
log = logging.getLogger(__name__)
access_log = logging.getLogger("binwise.access")  # one JSON line per request with --json-access-log
MODEL_REGION = "model"  # the region name of the model file's own bins when its taxonomy has no name

CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def public_metrics(metrics: dict) -> dict:
    """The model's measured numbers (accuracies, intervals, counts), without anything that names a
    file on the server (the unreadable photos' paths, for one)."""
    def is_numeric(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(is_numeric(v) for v in value)
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    return {k: v for k, v in metrics.items() if is_numeric(v)}


def create_app(classifier, config: ServeConfig | None = None, *, feedback_store=None, **settings) -> FastAPI:
    """A FastAPI app serving ``classifier`` (a ``binwise.inference.classifier.Classifier``) with ``config``'s limits
    and switches (``config.ServeConfig``; ``settings``: fields of it to change, by name).

    ``api_key``: every ``/v1/`` request must carry it (``X-API-Key`` header, or ``Authorization:
    Bearer``); the page and /healthz stay open. ``upload_budget_bytes`` and ``decode_budget_bytes``
    are ``binwise.memory.UploadBudget`` and ``DecodeBudget``; ``trim_idle_s`` drives
    ``binwise.memory.IdleTrimmer``. ``feedback_store``: a ``binwise.serving.feedback.store`` store, which
    turns on ``POST /v1/feedback``."""
    config = replace(config or ServeConfig(), **settings).check()
    if feedback_store is None and (config.keep_uncertain or config.reviewer_keys):
        raise BinwiseError("--keep-uncertain and --reviewer-keys need a store: add --feedback-db")
    regions = region_views(classifier, config)  # {name: (Region, classifier answering with its bins)}
    reference = DriftReference.from_calibration(classifier.meta.calibration)
    drift = None if reference is None else DriftMonitor(reference, config.drift_window, config.drift_false_alarm,
                                                         on_change=log_drift)
    default_region = config.default_region or classifier.taxonomy.name or MODEL_REGION
    # One model thread for batches and Grad-CAM: one model call already uses every core through
    # torch's or onnxruntime's own threads, so running two at once would only make both slower.
    model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="binwise-model")
    decoders = concurrent.futures.ThreadPoolExecutor(config.decode_threads or min(4, os.cpu_count() or 1),
                                                     thread_name_prefix="binwise-decode")
    def score_rows(pixels):
        """One (probabilities, similarity) per photo: the batcher hands each request its own row."""
        probabilities, similarity = classifier.score_arrays(pixels)
        return [(row, None if similarity is None else float(similarity[i])) for i, row in enumerate(probabilities)]

    batcher = DynamicBatcher(score_rows, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                             max_queue=config.max_queue, executor=model_thread)
    upload_budget = UploadBudget(config.upload_budget_bytes, wait_s=config.body_timeout_s,
                                 per_client_bytes=config.client_upload_budget_bytes)
    decode_budget = DecodeBudget(config.decode_budget_bytes)
    trimmer = IdleTrimmer(config.trim_idle_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        trimming = asyncio.create_task(trimmer.run(), name="binwise-trimmer")
        readiness = asyncio.create_task(score_test_photo(), name="binwise-readiness")
        try:
            yield
        finally:
            trimming.cancel()
            readiness.cancel()
            await batcher.stop()
            if keeper is not None:
                keeper.close()
            if feedback_store is not None:
                close_review()
                close_feedback()
            decoders.shutdown(wait=False, cancel_futures=True)
            model_thread.shutdown(wait=False, cancel_futures=True)

    # FastAPIOffline: the /docs page with Swagger UI served from the package, not from a CDN
    app = FastAPIOffline(title="binwise", lifespan=lifespan,
                         description="Which bin does it go in? Upload a photo, get its bin.")
    app.state.classifier = classifier
    app.state.batcher = batcher
    app.state.trimmer = trimmer
    app.state.decode_budget = decode_budget
    app.state.upload_budget = upload_budget
    # Requests past reading their upload: decoding, queued or in the running batch. Bounded so a
    # flood of uploads cannot pile up decoded photos in memory faster than the model drains them.
    app.state.in_flight = 0
    app.state.explaining = 0
    app.state.ready = False  # a test photo went through the model (GET /readyz)
    max_in_flight = config.max_queue + config.max_batch
    keeper = None
    if config.keep_uncertain:
        from .feedback.capture import Keeper

        keeper = Keeper(feedback_store, classifier.model_id, config.keep_rate, config.review_max_items,
                        config.review_network_items)

    async def score_test_photo():
        """Ready once the model has scored a mid-grey photo (in its own thread, outside the batch counts)."""
        size = classifier.preprocessing.input_size
        pixels = np.full((1, size, size, 3), 128, dtype=np.uint8)
        await asyncio.get_running_loop().run_in_executor(model_thread, classifier.score_arrays, pixels)
        app.state.ready = True

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, e: ServiceError):
        return error_response(e.status, e.error, e.detail, e.headers)

    if config.api_key:
        expected = config.api_key.encode()

        @app.middleware("http")
        async def require_api_key(request: Request, call_next):
            if request.url.path.startswith("/v1/") or request.url.path == "/metrics":
                given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
                if not hmac.compare_digest(given.encode(), expected):
                    return error_response(401, "unauthorized", "this service needs its API key (X-API-Key header)")
            return await call_next(request)

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])

    @app.middleware("http")
    async def count_request(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route, seconds = metrics.route_of(request), time.perf_counter() - started
        metrics.observe(route, response.status_code, seconds)
        if config.json_access_log:
            access_log.info(json.dumps({
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "client": client_address(request, config.trust_forwarded_for), "method": request.method,
                "route": route, "path": request.url.path[:200], "status": response.status_code,
                "seconds": round(seconds, 4)}))
        return response

    # added last, so it runs first: before the API key is even looked at
    @app.middleware("http")
    async def limit_headers(request: Request, call_next):
        headers = request.scope["headers"]
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if len(headers) > MAX_HEADER_FIELDS or size > MAX_HEADER_BYTES:
            return error_response(431, "headers_too_large", f"request headers too large ({len(headers)} fields, "
                                  f"{size:,} bytes; at most {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES:,} bytes)")
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "bad_request")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        return error_response(422, "invalid_parameter", problems)

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, e: Exception):
        # a bug, not bad input: still JSON, and the service goes on serving
        return error_response(500, "internal_error", f"{type(e).__name__}: {e}")

    @app.post("/v1/classify", openapi_extra=CLASSIFY_BODY,
              summary="Classify one photo: its bin, top-k classes and, optionally, a Grad-CAM overlay")
    async def classify(request: Request,
                       top_k: int = Query(5, ge=1, le=classifier.taxonomy.num_classes),
                       explain: bool = Query(False, description="add a Grad-CAM overlay (base64 PNG)"),
                       region: str | None = Query(None, description="whose bins to answer with (GET /v1/regions)"),
                       keep: bool = Query(True, description="false: this photo must not be kept for reviewers (a "
                                          "service started with --keep-uncertain keeps photos answered unsure or "
                                          "unknown)")):
        region = region or default_region
        if region not in regions:
            raise ServiceError(400, "unknown_region", f"no region {region[:60]!r} here; this service has: "
                               f"{', '.join(regions)}")
        async with holding_upload(request):
            return await classify_upload(request, top_k, explain, region, keep)

    @asynccontextmanager
    async def holding_upload(request: Request):
        """A request that uploads a photo: activity (no trimming meanwhile), within the upload budget."""
        with trimmer.request():
            try:
                async with upload_budget.reserve(upload_bytes(request, config.max_upload_bytes), "upload",
                                                 client_address(request, config.trust_forwarded_for)):
                    yield
            except BinwiseError as e:
                if e.kind not in ("upload_busy", "client_upload_busy"):
                    raise
                raise error_for_image(e) from None

    async def classify_upload(request: Request, top_k: int, explain: bool, region: str, keep: bool) -> dict:
        if explain and not can_explain(classifier):
            raise ServiceError(400, "explain_unavailable", "Grad-CAM needs the PyTorch model file "
                               "(.safetensors); this service runs an ONNX model")
        upload = await read_upload(request, config.max_upload_bytes, config.body_timeout_s, config.min_upload_rate)
        data, name = upload.data, upload.name
        probabilities, similarity = await score_upload(data, name)
        rules, view = regions[region]
        answer = {"model": classifier.model_id,
                  **view.prediction(name, probabilities, top_k, similarity).to_dict(),
                  "confidence": float(probabilities.max()),
                  "region": {"name": rules.name, "version": rules.version}}
        metrics.answered(answer)
        if keeper is not None:
            answer["kept"] = keep and await keeper.keep(
                data, probabilities, answer, client_address(request, config.trust_forwarded_for), region)
        if drift is not None:
            drift.add(answer["status"], answer["top"][0]["index"])
        if explain:
            if app.state.explaining >= config.max_explain:
                raise ServiceError(503, "busy", f"{app.state.explaining} Grad-CAM requests are running; retry shortly")
            app.state.explaining += 1
            try:
                answer["explain"] = await asyncio.get_running_loop().run_in_executor(
                    model_thread, explain_overlay, classifier, data, answer["top"][0]["index"])
            finally:
                app.state.explaining -= 1
        return answer

    async def score_upload(data: bytes, name: str):
        """(calibrated probabilities, similarity) of an uploaded photo; 503 when too many are in progress."""
        if app.state.in_flight >= max_in_flight:
            raise ServiceError(503, "busy", f"the service is busy ({app.state.in_flight} photos in "
                               f"progress); retry shortly")
        app.state.in_flight += 1
        try:
            return await classify_photo(data, name)
        finally:
            app.state.in_flight -= 1

    async def classify_photo(data: bytes, name: str):
        loop = asyncio.get_running_loop()
        try:
            array = await loop.run_in_executor(decoders, classifier.load_image, data, name, config.max_upload_pixels,
                                               decode_budget)
        except BinwiseError as e:
            raise error_for_image(e) from None
        try:
            return await batcher.submit(array)
        except QueueFull as e:
            raise ServiceError(503, "busy", f"the service is busy ({e}); retry shortly") from None

    @app.get("/v1/model", summary="The served model: classes, bins, preprocessing, calibration, test metrics")
    async def model_info():
        architecture = classifier.meta.architecture
        info = {"model": classifier.model_id,
                "binwise_version": classifier.meta.binwise_version,
                "backend": classifier.backend,
                "explain": can_explain(classifier),
                "feedback": feedback_store is not None,
                "keeps_uncertain": keeper is not None,
                **classifier.taxonomy.to_dict(),
                "preprocessing": classifier.preprocessing.to_dict(),
                "architecture": {k: architecture.get(k) for k in ("name", "width_mult", "padding", "num_classes")},
                "metrics": public_metrics(classifier.meta.metrics),
                "calibration": {"temperature": classifier.calibration.temperature,
                                "fitted": classifier.calibration.fitted,
                                **classifier.calibration.thresholds.to_dict(),
                                "note": classifier.status_note},
                "limits": config.limits()}
        if config.show_provenance:
            info["provenance"] = classifier.meta.provenance
        return info

    @app.get("/v1/regions", summary="The regions whose bins this service answers with (?region=NAME)")
    async def list_regions():
        return {"default": default_region, "regions": [rules.to_dict() for rules, _ in regions.values()]}

    @app.get("/v1/drift", summary="Are the photos unlike the model's held-out ones? Windows of answers, tested")
    async def drift_report():
        if drift is None:
            return {"available": False, "reason": "the model file has no held-out answer mix (calibration."
                    "held_out_mix); models trained by binwise since 2026-12-07 have one"}
        return drift.report()

    @app.get("/healthz", summary="Liveness and batching statistics")
    async def healthz():
        sizes = batcher.batch_sizes
        batches, images = sum(sizes.values()), sum(size * n for size, n in sizes.items())
        return {"status": "ok", "model": classifier.model_id, "in_flight": app.state.in_flight,
                "queued": batcher.queued,
                "batches": batches, "images": images,
                "mean_batch_size": round(images / batches, 2) if batches else None}

    if feedback_store is not None:
        from .feedback.review_routes import add_review_routes, read_reviewer_keys
        from .feedback.routes import add_feedback_route

        close_feedback = add_feedback_route(app, feedback_store, classifier, score_upload, holding_upload,
                                            max_upload_bytes=config.max_upload_bytes,
                                            body_timeout_s=config.body_timeout_s,
                                            min_upload_rate=config.min_upload_rate, per_minute=config.feedback_rate,
                                            trust_forwarded_for=config.trust_forwarded_for,
                                            regions=tuple(regions), default_region=default_region,
                                            review_max_items=config.review_max_items)
        close_review = (add_review_routes(app, feedback_store, classifier, read_reviewer_keys(config.reviewer_keys),
                                          config.review_agree, STATIC_DIR / "review.html")
                        if config.reviewer_keys else lambda: None)

    @app.get("/readyz", summary="Readiness: the model is loaded and has scored a test photo")
    async def readyz():
        if not app.state.ready:
            raise ServiceError(503, "not_ready", "the model has not scored its test photo yet")
        return {"status": "ready", "model": classifier.model_id}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    # Prometheus counters per route template; every route is known by now
    metrics = ServiceMetrics(classifier, batcher, lambda: app.state.in_flight,
                             {route.path for route in app.routes if hasattr(route, "path")}, drift,
                             {"upload": upload_budget, "decode": decode_budget})
    app.state.metrics = metrics
    return app


def log_drift(report: dict) -> None:
    last = report["last_window"]
    if report["alarm"]:
        log.warning("drift: the last %d photos are unlike the model's held-out ones (statuses p = %.2g, classes "
                    "p = %.2g; answered ok %.0f%%, held out %.0f%%): GET /v1/drift", last["photos"],
                    last["p_statuses"], last["p_classes"], 100 * last["statuses"]["ok"],
                    100 * report["reference"]["statuses"]["ok"])
    else:
        log.info("drift: the last %d photos look like the held-out ones again", last["photos"])


def region_views(classifier, config: ServeConfig) -> dict:
    """{name: (Region, the classifier answering with its bins)}: the model file's own bins, then each
    ``--region``; refused at start-up, in one line, when rules do not cover the model's classes or the
    default names none of them."""
    own = Region(classifier.taxonomy.name or MODEL_REGION, classifier.taxonomy, "the model file's own bins")
    views = {own.name: (own, classifier)}
    for spec in config.regions:
        rules = read_region(spec, classifier.taxonomy)
        views[rules.name] = (rules, classifier.with_bins(rules.taxonomy))
    if config.default_region and config.default_region not in views:
        raise BinwiseError(f"--default-region {config.default_region!r} is none of this service's regions "
                           f"({', '.join(views)}); add it with --region")
    return views


def can_explain(classifier) -> bool:
    return classifier.backend == "torch"


def explain_overlay(classifier, data: bytes, class_index: int) -> dict:
    """Grad-CAM for ``class_index`` over the photo as the model saw it, as a base64 PNG."""
    from ..inference.explain import grad_cam, overlay

    image = open_image(data)
    heatmap, index = grad_cam(classifier, image, class_index)
    buffer = io.BytesIO()
    overlay(image, heatmap, preprocessing=classifier.preprocessing).save(buffer, format="PNG")
    return {"class_index": index, "overlay_png": base64.b64encode(buffer.getvalue()).decode("ascii")}

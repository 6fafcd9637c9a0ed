"""``binwise serve MODEL``: the web service and its page."""

from __future__ import annotations


from ..feedback import DEFAULT_MAX_ROWS
from ..predict import BACKENDS
from .predict import add_threshold_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a model over HTTP: the photo page at /, the JSON API at "
                              "/v1/classify, the API docs at /docs")
    p.add_argument("model", help="a binwise .safetensors model file, or an exported .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; "
                   "0.0.0.0 to accept other machines)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference engine (default: by the file's extension)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N to run a .safetensors model on a "
                   "GPU (batch-1 calls replay a CUDA graph)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most photos run through the model at once (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest a photo waits for others to batch with (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="photos waiting beyond this get HTTP 503 (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest accepted upload in MB (default: %(default)s)")
    p.add_argument("--max-upload-megapixels", type=float, default=64.0,
                   help="largest uploaded image, in millions of pixels, read from its header (default: %(default)s; "
                   "local files: 200)")
    p.add_argument("--upload-budget-mb", type=float, default=256.0,
                   help="memory the uploads being received and classified may hold together, in MiB (twice each "
                   "one's size); more wait before their body is read, up to --body-timeout, then get 503 "
                   "(default: %(default)s)")
    p.add_argument("--decode-budget-mb", type=float, default=512.0,
                   help="memory all photos being decoded may take together, in MiB: an image that needs more gets "
                   "413, one that finds no room within 10 s gets 503 (default: %(default)s)")
    p.add_argument("--trim-idle", type=float, default=1.0, metavar="SECONDS",
                   help="after this long without requests, freed memory goes back to the system (default: %(default)s)")
    add_threshold_arguments(p)
    p.add_argument("--max-explain", type=int, default=2,
                   help="Grad-CAM requests run at once; more get 503 (default: %(default)s)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="longest a client may take to send a request's headers before the connection is closed "
                   "(default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="longest pause inside an upload before it is refused with 408 (default: %(default)s)")
    p.add_argument("--api-key", metavar="KEY", help="require this key (X-API-Key header) on every /v1/ request "
                   "(default: $BINWISE_API_KEY; none: open). The page passes it on from its own URL, /?key=KEY")
    p.add_argument("--show-provenance", action="store_true", help="let /v1/model show where the model came from "
                   "(paths of its training data and weights, its training config); hidden by default")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a site (https://example.org) whose pages may call the API from a browser; repeatable "
                   "(default: none)")
    p.add_argument("--feedback-db", metavar="PATH|URL", help="turn on POST /v1/feedback and the page's "
                   "'Wrong? Tell us', recording into this SQLite file (created, with the photos in photos/ beside "
                   "it) or PostgreSQL database (postgresql://..., shared by replicas; the 'postgres' extra). "
                   "Default: no feedback")
    p.add_argument("--feedback-rate", type=int, default=30, metavar="N",
                   help="feedbacks one client may post a minute; more get 429 (default: %(default)s)")
    p.add_argument("--feedback-max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help="rows the feedback store may hold; past that feedback gets 507 (default: %(default)s)")
    p.add_argument("--trust-forwarded-for", action="store_true", help="behind a proxy: a feedback's client is the "
                   "last address in X-Forwarded-For (the one the proxy adds), not the connection's")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import uvicorn

    from ..errors import BinwiseError
    from ..predict import Classifier
    from .process import own_the_process
    from ..service import create_app

    for flag in ("max_batch", "max_queue", "port", "max_explain", "feedback_rate", "feedback_max_rows"):
        if getattr(args, flag) < 1:
            raise BinwiseError(f"--{flag.replace('_', '-')} must be at least 1")
    positive = ("max_upload_mb", "max_upload_megapixels", "upload_budget_mb", "decode_budget_mb", "trim_idle",
                "body_timeout", "header_timeout")
    if args.max_wait_ms < 0 or min(getattr(args, flag) for flag in positive) <= 0:
        raise BinwiseError("--max-wait-ms must not be negative; "
                           f"{', '.join('--' + flag.replace('_', '-') for flag in positive)} must be positive")
    own_the_process(args.threads)
    classifier = Classifier.load(args.model, backend=args.backend, threads=args.threads, device=args.device)
    classifier.set_thresholds(args.min_confidence, args.min_similarity)
    if classifier.status_note:
        print(f"binwise serve: note: {classifier.status_note}", flush=True)
    feedback_store = None
    if args.feedback_db:
        from ..feedback.store import open_store

        feedback_store = open_store(args.feedback_db, max_rows=args.feedback_max_rows)
        print(f"binwise serve: feedback recorded in {feedback_store.name}", flush=True)
    app = create_app(classifier, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     max_queue=args.max_queue, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     api_key=args.api_key or os.environ.get("BINWISE_API_KEY") or None,
                     show_provenance=args.show_provenance, cors_origins=tuple(args.cors_origin),
                     max_explain=args.max_explain, body_timeout_s=args.body_timeout,
                     feedback_store=feedback_store, feedback_rate=args.feedback_rate,
                     trust_forwarded_for=args.trust_forwarded_for,
                     max_upload_pixels=int(args.max_upload_megapixels * 1e6),
                     upload_budget_bytes=int(args.upload_budget_mb * 1024 * 1024),
                     decode_budget_bytes=int(args.decode_budget_mb * 1024 * 1024), trim_idle_s=args.trim_idle)
    print(f"binwise serve: {classifier.model_id} at http://{args.host}:{args.port}/ (API docs at /docs)",
          flush=True)
    # Idle keep-alive connections stay open 65 s (uvicorn's default is 5 s, the same as httpx's
    # own expiry): a client reusing a connection just as the server drops it gets no answer at
    # all, likely the one ReadError in 3,385 requests of benchmarks/load.py. 65 s outlasts the
    # 60 s idle timeout of common proxies too, so clients and proxies close first.
    from ..http_limits import with_header_timeout

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=65,
                http=with_header_timeout(args.header_timeout))
    return 0

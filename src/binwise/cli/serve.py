"""``binwise serve MODEL``: the web service and its page."""

from __future__ import annotations

from dataclasses import fields

from ..inference.classifier import BACKENDS
from ..serving.config import ServeConfig
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
    add_threshold_arguments(p)
    p.add_argument("--feedback-db", metavar="PATH|URL", help="turn on POST /v1/feedback and the page's "
                   "'Wrong? Tell us', recording into this SQLite file (created, with the photos in photos/ beside "
                   "it) or PostgreSQL database (postgresql://..., shared by replicas; the 'postgres' extra). "
                   "Default: no feedback")
    settings = p.add_argument_group("limits and switches (binwise.serving.config.ServeConfig)")
    for f in fields(ServeConfig):  # one flag per field, in the flag's unit
        meta, default = f.metadata, f.default
        if isinstance(default, bool):
            settings.add_argument(meta["flag"], dest=f"serve:{f.name}", action="store_true", help=meta["help"])
        elif isinstance(default, tuple):
            settings.add_argument(meta["flag"], dest=f"serve:{f.name}", action="append", default=[],
                                  metavar=meta["unit"], help=meta["help"])
        else:
            text = f.name == "api_key" or isinstance(default, str)
            kind = str if text else float if meta["scale"] != 1 or isinstance(default, float) else int
            shown = "" if default is None or text else f" (default: {default / meta['scale']:g})"
            settings.add_argument(meta["flag"], dest=f"serve:{f.name}", type=kind, metavar=meta["unit"],
                                  default=default / meta["scale"] if meta["scale"] != 1 else default,
                                  help=meta["help"] + shown)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import uvicorn

    from ..errors import BinwiseError
    from ..inference.classifier import Classifier
    from ..serving.app import create_app
    from .process import own_the_process

    if args.port < 1:
        raise BinwiseError("--port must be at least 1")
    settings = {}
    for f in fields(ServeConfig):
        value = getattr(args, f"serve:{f.name}")
        scale = f.metadata["scale"]
        settings[f.name] = (tuple(value) if isinstance(f.default, tuple) else
                            int(value * scale) if scale != 1 else value)
    settings["api_key"] = settings["api_key"] or os.environ.get("BINWISE_API_KEY") or None
    config = ServeConfig(**settings).check()
    own_the_process(args.threads)
    classifier = Classifier.load(args.model, backend=args.backend, threads=args.threads, device=args.device)
    classifier.set_thresholds(args.min_confidence, args.min_similarity)
    if classifier.status_note:
        print(f"binwise serve: note: {classifier.status_note}", flush=True)
    feedback_store = None
    if args.feedback_db:
        from ..serving.feedback.stores import open_store

        feedback_store = open_store(args.feedback_db, max_rows=config.feedback_max_rows,
                                    max_bytes=config.feedback_max_bytes, network_bytes=config.feedback_network_bytes)
        print(f"binwise serve: feedback recorded in {feedback_store.name}", flush=True)
    app = create_app(classifier, config, feedback_store=feedback_store)
    print(f"binwise serve: {classifier.model_id} at http://{args.host}:{args.port}/ (API docs at /docs)",
          flush=True)
    # Idle keep-alive connections stay open 65 s (uvicorn's default is 5 s, the same as httpx's
    # own expiry): a client reusing a connection just as the server drops it gets no answer at
    # all, likely the one ReadError in 3,385 requests of benchmarks/speed/load.py. 65 s outlasts the
    # 60 s idle timeout of common proxies too, so clients and proxies close first.
    from ..serving.http_limits import with_header_timeout

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=65,
                http=with_header_timeout(config.header_timeout_s), access_log=not config.json_access_log)
    return 0

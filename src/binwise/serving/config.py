"""How the service runs: its limits and switches, as one typed object.

Each field is one ``binwise serve`` flag (``cli/serve.py`` makes them from the metadata here: the
flag, its unit on the command line and its help) and one keyword of ``service.create_app``; the
limits are reported by ``GET /v1/model``. Fields hold the library's units (bytes, pixels,
seconds); a flag given in MB or megapixels is scaled once, here. A new service limit is one field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import BinwiseError
from .feedback import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_NETWORK_BYTES
from .feedback.review import DEFAULT_AGREE, DEFAULT_MAX_ITEMS, DEFAULT_NETWORK_ITEMS

MIB = 1024 * 1024


def _flag(name: str, help: str, scale: float = 1, unit: str | None = None, limit: bool = True):
    """``scale``: library units per command-line unit; ``limit``: a number /v1/model reports."""
    return {"flag": name, "help": help, "scale": scale, "unit": unit, "limit": limit}


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = field(default=32, metadata=_flag(
        "--max-batch", "most photos run through the model at once"))
    max_wait_ms: float = field(default=5.0, metadata=_flag(
        "--max-wait-ms", "longest a photo waits for others to batch with"))
    max_queue: int = field(default=256, metadata=_flag(
        "--max-queue", "photos waiting beyond this get HTTP 503"))
    max_upload_bytes: int = field(default=10 * MIB, metadata=_flag(
        "--max-upload-mb", "largest accepted upload in MB", scale=MIB, unit="MB"))
    max_upload_pixels: int = field(default=64_000_000, metadata=_flag(
        "--max-upload-megapixels", "largest uploaded image, in millions of pixels, read from its header "
        "(local files: 200)", scale=1e6, unit="MEGAPIXELS"))
    upload_budget_bytes: int = field(default=256 * MIB, metadata=_flag(
        "--upload-budget-mb", "memory the uploads being received and classified may hold together, in MiB "
        "(twice each one's size); more wait before their body is read, up to --body-timeout, then get 503",
        scale=MIB, unit="MB"))
    client_upload_budget_bytes: int = field(default=64 * MIB, metadata=_flag(
        "--client-upload-budget-mb", "of --upload-budget-mb, what one client (address) may hold; more of its "
        "uploads get 429 at once", scale=MIB, unit="MB"))
    min_upload_rate: int = field(default=4096, metadata=_flag(
        "--min-upload-kbps", "an upload must average at least this many KiB a second (after --body-timeout "
        "of grace) or it is refused with 408, so slow clients cannot hold the upload budget", scale=1024,
        unit="KIB/S"))
    decode_budget_bytes: int = field(default=512 * MIB, metadata=_flag(
        "--decode-budget-mb", "memory all photos being decoded may take together, in MiB: an image that needs "
        "more gets 413, one that finds no room within 10 s gets 503", scale=MIB, unit="MB"))
    trim_idle_s: float = field(default=1.0, metadata=_flag(
        "--trim-idle", "after this long without requests, freed memory goes back to the system", unit="SECONDS"))
    max_explain: int = field(default=2, metadata=_flag(
        "--max-explain", "Grad-CAM requests run at once; more get 503"))
    header_timeout_s: float = field(default=10.0, metadata=_flag(
        "--header-timeout", "longest a client may take to send a request's headers before the connection is "
        "closed", unit="SECONDS"))
    body_timeout_s: float = field(default=30.0, metadata=_flag(
        "--body-timeout", "longest pause inside an upload before it is refused with 408", unit="SECONDS"))
    feedback_rate: int = field(default=30, metadata=_flag(
        "--feedback-rate", "feedbacks one client may post a minute; more get 429", unit="N"))
    feedback_max_rows: int = field(default=DEFAULT_MAX_ROWS, metadata=_flag(
        "--feedback-max-rows", "rows the feedback store may hold; past that feedback gets 507", unit="N"))
    feedback_max_bytes: int = field(default=DEFAULT_MAX_BYTES, metadata=_flag(
        "--feedback-max-mb", "photo bytes the feedback store may hold; past that feedback gets 507", scale=MIB,
        unit="MB"))
    feedback_network_bytes: int = field(default=DEFAULT_NETWORK_BYTES, metadata=_flag(
        "--feedback-network-mb", "photo bytes one network (IPv4 /24, IPv6 /56) may store; past that its "
        "feedback gets 429", scale=MIB, unit="MB"))
    keep_uncertain: bool = field(default=False, metadata=_flag(
        "--keep-uncertain", "with --feedback-db: keep the photos answered unsure or unknown for reviewers (binwise "
        "review); the page and /v1/model say so, each answer says whether its photo was kept, and a request "
        "refuses with ?keep=false", limit=False))
    keep_rate: int = field(default=30, metadata=_flag(
        "--keep-rate", "uncertain photos kept from one network a minute; more are answered but not kept", unit="N"))
    review_max_items: int = field(default=DEFAULT_MAX_ITEMS, metadata=_flag(
        "--review-max-items", "photos the review queue holds (feedback and kept); past that none is added", unit="N"))
    review_network_items: int = field(default=DEFAULT_NETWORK_ITEMS, metadata=_flag(
        "--review-network-items", "kept photos one network (IPv4 /24, IPv6 /56) may add to the review queue",
        unit="N"))
    reviewer_keys: str = field(default="", metadata=_flag(
        "--reviewer-keys", "with --feedback-db: turn on the /review page for the reviewers in this file (lines "
        "'NAME KEY', a key of 16 characters or more each)", unit="FILE", limit=False))
    review_agree: int = field(default=DEFAULT_AGREE, metadata=_flag(
        "--review-agree", "reviewers who must give an item one label before it is decided", unit="N", limit=False))
    api_key: str | None = field(default=None, metadata=_flag(
        "--api-key", "require this key (X-API-Key header) on every /v1/ request (default: $BINWISE_API_KEY; "
        "none: open). The page passes it on from its own URL, /?key=KEY", unit="KEY", limit=False))
    show_provenance: bool = field(default=False, metadata=_flag(
        "--show-provenance", "let /v1/model show where the model came from (paths of its training data and "
        "weights, its training config); hidden by default", limit=False))
    drift_window: int = field(default=500, metadata=_flag(
        "--drift-window", "photos per drift test: each window of answers is compared with the model's held-out "
        "mix (GET /v1/drift)", unit="PHOTOS", limit=False))
    drift_false_alarm: float = field(default=0.001, metadata=_flag(
        "--drift-false-alarm", "share of windows of photos like the held-out ones that may still raise the drift "
        "alarm", unit="P", limit=False))
    regions: tuple[str, ...] = field(default=(), metadata=_flag(
        "--region", "also answer with this region's bins when a request asks (?region=NAME): a shipped rule set "
        "(shanghai, beijing, germany) or a rule file covering the model's classes; repeatable", unit="NAME|FILE",
        limit=False))
    default_region: str = field(default="", metadata=_flag(
        "--default-region", "the region a request without ?region= gets (default: the model file's own bins)",
        unit="NAME", limit=False))
    json_access_log: bool = field(default=False, metadata=_flag(
        "--json-access-log", "log each request as one JSON line (time, client, method, route, path, status, "
        "seconds) instead of uvicorn's text access log", limit=False))
    cors_origins: tuple[str, ...] = field(default=(), metadata=_flag(
        "--cors-origin", "a site (https://example.org) whose pages may call the API from a browser; repeatable "
        "(default: none)", unit="ORIGIN", limit=False))
    trust_forwarded_for: bool = field(default=False, metadata=_flag(
        "--trust-forwarded-for", "behind a proxy: a feedback's client is the last address in X-Forwarded-For "
        "(the one the proxy adds), not the connection's", limit=False))
    decode_threads: int | None = field(default=None, metadata=_flag(
        "--decode-threads", "threads decoding uploaded photos (default: up to 4, one per core)", limit=False))

    def check(self) -> "ServeConfig":
        """Refuse a setting out of range in one line that names its flag."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if f.name == "max_wait_ms":
                ok, rule = value >= 0, "must not be negative"
            elif isinstance(f.default, int) and f.metadata["scale"] == 1:
                ok, rule = value >= 1, "must be at least 1"
            else:
                ok, rule = value > 0, "must be positive"
            if not ok:
                raise BinwiseError(f"{f.metadata['flag']} {rule}, got {value / f.metadata['scale']:g}")
        return self

    def limits(self) -> dict:
        """The numbers ``/v1/model`` reports."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["limit"]}

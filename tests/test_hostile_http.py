"""A catalogue of hostile and broken HTTP requests against a real ``binwise serve``.

Each request is written byte by byte on its own socket, as an attacker or a broken client would
send it: bad framing, oversized parts, slow clients, bad parameters, paths outside the site,
missing or wrong API keys. For every one: the answer is the expected status (never a 500, which
would mean binwise broke; a 4xx is the client's fault), it comes within a bound (the server runs
with 1 s header and body timeouts: nothing hangs), and a request the server refused mid-body ends
with the connection closed. After the catalogue the server still classifies a photo and its log
holds no traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from PIL import Image

from binwise.serving.process import serving

KEY = "catalogue-key"
UPLOAD_LIMIT = 1024 * 1024  # --max-upload-mb 1
TIMEOUT_S = 1.0  # --header-timeout and --body-timeout


def jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 160, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = jpeg()


def request(method: str, target: str, body: bytes = b"", *, key: str | None = KEY, headers: dict | None = None,
            length: bool = True) -> bytes:
    """One HTTP/1.1 request as bytes: a Host header, the API key, Content-Length unless ``length``
    is false, and ``headers`` (a None value leaves that header out)."""
    fields = {"Host": "binwise.test", "X-API-Key": key,
              "Content-Length": str(len(body)) if length and (body or method == "POST") else None,
              **(headers or {})}
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return head.encode() + b"\r\n" + body  # UTF-8: non-ASCII header bytes are part of the catalogue


def classify(body: bytes = PHOTO, content_type: str | None = "image/jpeg", target: str = "/v1/classify",
             **options) -> bytes:
    headers = {"Content-Type": content_type, **options.pop("headers", {})}
    return request("POST", target, body, headers=headers, **options)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "catalogue") -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None, content) parts."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def form(parts, boundary: str = "catalogue", **options) -> bytes:
    body, content_type = multipart(parts, boundary)
    return classify(body, content_type, **options)


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


@dataclass
class Hostile:
    """One hostile request: the bytes sent (``pieces``, with a pause of ``pause_s`` after each but
    the last, for slow clients), the statuses that are a right answer (None: the server closes the
    connection without an answer), and whether the server must close the connection after it."""

    id: str
    pieces: list[bytes]
    status: set[int | None]
    closes: bool = False
    pause_s: float = 0.0
    then_wait: bool = False  # a slow client: after the last piece, nothing more comes
    hangs_up: bool = False  # the client closes the connection right after its last piece
    answers: int = 1  # answers to wait for (pipelined requests get one each)
    seconds: float = 10.0  # the longest the whole exchange may take
    body_has: str = ""
    options: dict = field(default_factory=dict)


def one(id, raw, status, **kw) -> Hostile:
    return Hostile(id, [raw], status if isinstance(status, set) else {status}, **kw)


POST_HEAD = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\nContent-Type: image/jpeg\r\n"

CATALOGUE = [
    # the API key
    one("no-api-key", classify(key=None), 401),
    one("wrong-api-key", classify(key="guess"), 401),
    one("api-key-of-64-kb", classify(key="k" * 65536), {400, 431}, closes=True),
    one("api-key-non-ascii", request("GET", "/v1/model", headers={"X-API-Key": "ключ"}, key=None), 401),
    one("bearer-empty", request("GET", "/v1/model", headers={"Authorization": "Bearer "}, key=None), 401),
    one("page-is-open-without-key", request("GET", "/", key=None), 200),
    # method, path and request line
    one("get-classify", request("GET", "/v1/classify"), 405),
    one("delete-model", request("DELETE", "/v1/model"), 405),
    one("unknown-method", request("BREW", "/v1/classify"), {400, 405, 501}),
    one("unknown-path", request("GET", "/v1/admin"), 404),
    one("dot-dot-in-static-path", request("GET", "/static/../../../../etc/passwd"), 404),
    one("encoded-dot-dot-in-static-path", request("GET", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd"), 404),
    one("nul-in-path", request("GET", "/static/app.js%00.png"), {400, 404}),
    one("absolute-form-target", classify(target="http://evil.example/v1/classify"), {200, 400, 404}),
    one("url-of-100-kb", request("GET", "/v1/model?" + "a=1&" * 25000), {200, 400, 414, 431}),
    one("10000-query-parameters", classify(target="/v1/classify?" + "&".join(f"p{i}=1" for i in range(3000))),
        {200, 400, 414}),
    one("garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100) + b"\r\n\r\n", {400, None},
        closes=True),
    one("http-0.9", b"GET /\r\n\r\n", {400, None}, closes=True),
    one("no-host-header", b"GET /healthz HTTP/1.1\r\n\r\n", 400, closes=True),
    one("header-of-100-kb", request("GET", "/v1/model", headers={"X-Pad": "p" * 100_000}), {400, 431, None},
        closes=True),
    one("5000-headers", request("GET", "/v1/model", headers={f"X-H{i}": "1" for i in range(5000)}),
        {400, 431, None}, closes=True),
    one("header-without-colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", 400, closes=True),
    one("header-with-bare-lf-injection", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n", {400, 200}),
    # parameters
    one("top-k-zero", classify(target="/v1/classify?top_k=0"), 422, body_has="top_k"),
    one("top-k-not-a-number", classify(target="/v1/classify?top_k=five"), 422, body_has="top_k"),
    one("top-k-huge", classify(target="/v1/classify?top_k=" + "9" * 400), 422, body_has="top_k"),
    one("explain-not-a-boolean", classify(target="/v1/classify?explain=perhaps"), 422, body_has="explain"),
    one("explain-twice", classify(target="/v1/classify?explain=true&explain=false"), {200, 422}),
    # framing
    one("content-length-and-chunked", POST_HEAD + b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(PHOTO), {400}, closes=True),
    one("two-different-content-lengths", POST_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        400, closes=True),
    one("negative-content-length", POST_HEAD + b"Content-Length: -5\r\n\r\n", 400, closes=True),
    one("content-length-not-a-number", POST_HEAD + b"Content-Length: lots\r\n\r\n", 400, closes=True),
    one("bad-chunk-size", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, closes=True),
    one("unknown-transfer-coding", POST_HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + gzip.compress(PHOTO),
        {400, 501}, closes=True),
    one("declared-200-mb", POST_HEAD + b"Content-Length: 200000000\r\n\r\n" + bytes(4096), 413, closes=True,
        seconds=5),
    one("chunked-over-the-limit", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked(*[bytes(64 * 1024)] * 20), 413, closes=True),
    one("expect-100-continue-over-the-limit", POST_HEAD + b"Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n",
        413, closes=True, seconds=5),
    one("pipelined-two-requests", classify() + request("GET", "/healthz"), 200, answers=2),
    # bodies
    one("no-content-type", classify(content_type=None), 415),
    one("text-plain-body", classify(b"hello", "text/plain"), 415),
    one("json-body", classify(b'{"file": "x.jpg"}', "application/json"), 415),
    one("empty-image-body", classify(b""), 422),
    one("gzip-bomb-as-image", classify(gzip.compress(bytes(50_000_000)), headers={"Content-Encoding": "gzip"}), 415),
    one("multipart-without-boundary", classify(b"--x\r\n\r\n--x--\r\n", "multipart/form-data"), {400, 422}),
    one("multipart-wrong-boundary", form([("file", "a.jpg", PHOTO)], boundary="one").replace(b"boundary=one",
                                                                                           b"boundary=two"), {400, 422}),
    one("multipart-two-files", form([("file", "a.jpg", PHOTO), ("file", "b.jpg", PHOTO)]), {400, 422}),
    one("multipart-1000-fields", form([(f"f{i}", None, b"1") for i in range(1000)] + [("file", "a.jpg", PHOTO)]),
        {400, 422}),
    one("multipart-field-of-1-mb", form([("note", None, b"n" * UPLOAD_LIMIT), ("file", "a.jpg", PHOTO)]),
        {400, 413, 422}),
    one("multipart-file-name-traversal", form([("file", "../../../etc/passwd", PHOTO)]), 200),
    one("multipart-file-name-with-crlf", form([("file", 'a.jpg"\r\nX-Injected: 1', PHOTO)]), {200, 400, 422}),
    one("multipart-unterminated", classify(multipart([("file", "a.jpg", PHOTO)])[0][:-20],
                                           "multipart/form-data; boundary=catalogue"), {400, 422}),
    one("png-declaring-10-gigapixels", classify(bytes.fromhex("89504e470d0a1a0a0000000d49484452000186a0000186a008020000"
                                                              "00") + bytes(100), "image/png"), {413, 422}),
    one("multipart-image-over-the-limit", form([("file", "big.jpg", bytes(UPLOAD_LIMIT + 1))]), 413, closes=True),
    # slow clients: closed within the configured timeouts, not held
    Hostile("slowloris-headers", [b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"],
            {None}, closes=True, pause_s=0.4, then_wait=True, seconds=TIMEOUT_S + 3),
    Hostile("headers-then-silence", [b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"], {None}, closes=True,
            then_wait=True, seconds=TIMEOUT_S + 3),
    Hostile("body-shorter-than-content-length", [POST_HEAD + b"Content-Length: 5000\r\n\r\n" + PHOTO[:100]], {408},
            closes=True, then_wait=True, seconds=TIMEOUT_S + 3),
    Hostile("slow-body", [POST_HEAD + b"Content-Length: 3000\r\n\r\n"] + [PHOTO[:1000], PHOTO[1000:2000]], {408},
            closes=True, pause_s=TIMEOUT_S + 0.5, then_wait=True, seconds=2 * TIMEOUT_S + 4),
    Hostile("hang-up-mid-body", [POST_HEAD + b"Content-Length: 5000\r\n\r\n" + PHOTO[:100]], {None}, hangs_up=True),
    Hostile("hang-up-mid-headers", [b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-"], {None}, hangs_up=True),
    Hostile("slow-chunked-body", [POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"10\r\n" + bytes(16) + b"\r\n"],
            {408}, closes=True, pause_s=TIMEOUT_S + 0.5, then_wait=True, seconds=2 * TIMEOUT_S + 4),
]


def exchange(address, case: Hostile) -> tuple[int | None, bytes, bool, float]:
    """Send ``case`` on a fresh connection: (status of the first answer or None, its body, whether
    the server closed the connection, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=case.seconds) as conn:
        for i, piece in enumerate(case.pieces):
            try:
                conn.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed first: what it answered is still readable
            if i < len(case.pieces) - 1:
                time.sleep(case.pause_s)
        received, closed = b"", False
        while not case.hangs_up:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            received += chunk
            if not case.closes and complete_answers(received) >= case.answers:
                break
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
    body = received.partition(b"\r\n\r\n")[2]
    return status, body, closed, time.monotonic() - started


def complete_answers(received: bytes) -> int:
    """How many whole answers (each with a Content-Length) ``received`` holds."""
    count, rest = 0, received
    while b"\r\n\r\n" in rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            break
        rest, count = rest[length:], count + 1
    return count


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from inference_models import tiny_model

    log = tmp_path_factory.mktemp("hostile-http") / "serve.log"
    with serving(tiny_model(), log, "--api-key", KEY, "--max-upload-mb", "1", "--header-timeout", str(TIMEOUT_S),
                 "--body-timeout", str(TIMEOUT_S), "--max-explain", "1") as (url, _):
        address = urlsplit(url)
        yield (address.hostname, address.port), log


def test_the_catalogue_has_at_least_40_requests():
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE) >= 40


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_hostile_request(server, case):
    address, _ = server
    status, body, closed, seconds = exchange(address, case)
    assert status in case.status, f"{case.id}: got {status}: {body[:300]!r}"
    assert status != 500
    assert seconds < case.seconds, f"{case.id}: took {seconds:.1f} s"
    if case.closes:
        assert closed, f"{case.id}: the connection was left open"
    if case.body_has:
        assert case.body_has in json.loads(body)["detail"]
    if status is not None and 400 <= status < 500 and body.startswith(b"{"):
        assert set(json.loads(body)) == {"error", "detail"}  # binwise's own refusals say what was wrong


def test_after_the_catalogue_the_server_still_classifies_and_logged_no_traceback(server):
    address, log = server
    status, body, _, _ = exchange(address, one("good", classify(), 200))
    assert status == 200 and json.loads(body)["top"]
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]

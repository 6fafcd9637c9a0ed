"""Slow uploads cannot starve everyone else: a real ``binwise serve`` on loopback, raw sockets.

The pattern of the hostile-input audit: connections that declare 10 MB bodies and then send a byte
every second or so hold the upload budget for as long as they trickle (each pause is shorter than
the body timeout), and every normal photo gets 503. An upload must now average a minimum rate, and
one client may hold only its share of the budget. Every loop here is bounded in count and time.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

from binwise.serving.process import serving

DECLARED = 10_000_000  # bytes each slow upload says it will send (it reserves twice that)


def photo() -> bytes:
    """A phone-sized upload: about 2 MB (it reserves twice that), more than the three trickling
    uploads leave of the budget."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def head(length: int, client: str | None = None) -> bytes:
    forwarded = f"X-Forwarded-For: {client}\r\n" if client else ""
    return (f"POST /v1/classify HTTP/1.1\r\nHost: binwise.test\r\nContent-Type: image/jpeg\r\n{forwarded}"
            f"Content-Length: {length}\r\n\r\n").encode()


def trickle(address, stop: threading.Event, answers: list, client: str | None = None, every_s: float = 0.8,
            longest_s: float = 20.0) -> None:
    """Declare a 10 MB body, then send one byte every ``every_s`` until the server answers, ``stop``
    is set or ``longest_s`` passes; the answer's status goes into ``answers``."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=every_s) as conn:
        conn.sendall(head(DECLARED, client) + b"\xff")
        while not stop.is_set() and time.monotonic() - started < longest_s:
            try:
                received = conn.recv(4096)  # the status line is all this needs
                answers.append(int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None)
                return
            except TimeoutError:
                pass
            try:
                conn.sendall(b"\x00")
            except OSError:
                answers.append("closed")
                return
    answers.append("still open")


def answer(conn: socket.socket) -> bytes:
    """One whole HTTP answer (headers and the body its Content-Length gives), however it is split."""
    received = b""
    while True:
        head, found, body = received.partition(b"\r\n\r\n")
        if found:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return received
        chunk = conn.recv(65536)
        if not chunk:
            return received
        received += chunk


def post_photo(address, client: str | None = None) -> tuple[int, dict, float]:
    started = time.monotonic()
    data = photo()
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(head(len(data), client) + data)
        received = answer(conn)
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received.partition(b"\r\n\r\n")[2]), time.monotonic() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from inference_models import tiny_onnx

    log = tmp_path_factory.mktemp("slow-uploads") / "serve.log"
    # a 60 MiB budget: three declared 10 MB bodies (19 MiB reserved each) leave less than a photo needs
    with serving(tiny_onnx(), log, "--upload-budget-mb", "60", "--max-upload-mb", "10", "--body-timeout", "2",
                 "--min-upload-kbps", "4", "--client-upload-budget-mb", "40", "--trust-forwarded-for") as (url, _):
        address = urlsplit(url)
        yield (address.hostname, address.port), log


def test_a_dozen_trickling_uploads_do_not_starve_a_normal_photo(server):
    address, log = server
    stop, answers = threading.Event(), []
    slow = [threading.Thread(target=trickle, args=(address, stop, answers, f"10.9.0.{i}")) for i in range(12)]
    for thread in slow:
        thread.start()
    try:
        time.sleep(4.0)  # past the body timeout: the trickling ones have run out of grace
        status, body, seconds = post_photo(address, "10.1.0.1")
        assert status == 200 and body["top"], body
        assert seconds < 4.0
    finally:
        stop.set()
        for thread in slow:
            thread.join(30)
    assert len(answers) == 12 and "still open" not in answers
    assert set(answers) <= {408, 503, "closed"} and 408 in answers  # refused as too slow, or for room, never kept
    assert "Traceback" not in log.read_text()


def test_one_client_holds_at_most_its_share_of_the_upload_budget(server):
    """The share is 40 MiB; a declared 10 MB upload holds 19 MiB: a client's third at once is refused."""
    address, _ = server
    stop, answers = threading.Event(), []
    first = threading.Thread(target=trickle, args=(address, stop, answers, "10.2.0.1"), kwargs={"longest_s": 5.0})
    first.start()
    try:
        time.sleep(0.3)
        with socket.create_connection(address, timeout=5) as second, \
                socket.create_connection(address, timeout=5) as third:
            second.sendall(head(DECLARED, "10.2.0.1") + b"\xff")
            time.sleep(0.3)
            third.sendall(head(DECLARED, "10.2.0.1") + b"\xff")
            refused = answer(third)
            status, body, _ = post_photo(address, "10.2.0.2")  # another client is served meanwhile
            assert status == 200, body
            assert answer(second).startswith(b"HTTP/1.1 408 ")  # the second stopped sending: too slow
    finally:
        stop.set()
        first.join(30)
    assert refused.startswith(b"HTTP/1.1 429 "), refused[:300]
    refusal = json.loads(refused.partition(b"\r\n\r\n")[2])
    assert refusal["error"] == "client_upload_busy" and "at most 40 MiB at once" in refusal["detail"]

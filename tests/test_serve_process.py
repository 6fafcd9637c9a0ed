import pytest

from binwise.errors import BinwiseError
from binwise.serving.process import serving


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    log = tmp_path / "serve.log"
    with pytest.raises(BinwiseError, match="binwise serve exited with 2") as e:
        with serving(tmp_path / "missing.safetensors", log):
            pass
    assert "no such model file" in str(e.value)  # the server's own message, from its log


def test_a_real_server_answers_a_huge_upload_413_and_closes_without_reading_it(tmp_path):
    import socket
    import time
    from urllib.parse import urlsplit

    from inference_models import tiny_onnx

    with serving(tiny_onnx(), tmp_path / "serve.log", "--max-upload-mb", "1") as (url, _):
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
            conn.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 200000000\r\n\r\n" + b"\xff" * 4096)
            started, answer = time.monotonic(), b""
            while chunk := conn.recv(65536):  # ends when the server closes the connection
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
            assert time.monotonic() - started < 5  # it did not wait for (or read) the other 200 MB


def test_a_slow_header_client_is_closed_after_the_header_timeout_and_others_are_served(tmp_path):
    import socket
    import time
    import urllib.request
    from urllib.parse import urlsplit

    from inference_models import tiny_onnx

    with serving(tiny_onnx(), tmp_path / "serve.log", "--header-timeout", "1") as (url, _):
        address = urlsplit(url)
        slow = [socket.create_connection((address.hostname, address.port), timeout=10) for _ in range(20)]
        started = time.monotonic()
        for conn in slow:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:  # others still get answers
            assert response.status == 200
        for conn in slow:
            assert conn.recv(1024) == b""  # closed by the server
            conn.close()
        assert 0.9 < time.monotonic() - started < 5

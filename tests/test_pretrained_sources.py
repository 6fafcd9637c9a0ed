"""Pretrained weights from ``torchvision`` and from URLs, offline: torchvision's file is seeded into a
temporary TORCH_HOME (random weights under its real file name, no network allowed), URLs are served
by a loopback HTTP server. Also the errors that say where to get data and weights."""

import hashlib
import http.server
import io
import json
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
import torchvision
from torchvision.models import MobileNet_V2_Weights

from binwise import paths
from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.model.file import load_model
from binwise.preprocessing import IMAGENET
from binwise.weights import import_weights
from binwise.downloads import cache_path

from test_train import garbage26_subset

TORCHVISION_FILE = Path(urlsplit(MobileNet_V2_Weights.IMAGENET1K_V1.url).path).name
STEM_WEIGHT = "features.0.0.weight"


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """An empty TORCH_HOME; the folder torch.hub (and binwise) cache downloads in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("BINWISE_PRETRAINED", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def network_attempts(monkeypatch):
    """No network: every name lookup or connection fails as on an offline machine, and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def seeded_torchvision(checkpoints):
    """torchvision's MobileNetV2 (random, seeded weights) saved where torchvision caches its ImageNet file."""
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / TORCHVISION_FILE)
    return checkpoints / TORCHVISION_FILE, state


def test_torchvision_weights_come_from_the_cache_without_network(seeded_torchvision, network_attempts, monkeypatch):
    path, state = seeded_torchvision
    assert paths.resolve_pretrained("torchvision") == path
    monkeypatch.setenv("BINWISE_PRETRAINED", "torchvision")
    assert paths.resolve_pretrained() == path
    assert network_attempts == []

    imported = import_weights(path)
    assert imported.model.config.padding == "symmetric" and imported.preprocessing == IMAGENET
    # 1000 outputs (torchvision has no background logit, unlike the TFLite file's 1001)
    assert imported.taxonomy.name == "imagenet" and imported.taxonomy.num_classes == 1000
    assert torch.equal(imported.model.state_dict()["backbone." + STEM_WEIGHT], state[STEM_WEIGHT])


def test_train_with_pretrained_torchvision_offline(seeded_torchvision, network_attempts, garbage26_data, tmp_path):
    path, state = seeded_torchvision
    data = garbage26_subset(garbage26_data, tmp_path / "data", 2, 1)
    run = tmp_path / "run"
    assert main(["train", str(data), "--pretrained", "torchvision", "--mode", "head", "--run-dir", str(run),
                 "--cache-dir", str(tmp_path / "cache"), "--views", "0", "--val-fraction", "0", "--epochs", "2",
                 "--workers", "0", "--quiet"]) == 0
    assert network_attempts == []
    assert json.loads((run / "run.json").read_text())["pretrained"] == str(path)
    trained = load_model(run / "model.safetensors")
    assert trained.model.config.padding == "symmetric" and trained.preprocessing == IMAGENET
    assert trained.provenance["pretrained_provenance"]["source_file"] == TORCHVISION_FILE
    assert torch.equal(trained.model.state_dict()["backbone." + STEM_WEIGHT], state[STEM_WEIGHT])


def test_torchvision_offline_without_cache_says_where_to_put_the_file(checkpoints, network_attempts):
    with pytest.raises(BinwiseError) as error:
        paths.resolve_pretrained("torchvision")
    message = str(error.value)
    assert network_attempts, "it should have tried to download"
    assert "\n" not in message and MobileNet_V2_Weights.IMAGENET1K_V1.url in message
    assert f"put the file at {checkpoints / TORCHVISION_FILE}" in message
    assert not any(checkpoints.iterdir())


class WeightsServer:
    """A loopback HTTP server of a few files, counting requests. ``/cut/NAME`` announces the whole
    file but sends half of it; unknown paths get 404."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                cut = self.path.startswith("/cut/")
                body = server.files.get(self.path.removeprefix("/cut") if cut else self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if cut else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def small_pth() -> bytes:
    """A small torchvision MobileNetV2 state dict (width 0.35, 26 classes), as bytes."""
    torch.manual_seed(1)
    buffer = io.BytesIO()
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=26).state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def server(small_pth):
    sha = hashlib.sha256(small_pth).hexdigest()
    files = {f"/w/mnv2-{sha[:8]}.pth": small_pth, "/w/mnv2-deadbeef.pth": small_pth, "/w/model.pth": small_pth,
             "/v/model.pth": small_pth}
    served = WeightsServer(files)
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_url_is_downloaded_once_checked_by_its_name_and_cached(server, small_pth, checkpoints):
    name = f"mnv2-{hashlib.sha256(small_pth).hexdigest()[:8]}.pth"
    path = paths.resolve_pretrained(server.url(f"/w/{name}"))
    assert path == checkpoints / name and path.read_bytes() == small_pth
    imported = import_weights(path)
    assert imported.model.config.width_mult == 0.35 and imported.taxonomy.num_classes == 26
    assert paths.resolve_pretrained(server.url(f"/w/{name}")) == path
    assert server.requests == [f"/w/{name}"]  # the second time from the cache
    assert files_in(checkpoints) == [name]  # no .partial left behind


def test_sha256_fragment_is_checked_and_urls_of_one_file_name_do_not_collide(server, small_pth, checkpoints):
    sha = hashlib.sha256(small_pth).hexdigest()
    good = paths.resolve_pretrained(server.url(f"/w/model.pth#sha256={sha}"))
    assert good.read_bytes() == small_pth and server.requests == ["/w/model.pth"]  # the fragment is not sent
    assert cache_path(server.url("/w/model.pth")) != cache_path(server.url("/v/model.pth"))
    wrong = "0" * 64
    with pytest.raises(BinwiseError, match=f"its sha256 is {sha}; the URL expects one starting {wrong}"):
        paths.resolve_pretrained(server.url(f"/w/model.pth#sha256={wrong}"))
    assert files_in(checkpoints) == [good.name]
    with pytest.raises(BinwiseError, match="unsupported URL fragment"):
        paths.resolve_pretrained(server.url("/w/model.pth#md5=abc"))


def test_hash_mismatch_in_the_file_name_caches_nothing(server, checkpoints):
    with pytest.raises(BinwiseError, match="the URL expects one starting deadbeef") as error:
        paths.resolve_pretrained(server.url("/w/mnv2-deadbeef.pth"))
    assert "\n" not in str(error.value)
    assert files_in(checkpoints) == []


def test_download_cut_short_is_not_cached(server, small_pth, checkpoints):
    name = f"mnv2-{hashlib.sha256(small_pth).hexdigest()[:8]}.pth"
    with pytest.raises(BinwiseError, match=f"closed after {len(small_pth) // 2:,} of {len(small_pth):,} bytes"):
        paths.resolve_pretrained(server.url(f"/cut/w/{name}"))
    assert files_in(checkpoints) == []
    # without a hash to catch it, the length check alone keeps the half file out of the cache
    with pytest.raises(BinwiseError, match="closed after"):
        paths.resolve_pretrained(server.url("/cut/w/model.pth"))
    assert files_in(checkpoints) == []


def test_url_not_found_is_one_error_line(server, checkpoints, tmp_path, capsys):
    url = server.url("/w/missing.pth")
    assert main(["import-weights", url, "--out", str(tmp_path / "m.safetensors")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert f"could not download {url} (HTTP 404 Not Found)" in errors[0]
    assert str(cache_path(url)) in errors[0]
    assert files_in(checkpoints) == [] and not (tmp_path / "m.safetensors").exists()


def test_import_weights_from_a_url(server, small_pth, checkpoints, tmp_path):
    out = tmp_path / "m.safetensors"
    assert main(["import-weights", server.url("/w/model.pth"), "--out", str(out), "--classes", "garbage26"]) == 0
    assert load_model(out).taxonomy.num_classes == 26


def test_missing_data_and_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "shared_candidates", lambda: [tmp_path / "shared"])
    for variable in ("BINWISE_DATA", "BINWISE_PRETRAINED"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(BinwiseError) as data_error:
        paths.resolve_data()
    message = str(data_error.value)
    assert str(tmp_path / "shared" / "data" / "garbage26") in message and "$BINWISE_DATA" in message
    assert "ori_data/ of github.com/LeBronLiHD/ZJU2021_Garbage_Classification" in message
    with pytest.raises(BinwiseError) as weights_error:
        paths.resolve_pretrained()
    message = str(weights_error.value)
    assert str(tmp_path / "shared" / "weights" / "mobilenet_v2_1.0_224_quant.tflite") in message
    assert "--pretrained torchvision" in message and "github.com/google-coral/test_data" in message


def test_which_file_names_promise_a_hash():
    from binwise.downloads import expected_sha256

    assert expected_sha256("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth") == "b0353104"
    # a date or version is not a hash prefix
    assert expected_sha256("https://example.org/mobilenet-20240131.pth") is None
    assert expected_sha256("https://example.org/model-2024.pth") is None
    assert expected_sha256("https://example.org/m.pth#sha256=" + "ab" * 32) == "ab" * 32

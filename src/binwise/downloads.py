"""Pretrained weights from the network: ``torchvision`` (its ImageNet MobileNetV2) or an http(s) URL.

Downloads land where torch.hub keeps its checkpoints, ``$TORCH_HOME/hub/checkpoints`` (default
``~/.cache/torch/hub/checkpoints``), so weights torchvision or torch.hub already fetched are reused
and a machine without network can be given the file by hand. A cached file is used as it is,
without asking the network, as torch.hub does.

Hashes follow two conventions: torch.hub's, a file name ending in ``-<at least 8 hex digits of its
sha256>.<suffix>`` (torchvision's ``mobilenet_v2-b0353104.pth``), and pip's ``#sha256=<64 hex
digits>`` fragment, which is checked first when both are there. A download whose hash differs, or
which ends before its announced length, is deleted; only a complete, checked file is moved into
place, so the cache never holds part of a file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from .errors import BinwiseError

log = logging.getLogger(__name__)

TORCHVISION = "torchvision"
# torch.hub's file-name convention: "<name>-<sha256 prefix>.<suffix>". Eight hex digits at least,
# with at least one letter a-f, so that a date or version in a name ("-2024.", "-20240131.") is not
# taken for a hash (one in 40 real prefixes of 8 is all decimal digits; pass #sha256= for those).
NAME_HASH = re.compile(r"-(?=[0-9]*[a-f])([0-9a-f]{8,64})\.")
FRAGMENT_HASH = re.compile(r"sha256=([0-9a-f]{64})")
TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20


def is_remote(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names weights to download (``torchvision`` or an http(s) URL), not a file."""
    return isinstance(spec, str) and (spec == TORCHVISION or spec.startswith(("http://", "https://")))


def torchvision_url() -> str:
    """The URL of torchvision's ImageNet MobileNetV2 weights, IMAGENET1K_V1.

    V1 rather than V2 (0.28 points more ImageNet top-1): V1 is evaluated with the resize 256 /
    crop 224 that binwise records for ImageNet-normalised weights (V2 with a resize of 232), and
    binwise mostly uses these weights as frozen features for a linear probe, which V2's recipe of
    label smoothing, mixup and cutmix tends to make less transferable (Kornblith et al. 2021,
    "Why do better loss functions lead to less transferable features?").
    """
    from torchvision.models import MobileNet_V2_Weights

    return MobileNet_V2_Weights.IMAGENET1K_V1.url


def local_file(spec: str | os.PathLike) -> Path:
    """The weights file ``spec`` names: downloaded (or found in the cache) when remote, else the path."""
    return fetch(spec) if is_remote(spec) else Path(spec)


def fetch(spec: str) -> Path:
    """The cached file of ``torchvision`` or a URL, downloaded first if it is not in the cache."""
    url = torchvision_url() if spec == TORCHVISION else spec
    path = cache_path(url)
    if not path.is_file():
        download(url, path, expected_sha256(url))
    return path


def cache_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def url_file_name(url: str) -> str:
    name = PurePosixPath(urlsplit(url).path).name
    return name if name not in ("", ".", "..") else "weights"


def cache_path(url: str) -> Path:
    """Where the file of ``url`` is cached.

    A name carrying its hash is kept as it is, torch.hub's place for it. Any other name is prefixed
    with a digest of the whole URL, so that two URLs ending in the same ``model.pth`` never share a
    cache entry.
    """
    name = url_file_name(url)
    if NAME_HASH.search(name):
        return cache_dir() / name
    return cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def expected_sha256(url: str) -> str | None:
    """The sha256 (or its prefix) the URL promises: its ``#sha256=`` fragment, else its file name's."""
    fragment = urlsplit(url).fragment
    if fragment:
        found = FRAGMENT_HASH.fullmatch(fragment)
        if not found:
            raise BinwiseError(f"unsupported URL fragment #{fragment}: the one binwise reads is "
                               f"#sha256=<64 lower-case hex digits>")
        return found.group(1)
    found = NAME_HASH.search(url_file_name(url))
    return found.group(1) if found else None


def download(url: str, path: Path, sha256: str | None) -> None:
    """``url`` into ``path`` through a ``.partial`` file beside it, moved into place only when
    complete and, if ``sha256`` (a hash or its prefix) is given, matching it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    log.info(f"downloading {url} to {path}")
    request = urllib.request.Request(url, headers={"User-Agent": "binwise"})  # the fragment is not sent
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, open(partial, "xb") as f:
            announced = response.headers.get("Content-Length")
            digest, received = hashlib.sha256(), 0
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        # http.client returns a body cut short by a dropped connection as if it were complete
        # (torch.hub.download_url_to_file would then cache it), so the length is checked here.
        expected = int(announced) if announced is not None and announced.strip().isdigit() else None
        if expected is not None and received != expected:
            raise cannot_download(url, path, f"the connection closed after {received:,} of {expected:,} bytes")
        if sha256 is not None and not digest.hexdigest().startswith(sha256):
            raise cannot_download(url, path, f"its sha256 is {digest.hexdigest()}; the URL expects one starting "
                                  f"{sha256} (#sha256= or the file name's -<hex>. part, torch.hub's convention)")
        os.replace(partial, path)
    except urllib.error.HTTPError as e:
        raise cannot_download(url, path, f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise cannot_download(url, path, str(e.reason)) from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, malformed responses
        raise cannot_download(url, path, str(e) or type(e).__name__) from None
    finally:
        partial.unlink(missing_ok=True)


def cannot_download(url: str, path: Path, problem: str) -> BinwiseError:
    return BinwiseError(f"could not download {url} ({problem}); nothing was cached. Without network, fetch that "
                        f"URL elsewhere and put the file at {path}, or give a local weights file instead",
                        kind="download_failed")

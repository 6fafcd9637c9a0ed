"""What every upload route shares: reading a photo upload within its limits (size, pace,
pauses, framing), the client it came from, and errors as JSON ``{"error": code, "detail": message}``
with their status codes and headers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ..errors import BinwiseError

# Room for the multipart boundary and part headers on top of the photo itself.
MULTIPART_OVERHEAD = 64 * 1024


class ServiceError(Exception):
    """An answer other than 200, with a short code, a readable message and any headers of its own."""

    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


@dataclass
class Upload:
    data: bytes  # the photo
    name: str  # its file name, for messages
    fields: dict[str, str]  # the form's text fields that were asked for and sent


# Headers that go with some answers: after a refused or stalled upload the connection is closed
# rather than the rest of the body read (a 200 MB body after a 413 would otherwise still be
# drained); a busy service says when to come back.
STATUS_HEADERS = {400: {"Connection": "close"}, 408: {"Connection": "close"}, 413: {"Connection": "close"},
                  431: {"Connection": "close"}, 503: {"Retry-After": "1"}}


# Request headers beyond these get 431. uvicorn only bounds headers that arrive in pieces (16 KB
# buffered); these are nginx's default buffers (4 x 8 KB), and more fields than any browser sends.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_FIELDS = 100

# HTTP status of each kind of image images.open_image refuses, and of a full memory budget (binwise.memory)
IMAGE_ERROR_STATUS = {"image_too_large": 413, "not_an_image": 415, "unsupported_format": 415, "empty_file": 422,
                      "damaged_image": 422, "decode_busy": 503, "upload_busy": 503,
                      "client_upload_busy": 429}


def error_for_image(e: BinwiseError) -> ServiceError:
    return ServiceError(IMAGE_ERROR_STATUS.get(e.kind, 422), e.kind, str(e))


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status,
                        headers={**STATUS_HEADERS.get(status, {}), **(headers or {})})


def client_address(request: Request, trust_forwarded_for: bool) -> str:
    """The sender: the connection's address, or, behind a trusted proxy, the address that proxy
    appended to X-Forwarded-For (the last one: the ones before it are the client's own word)."""
    if trust_forwarded_for:
        forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-1][:100]
    return request.client.host if request.client else "unknown"


def upload_bytes(request: Request, limit: int) -> int:
    """The memory an upload holds: its body as read and the photo taken out of it, twice the size
    its Content-Length declares (at most the limit; the limit when it declares none)."""
    declared = request.headers.get("content-length", "")
    return 2 * min(int(declared), limit + MULTIPART_OVERHEAD) if declared.isdigit() else 2 * limit


async def read_upload(request: Request, limit: int, pause_limit_s: float = 30.0, min_rate: float = 0.0,
                      fields: tuple[str, ...] = ()) -> Upload:
    """The uploaded photo (its bytes, a name for messages) and the text form fields named in
    ``fields``; refuses bodies over ``limit`` (413), ambiguous framing (400), bodies that pause
    longer than ``pause_limit_s`` and, with ``min_rate`` (bytes a second), bodies slower on average
    than that after ``pause_limit_s`` of grace (408). The pause alone let a client that sends a byte
    every few seconds hold its share of the upload budget for as long as it liked."""
    if "content-length" in request.headers and "transfer-encoding" in request.headers:
        # a proxy and this server could read different bodies from it (request smuggling)
        raise ServiceError(400, "ambiguous_framing", "a request with both Content-Length and Transfer-Encoding")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    if not multipart and not content_type.startswith("image/") and content_type != "application/octet-stream":
        raise ServiceError(415, "unsupported_media_type",
                           f"expected a photo: multipart form field 'file', or the raw image as the body "
                           f"with an image/* content type (got {content_type or 'no content type'})")
    body_limit = limit + (MULTIPART_OVERHEAD if multipart else 0)
    too_large = ServiceError(413, "upload_too_large", f"upload larger than the limit of {limit:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise too_large
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        # the whole body's deadline grows with what arrived (Apache's mod_reqtimeout MinRate)
        left = started + pause_limit_s + (size / min_rate if min_rate else float("inf")) - loop.time()
        try:
            async with asyncio.timeout(max(min(pause_limit_s, left), 0)):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if left <= pause_limit_s:
                raise ServiceError(408, "upload_too_slow", f"the upload ran slower than {min_rate / 1024:g} KiB/s "
                                   f"({size:,} bytes in {loop.time() - started:.0f} s)") from None
            raise ServiceError(408, "upload_too_slow", f"the upload paused for more than {pause_limit_s:g} s") from None
        except ClientDisconnect:  # nobody reads this answer; it keeps the client's hang-up out of the error log
            raise ServiceError(400, "client_disconnected", "the client closed the connection during its upload") from None
        size += len(chunk)
        if size > body_limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not multipart:
        if not body:
            raise ServiceError(422, "empty_upload", "the request body is empty: send the photo's bytes")
        return Upload(body, "upload", {})

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_files=1, max_fields=10,
                                                   max_part_size=MULTIPART_OVERHEAD) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServiceError(422, "missing_file", "no photo uploaded: send it as multipart form field 'file'")
        data = await upload.read()
        name = upload.filename or "upload"
        values = {field: form[field] for field in fields if isinstance(form.get(field), str)}
    if len(data) > limit:
        raise too_large
    if not data:
        raise ServiceError(422, "empty_upload", f"{name}: empty file (0 bytes)")
    return Upload(data, name, values)

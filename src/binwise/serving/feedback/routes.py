"""``POST /v1/feedback``: a photo, the class a person says is right, and an optional note.

The photo goes through the model again (so the row records what the model really answered, and
anything that is no photo is refused like in ``/v1/classify``), then into the store in its own
writer thread: the store's disk flushes never block the event loop. Each client may post at most
``per_minute`` feedbacks in any minute (429 with Retry-After past that), counted in the store, so
replicas sharing a PostgreSQL store share the limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import math
import time

from fastapi import FastAPI, Request

from ...errors import BinwiseError
from ..uploads import ServiceError, client_address, read_upload
from . import NOT_GARBAGE, check_note, resolve_correction
from .privacy import without_metadata
from .store import new_row

log = logging.getLogger(__name__)

FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "class"],
            "properties": {"file": {"type": "string", "format": "binary"},
                           "class": {"type": "string", "description": "the right class: its English or Chinese "
                                     f"name, its index, or '{NOT_GARBAGE}'"},
                           "note": {"type": "string", "maxLength": 500}}}}},
    }
}
# HTTP status of the store's refusals: full (507 Insufficient Storage) or failing (503)
STORE_ERROR_STATUS = {"feedback_store_full": 507, "disk_full": 507, "feedback_network_full": 429}
RATE_WINDOW_S = 60.0


def network_of(address: str) -> str:
    """Whom the feedback rate limit counts as one client: the address's network (IPv4 /24, IPv6 /56,
    what one household, office or cloud tenant gets), so that many addresses of one sender share
    one limit (200 poisoned labels came from 8 addresses of one network in 16 s). Anything that is
    not an IP address counts as itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 56}", strict=False))


def add_feedback_route(app: FastAPI, store, classifier, score_upload, holding_upload, *, max_upload_bytes: int,
                       body_timeout_s: float, min_upload_rate: float, per_minute: int, trust_forwarded_for: bool):
    """Add ``POST /v1/feedback`` to ``app``, recording into ``store``; returns what closes it.
    ``score_upload`` and ``holding_upload`` are the classify route's (a photo's scores; an upload
    within the service's memory budget)."""
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="binwise-feedback")
    taxonomy = classifier.taxonomy

    async def in_store(call, *args):
        """``call(*args)`` in the writer thread, a store failure as the service's error."""
        try:
            return await asyncio.get_running_loop().run_in_executor(writer, call, *args)
        except BinwiseError as e:
            log.warning("feedback not recorded: %s", e)  # the server's own paths stay in its log
            why = {"feedback_network_full": str(e)}.get(e.kind, "the store is full" if e.kind in STORE_ERROR_STATUS
                                                       else "its store is unavailable; retry shortly")
            raise ServiceError(STORE_ERROR_STATUS.get(e.kind, 503), e.kind, "the feedback was not recorded: " + why) from None

    @app.post("/v1/feedback", openapi_extra=FEEDBACK_BODY,
              summary="Tell the service a photo's right class (the model got it wrong, or was unsure)")
    async def feedback(request: Request):
        client = client_address(request, trust_forwarded_for)
        # wall-clock time: replicas sharing a store count on one clock (theirs, kept in step by NTP)
        wait = await in_store(store.admit, network_of(client), per_minute, RATE_WINDOW_S, time.time())
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ServiceError(429, "too_many_feedbacks", f"at most {per_minute} feedbacks a minute from one "
                               f"network; retry in {seconds} s", headers={"Retry-After": str(seconds)})
        async with holding_upload(request):
            return await record(request, client)

    async def record(request: Request, client: str) -> dict:
        upload = await read_upload(request, max_upload_bytes, body_timeout_s, min_upload_rate, fields=("class", "note"))
        given = {**request.query_params, **upload.fields}  # a raw-body upload names them in the query
        if not given.get("class", "").strip():
            raise ServiceError(422, "missing_class", "no 'class' field: send the photo's right class (its English or "
                               f"Chinese name, its index, or '{NOT_GARBAGE}')")
        try:
            index, corrected = resolve_correction(taxonomy, given["class"])
            note = check_note(given.get("note"))
        except BinwiseError as e:
            raise ServiceError(422, e.kind, str(e)) from None
        probabilities, similarity = await score_upload(upload.data, upload.name)
        prediction = classifier.prediction(upload.name, probabilities, 1, similarity)
        # the pixels, not the place and phone it was taken with (feedback.privacy)
        photo = await asyncio.get_running_loop().run_in_executor(None, without_metadata, upload.data)
        row = new_row(photo, model=classifier.model_id, predicted=prediction.top[0].en,
                      predicted_status=prediction.status, corrected=corrected, note=note, client=client)
        stored, already = await in_store(store.add, row, photo, network_of(client))
        return {"recorded": True, "already_recorded": already, "id": stored.id, "time": stored.time,
                "model": stored.model, "photo_sha256": stored.photo_sha256,
                "predicted": {"class": stored.predicted, "status": stored.predicted_status},
                "corrected": {"index": index, "en": corrected,
                              "zh": taxonomy.classes_zh[index] if index is not None and taxonomy.classes_zh else ""},
                "note": stored.note}

    def close() -> None:
        writer.shutdown(wait=True)  # a row being written is finished, not cut off
        store.close()

    return close

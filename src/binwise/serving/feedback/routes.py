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
import logging
import math
import time

from fastapi import FastAPI, Request

from ...errors import BinwiseError
from ..uploads import ServiceError, client_address, read_upload
from . import NOT_GARBAGE, RATE_WINDOW_S, check_note, network_of, resolve_correction
from .capture import review_item
from .review import FEEDBACK, add_item
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


def add_feedback_route(app: FastAPI, store, classifier, score_upload, holding_upload, *, max_upload_bytes: int,
                       body_timeout_s: float, min_upload_rate: float, per_minute: int, trust_forwarded_for: bool,
                       regions: tuple[str, ...], default_region: str, review_max_items: int):
    """Add ``POST /v1/feedback`` to ``app``, recording into ``store`` (the row, and an item of the
    review queue); returns what closes it. ``score_upload`` and ``holding_upload`` are the classify
    route's (a photo's scores; an upload within the service's memory budget); ``regions``: the names
    a feedback may give as the bins its sender was shown."""
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
        upload = await read_upload(request, max_upload_bytes, body_timeout_s, min_upload_rate, fields=("class", "note", "region"))
        given = {**request.query_params, **upload.fields}  # a raw-body upload names them in the query
        if not given.get("class", "").strip():
            raise ServiceError(422, "missing_class", "no 'class' field: send the photo's right class (its English or "
                               f"Chinese name, its index, or '{NOT_GARBAGE}')")
        try:
            index, corrected = resolve_correction(taxonomy, given["class"])
            note = check_note(given.get("note"))
        except BinwiseError as e:
            raise ServiceError(422, e.kind, str(e)) from None
        region = given.get("region") or default_region
        if region not in regions:
            raise ServiceError(400, "unknown_region", f"no region {region[:60]!r} here; this service has: "
                               f"{', '.join(regions)}")
        probabilities, similarity = await score_upload(upload.data, upload.name)
        answer = classifier.prediction(upload.name, probabilities, 1, similarity).to_dict()
        # the pixels, not the place and phone it was taken with (feedback.privacy)
        photo, item = await asyncio.get_running_loop().run_in_executor(
            None, lambda: review_item(upload.data, probabilities, answer, source=FEEDBACK, model=classifier.model_id,
                                      client=client, region=region))
        row = new_row(photo, model=classifier.model_id, predicted=answer["top"][0]["en"],
                      predicted_status=answer["status"], corrected=corrected, note=note, client=client, region=region)
        stored, already = await in_store(store.add, row, photo, network_of(client))
        await in_store(queue_for_review, item, photo)
        return {"recorded": True, "already_recorded": already, "id": stored.id, "time": stored.time,
                "model": stored.model, "photo_sha256": stored.photo_sha256,
                "predicted": {"class": stored.predicted, "status": stored.predicted_status},
                "corrected": {"index": index, "en": corrected,
                              "zh": taxonomy.classes_zh[index] if index is not None and taxonomy.classes_zh else ""},
                "note": stored.note, "region": stored.region}

    def queue_for_review(item, photo: bytes) -> None:
        """The feedback joins the review queue, unless the queue is full (the row is recorded anyway)."""
        try:
            add_item(store, item, photo, max_items=review_max_items)
        except BinwiseError as e:
            log.warning("feedback not queued for review: %s", e)

    def close() -> None:
        writer.shutdown(wait=True)  # a row being written is finished, not cut off
        store.close()

    return close

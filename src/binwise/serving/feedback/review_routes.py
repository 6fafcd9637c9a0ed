"""The ``/review`` page and its API, for reviewers (``binwise serve --reviewer-keys FILE``).

Each reviewer has a key of their own (the file's lines are ``NAME KEY``); the page asks for it once
and sends it as ``X-Reviewer-Key`` on every call. The key names the reviewer, so agreement
(``review.decision``) counts people, not requests. Nothing here is open without a key, and the
service's API key is not one: feedback senders and reviewers are different people.

- ``GET /review/api/next``: the queue's next items (``review.queue``) with their choices and bins,
  what feedback senders said, and how many look-alikes each stands for;
- ``GET /review/api/photo/{id}``: an item's photo;
- ``POST /review/api/label``: ``{"item": id, "label": class | "not garbage" | "skip"}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, Response

from ...errors import BinwiseError
from ..uploads import ServiceError
from . import NOT_GARBAGE, review

MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "bmp": "image/bmp", "webp": "image/webp",
               "tif": "image/tiff"}
MAX_KEY_FILE_BYTES = 1024 * 1024


def read_reviewer_keys(path: str | Path) -> dict[str, str]:
    """{key: reviewer name} from a file of ``NAME KEY`` lines (# comments and blank lines skipped)."""
    try:
        if Path(path).stat().st_size > MAX_KEY_FILE_BYTES:
            raise BinwiseError("the reviewer key file is larger than 1 MiB", path)
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BinwiseError(f"cannot read the reviewer keys ({getattr(e, 'strerror', None) or e})", path) from None
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BinwiseError(f"line {number}: expected 'NAME KEY', got {len(parts)} words", path)
        name, key = parts
        if len(key) < 16:
            raise BinwiseError(f"line {number}: {name}'s key has {len(key)} characters; at least 16 "
                               "(python -c 'import secrets; print(secrets.token_urlsafe())' makes one)", path)
        if key in keys:
            raise BinwiseError(f"line {number}: {name} has the key of {keys[key]}", path)
        keys[key] = name
    if not keys:
        raise BinwiseError("no reviewer keys in the file (lines 'NAME KEY')", path)
    return keys


def add_review_routes(app: FastAPI, store, classifier, reviewer_keys: dict[str, str], agree: int, page: Path):
    """Add the review page and API to ``app``; returns what closes them."""
    reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="binwise-review")
    taxonomy = classifier.taxonomy

    def reviewer_of(request: Request) -> str:
        given = request.headers.get("x-reviewer-key", "").encode()
        for key, name in reviewer_keys.items():
            if hmac.compare_digest(given, key.encode()):
                return name
        raise ServiceError(401, "unauthorized", "the review API needs a reviewer's key (X-Reviewer-Key header)")

    async def in_reader(call, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(reader, call, *args)
        except BinwiseError as e:
            if e.kind == "unknown_item":
                raise ServiceError(404, e.kind, str(e)) from None
            raise ServiceError(503, "review_store_unavailable", "the review store is unavailable; retry shortly") from None

    def choice(index: int, probability: float) -> dict:
        bin_ = taxonomy.bin_of(index)
        return {"index": index, "en": taxonomy.classes_en[index],
                "zh": taxonomy.classes_zh[index] if taxonomy.classes_zh else "",
                "bin": asdict(bin_) if bin_ else None, "probability": probability}

    def next_items(reviewer: str, count: int) -> dict:
        ranked = review.queue(store, classifier.model_id, reviewer, agree, count)
        shown = []
        for item, look_alikes in ranked:
            shown.append({"id": item.id, "time": item.time, "source": item.source, "status": item.predicted_status,
                          "region": item.region, "choices": [choice(i, p) for i, p in item.top_choices(5)],
                          "senders_said": review.senders_said(store, item), "look_alikes": len(look_alikes)})
        return {"reviewer": reviewer, "agree": agree, "items": shown}

    @app.get("/review", include_in_schema=False)
    async def review_page():
        return FileResponse(page)

    @app.get("/review/api/next", summary="The review queue's next items, most useful to label first")
    async def next_to_review(request: Request, count: int = Query(1, ge=1, le=50)):
        reviewer = reviewer_of(request)
        answer = await in_reader(next_items, reviewer, count)
        answer["classes"] = [choice(i, None) for i in range(taxonomy.num_classes)]
        return answer

    @app.get("/review/api/photo/{item_id}", summary="An item's photo")
    async def photo(request: Request, item_id: int):
        reviewer_of(request)
        item = await in_reader(review.item, store, item_id)
        data = await in_reader(store.read_photo, item)
        return Response(data, media_type=MEDIA_TYPES.get(item.photo_suffix, "application/octet-stream"),
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"})

    @app.post("/review/api/label", summary="A reviewer's label of an item: a class, 'not garbage' or 'skip'")
    async def label(request: Request):
        reviewer = reviewer_of(request)
        try:
            body = json.loads(await request.body())
            item_id, given = int(body["item"]), str(body["label"])
        except (ValueError, KeyError, TypeError):
            raise ServiceError(422, "invalid_review", 'send JSON {"item": ID, "label": CLASS | '
                               f'"{NOT_GARBAGE}" | "skip"}}') from None
        try:
            answer = review.resolve_label(taxonomy, given)
        except BinwiseError as e:
            raise ServiceError(422, e.kind, str(e)) from None
        await in_reader(review.add_review, store, item_id, reviewer, answer)
        return {"recorded": True, "item": item_id, "reviewer": reviewer, "label": answer}

    def close() -> None:
        reader.shutdown(wait=True)

    return close

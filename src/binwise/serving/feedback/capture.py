"""Keeping the photos the model was unsure about, for reviewers (``binwise serve --keep-uncertain``).

Off by default. When on, the service says so (``GET /v1/model``: ``keeps_uncertain``; the page shows
a notice with a "do not keep my photo" box) and every ``/v1/classify`` answer says whether its photo
was kept (``kept``). A request refuses with ``?keep=false``; photos answered ``ok`` are never kept.
A kept photo loses its metadata (``privacy``) and joins the review queue (``review``) with the
model's probabilities and its thumbnail signature: one per photo and model, at most ``per_minute``
a minute and ``review.DEFAULT_NETWORK_ITEMS`` in all from one network, within the store's byte
budgets. A photo that cannot be kept is still answered; the answer says ``kept: false``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import time

import numpy as np

from ...data.near_duplicates import signature
from ...errors import BinwiseError
from . import RATE_WINDOW_S, network_of
from .privacy import without_metadata
from .review import DEFAULT_MAX_ITEMS, DEFAULT_NETWORK_ITEMS, KEPT, add_item, new_item

log = logging.getLogger(__name__)

KEPT_STATUSES = ("unsure", "unknown")


def review_item(photo: bytes, probabilities: np.ndarray, answer: dict, *, source: str, model: str, client: str,
                region: str):
    """(the photo without its metadata, its review item): what a feedback or a kept photo adds to the queue."""
    clean = without_metadata(photo)
    return clean, new_item(clean, model=model, source=source, predicted=answer["top"][0]["en"],
                           predicted_status=answer["status"], probabilities=probabilities,
                           signature=signature(io.BytesIO(clean)), client=client, network=network_of(client),
                           region=region)


class Keeper:
    """Stores kept photos from a writer thread of its own (disk flushes never block the event loop)."""

    def __init__(self, store, model: str, per_minute: int, max_items: int = DEFAULT_MAX_ITEMS,
                 network_items: int = DEFAULT_NETWORK_ITEMS):
        self.store, self.model, self.per_minute = store, model, per_minute
        self.max_items, self.network_items = max_items, network_items
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="binwise-keep")

    async def keep(self, photo: bytes, probabilities: np.ndarray, answer: dict, client: str, region: str) -> bool:
        """Keep the answered photo if its status is one kept; whether it was kept (or already was)."""
        if answer["status"] not in KEPT_STATUSES:
            return False
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.writer, self._store, photo, probabilities, answer, client, region)
        except BinwiseError as e:
            log.info("uncertain photo not kept: %s", e)
            return False

    def _store(self, photo: bytes, probabilities: np.ndarray, answer: dict, client: str, region: str) -> bool:
        # counted apart from feedback ("keep" + network): a busy page must not use up its users' feedback
        if self.store.admit(f"keep {network_of(client)}", self.per_minute, RATE_WINDOW_S, time.time()) is not None:
            return False
        clean, item = review_item(photo, probabilities, answer, source=KEPT, model=self.model, client=client,
                                  region=region)
        add_item(self.store, item, clean, max_items=self.max_items, network_items=self.network_items)
        return True

    def close(self) -> None:
        self.writer.shutdown(wait=True)

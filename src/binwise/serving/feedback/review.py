"""The review queue: photos worth a person's label, the labels reviewers give, and what they agree on.

Items come from two places: every feedback (``routes``: a user says the model was wrong) and, when the
service runs with ``--keep-uncertain``, the photos it answered ``unsure`` or ``unknown`` (``capture``).
Each item keeps the model's probabilities and the photo's thumbnail signature, so the queue
(``binwise.data.labelling``) can rank it without running a model again: most uncertain first,
near-duplicates shown once, the same confusion not twenty times in a row.

A reviewer (``binwise review label``, or the ``/review`` page with a reviewer key) gives a class,
``not garbage`` or ``skip``. An item is decided when ``agree`` reviewers gave one label and no other
label has as many; only decided items are exported for training (``export_reviewed``), with their
near-duplicates under the same label. Guards against poisoning: a network may add at most
``network_items`` kept photos (and feedback has its own caps), look-alikes count once, and ``report``
flags networks whose feedback keeps disagreeing with what reviewers decided.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, fields

import numpy as np

from ...data.labelling import QueueEntry, labelling_queue
from ...data.near_duplicates import groups_of
from ...errors import BinwiseError
from . import network_of, resolve_correction
from .export import ExportReport, write_labelled
from .store import SqlStore, now_utc, photo_suffix

FEEDBACK, KEPT = "feedback", "kept"  # where an item came from
SKIP = "skip"  # a reviewer passes: not a label, but the item leaves that reviewer's queue
DEFAULT_AGREE = 2  # reviewers who must give one label before an item is exported
# items the queue holds in all; the queue compares every pair of them on each /review request
DEFAULT_MAX_ITEMS = 5_000
DEFAULT_NETWORK_ITEMS = 200  # kept photos one network (IPv4 /24, IPv6 /56) may add
# a network is flagged when at least this many of its feedbacks were decided and most disagree
FLAG_AFTER = 3


@dataclass(frozen=True)
class ReviewItem:
    id: int | None
    time: str
    model: str
    photo_sha256: str
    photo_suffix: str
    source: str  # FEEDBACK or KEPT
    predicted: str
    predicted_status: str
    probabilities: str  # JSON list, one per class of the model
    signature: str  # base64 float16 near_duplicates.signature of the photo
    client: str
    network: str
    region: str

    def probability_vector(self) -> np.ndarray:
        return np.asarray(json.loads(self.probabilities), np.float64)

    def top_choices(self, k: int) -> list[tuple[int, float]]:
        """(class index, probability) of the ``k`` most probable classes, most probable first."""
        probabilities = self.probability_vector()
        return [(int(i), float(probabilities[i])) for i in np.argsort(-probabilities, kind="stable")[:k]]

    def signature_vector(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.signature), np.float16).astype(np.float32)


ITEM_COLUMNS = [f.name for f in fields(ReviewItem)]


def new_item(photo: bytes, *, model: str, source: str, predicted: str, predicted_status: str,
             probabilities: np.ndarray, signature: np.ndarray, client: str, network: str, region: str) -> ReviewItem:
    return ReviewItem(None, now_utc(), model, hashlib.sha256(photo).hexdigest(), photo_suffix(photo), source,
                      predicted, predicted_status, json.dumps([round(float(p), 5) for p in probabilities]),
                      base64.b64encode(np.asarray(signature, np.float16).tobytes()).decode("ascii"),
                      client, network, region)


def add_item(store: SqlStore, item: ReviewItem, photo: bytes, *, max_items: int = DEFAULT_MAX_ITEMS,
             network_items: int = DEFAULT_NETWORK_ITEMS) -> tuple[ReviewItem, bool]:
    """Store ``item`` and its photo; (the stored item, whether it was there already: one per photo
    and model). Refused when the queue is full (``review_queue_full``) or a kept photo's network has
    added its share (``review_network_full``); the photo counts against the store's byte budgets."""
    names = ITEM_COLUMNS[1:]
    insert = store.paramstyle(f"INSERT INTO review_items ({', '.join(names)}) VALUES "
                              f"({', '.join(':' + n for n in names)}) "
                              "ON CONFLICT (photo_sha256, model) DO NOTHING RETURNING id")
    with store.transaction() as execute:
        existing = _select(store, execute, "WHERE photo_sha256 = :sha AND model = :model",
                           sha=item.photo_sha256, model=item.model)
        if existing:
            return existing[0], True
        if _scalar(store, execute, "SELECT COUNT(*) FROM review_items") >= max_items:
            raise BinwiseError(f"the review queue holds its limit of {max_items:,} photos", kind="review_queue_full")
        if item.source == KEPT and _scalar(store, execute, "SELECT COUNT(*) FROM review_items WHERE network = :network "
                                           "AND source = :source", network=item.network, source=KEPT) >= network_items:
            raise BinwiseError(f"this network has added {network_items} photos to the review queue, its share",
                               kind="review_network_full")
        store._check_bytes(execute, item.photo_sha256, len(photo), item.network)
        store.store_photo(execute, item, photo)
        inserted = execute(insert, {n: getattr(item, n) for n in names}).fetchone()
        if inserted is None:  # another replica stored it between our look and our insert
            return _select(store, execute, "WHERE photo_sha256 = :sha AND model = :model",
                           sha=item.photo_sha256, model=item.model)[0], True
    return ReviewItem(inserted[0], *[getattr(item, n) for n in names]), False


def items(store: SqlStore, model: str | None = None) -> list[ReviewItem]:
    """The queue's items (of ``model`` only, when given), oldest first."""
    with store.transaction(write=False) as execute:
        if model is None:
            return _select(store, execute, "ORDER BY id")
        return _select(store, execute, "WHERE model = :model ORDER BY id", model=model)


def item(store: SqlStore, item_id: int) -> ReviewItem:
    with store.transaction(write=False) as execute:
        found = _select(store, execute, "WHERE id = :id", id=item_id)
    if not found:
        raise BinwiseError(f"no review item {item_id}", kind="unknown_item")
    return found[0]


def add_review(store: SqlStore, item_id: int, reviewer: str, label: str) -> None:
    """Record ``reviewer``'s label of an item (a class's English name, NOT_GARBAGE or SKIP); a
    reviewer who labels an item again changes their label."""
    item(store, item_id)
    if not reviewer.strip():
        raise BinwiseError("a review needs the reviewer's name", kind="invalid_reviewer")
    with store.transaction() as execute:
        execute(store.paramstyle("DELETE FROM reviews WHERE item = :item AND reviewer = :reviewer"),
                {"item": item_id, "reviewer": reviewer})
        execute(store.paramstyle("INSERT INTO reviews (item, reviewer, label, time) VALUES (:item, :reviewer, "
                                 ":label, :time)"), {"item": item_id, "reviewer": reviewer, "label": label,
                                                     "time": now_utc()})


def senders_said(store: SqlStore, item: ReviewItem) -> list[str]:
    """The corrections feedback senders gave the item's photo under its model, oldest first."""
    with store.transaction(write=False) as execute:
        found = execute(store.paramstyle("SELECT corrected FROM feedback WHERE photo_sha256 = :sha AND model = :model "
                                         "ORDER BY id"), {"sha": item.photo_sha256, "model": item.model}).fetchall()
    return [row[0] for row in found]


def reviews(store: SqlStore) -> dict[int, dict[str, str]]:
    """{item id: {reviewer: label}}."""
    with store.transaction(write=False) as execute:
        found = execute("SELECT item, reviewer, label FROM reviews", {}).fetchall()
    votes: dict[int, dict[str, str]] = {}
    for item_id, reviewer, label in found:
        votes.setdefault(item_id, {})[reviewer] = label
    return votes


def decision(votes: dict[str, str], agree: int) -> str | None:
    """The label ``agree`` reviewers gave when no other label has as many; else None."""
    counts = Counter(label for label in votes.values() if label != SKIP).most_common()
    if not counts or counts[0][1] < agree or (len(counts) > 1 and counts[1][1] == counts[0][1]):
        return None
    return counts[0][0]


def queue(store: SqlStore, model: str, reviewer: str | None = None, agree: int = DEFAULT_AGREE,
          count: int | None = None) -> list[tuple[ReviewItem, list[ReviewItem]]]:
    """What to review next, most useful first: (item, its near-duplicates) for items of ``model``.
    A group of near-duplicates leaves the queue once one of them is decided (the export labels the
    group), and leaves ``reviewer``'s queue once they have labelled or skipped one of them."""
    votes = reviews(store)
    candidates = items(store, model)  # one model: one class count
    if not candidates:
        return []
    groups = groups_of(np.stack([i.signature_vector() for i in candidates]))
    done = {g for i, g in zip(candidates, groups)
            if decision(votes.get(i.id, {}), agree) is not None or reviewer in votes.get(i.id, {})}
    pending = [(i, g) for i, g in zip(candidates, groups) if g not in done]
    if not pending:
        return []
    # the groups just found, not found again: the queue then groups as the export does
    order: list[QueueEntry] = labelling_queue(np.stack([i.probability_vector() for i, _ in pending]), count=count,
                                              groups=[g for _, g in pending])
    return [(pending[e.index][0], [pending[j][0] for j in e.look_alikes]) for e in order]


@dataclass
class ReviewReport:
    items: int = 0
    decided: dict[str, int] | None = None  # label -> items
    undecided: int = 0
    disagreements: list[tuple[ReviewItem, dict[str, str]]] | None = None  # items with two or more labels
    flagged: list[tuple[str, int, int]] | None = None  # (network, feedbacks decided, of them disagreeing)


def report(store: SqlStore, agree: int = DEFAULT_AGREE) -> ReviewReport:
    votes = reviews(store)
    everything = items(store)
    decided: Counter = Counter()
    disagreements = []
    for i in everything:
        given = votes.get(i.id, {})
        label = decision(given, agree)
        if label is not None:
            decided[label] += 1
        if len({v for v in given.values() if v != SKIP}) > 1:
            disagreements.append((i, given))
    return ReviewReport(len(everything), dict(decided), len(everything) - sum(decided.values()), disagreements,
                        flagged_networks(store, everything, votes, agree))


def flagged_networks(store: SqlStore, everything: list[ReviewItem], votes: dict, agree: int) -> list[tuple[str, int, int]]:
    """Networks whose feedback corrections disagree with the reviewers' decision more often than not."""
    decided = {(i.photo_sha256, i.model): decision(votes.get(i.id, {}), agree) for i in everything}
    tally: dict[str, list[int]] = {}
    for row in store.rows():
        label = decided.get((row.photo_sha256, row.model))
        if label is not None:
            counts = tally.setdefault(network_of(row.client), [0, 0])
            counts[0] += 1
            counts[1] += row.corrected != label
    return sorted((net, n, wrong) for net, (n, wrong) in tally.items() if n >= FLAG_AFTER and 2 * wrong > n)


def export_reviewed(store: SqlStore, out_dir, agree: int = DEFAULT_AGREE) -> ExportReport:
    """The decided items, and each one's near-duplicates among the queue's items of its model, as an
    ImageFolder (``export.write_labelled``)."""
    votes = reviews(store)
    labelled = {}
    by_model: dict[str, list[ReviewItem]] = {}
    for i in items(store):
        by_model.setdefault(i.model, []).append(i)
    for group in by_model.values():
        members: dict[int, list[ReviewItem]] = {}
        for i, g in zip(group, groups_of(np.stack([i.signature_vector() for i in group]))):
            members.setdefault(g, []).append(i)
        for same in members.values():
            labels = {decision(votes.get(i.id, {}), agree) for i in same} - {None}
            if len(labels) == 1:  # a group whose decided items disagree is left to the reviewers
                label = labels.pop()
                labelled.update({i.photo_sha256: (i, label) for i in same})
    return write_labelled(store, labelled, out_dir)


def resolve_label(taxonomy, text: str) -> str:
    """A reviewer's answer as stored: a class's English name, NOT_GARBAGE or SKIP."""
    if text.strip().lower() == SKIP:
        return SKIP
    return resolve_correction(taxonomy, text)[1]


def _select(store: SqlStore, execute, where: str, **params) -> list[ReviewItem]:
    found = execute(store.paramstyle(f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_items {where}"), params).fetchall()
    return [ReviewItem(*row) for row in found]


def _scalar(store: SqlStore, execute, sql: str, **params):
    return execute(store.paramstyle(sql), params).fetchone()[0]


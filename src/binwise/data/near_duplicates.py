"""Near-duplicate photos: burst shots, one object photographed twice, a resized or recompressed copy.

When such photos fall on both sides of a split, the held-out side scores photos the model has as good
as seen, and its accuracy overstates what new photos get. So every split binwise makes keeps each
group of near-duplicates on one side (``data.stratified_split``), and ``check-data`` lists the
near-duplicates that a dataset's own train and test folders share.

A photo's signature is its 16×16 colour thumbnail with each channel centred, scaled to unit length
(the layout of the photo, not its colour cast); two photos are near-duplicates when the cosine
similarity of their signatures is at least ``NEAR``, and groups are the connected components of those
pairs. ``NEAR`` was chosen on the train splits of trashnet and garbage26: at 0.95, 121 of 124 trashnet
pairs and all 147 garbage26 pairs are of one class (one of the three others is an exact copy filed
under two classes), where at 0.90 one trashnet pair in five joins two classes. A 64-bit difference
hash, the usual choice, joined different items photographed on the same white board (half its pairs
within 4 bits crossed classes on trashnet). A component of more than ``MOST`` photos is a chain of
look-alikes rather than copies of one shot, and is dissolved (the largest on trashnet holds 15).
Unreadable photos get no group. No library is used because the signature is a resize and a dot
product; the perceptual-hash packages would add SciPy to the torch-free install for less
discrimination here.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

SIDE = 16  # thumbnail side in pixels
NEAR = 0.95  # cosine similarity of signatures at which two photos are near-duplicates
MOST = 32  # photos in one group, at most
BLOCK = 2048  # rows compared at once, so memory stays O(BLOCK x N)


def signature(path: Path | BinaryIO) -> np.ndarray:
    """The unit-length, zero-mean 16×16 RGB thumbnail of a photo, a file or a file object (zeros
    if it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (SIDE * 4, SIDE * 4))  # JPEG: decode at 1/8 scale, far faster
            pixels = np.asarray(img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
    except Exception:  # unreadable photos are reported where they are decoded for real
        return np.zeros(SIDE * SIDE * 3, np.float32)
    flat = (pixels - pixels.mean((0, 1))).reshape(-1)  # each channel centred: layout, not colour cast
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 0 else np.zeros_like(flat)


def signatures(paths: list[Path], threads: int = 4) -> np.ndarray:
    """(N, 768) signatures, decoded in ``threads`` threads (Pillow releases the GIL)."""
    if not paths:
        return np.zeros((0, SIDE * SIDE * 3), np.float32)
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(signature, paths)))


def near_pairs(a: np.ndarray, b: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """(i, j, similarity) of every near-duplicate pair: i in ``a`` and j in ``b``, or i < j within
    ``a`` when ``b`` is None. A zero signature (unreadable photo) pairs with nothing."""
    other = a if b is None else b
    pairs = []
    for start in range(0, len(a), BLOCK):
        similarity = a[start:start + BLOCK] @ other.T
        rows, cols = np.nonzero(similarity >= NEAR)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if b is None and c <= i:
                continue
            pairs.append((i, c, float(similarity[r, c])))
    return pairs


def group_ids(paths: list[Path], threads: int = 4) -> list[int]:
    """A group id per photo: photos joined by a chain of near-duplicate pairs share one (up to
    ``MOST`` photos), every other photo has its own (ids are indices of the photos)."""
    return groups_of(signatures(paths, threads))


def groups_of(photo_signatures: np.ndarray) -> list[int]:
    """``group_ids`` of photos given by their signatures."""
    parent = list(range(len(photo_signatures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_pairs(photo_signatures):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    ids = [root(i) for i in range(len(photo_signatures))]
    sizes = Counter(ids)
    return [g if sizes[g] <= MOST else i for i, g in enumerate(ids)]

"""Feedback (and reviewed items, ``review.export_reviewed``) as training photos: an ImageFolder
``OUT/<class>/<sha256>.<suffix>``.

One file per photo, in the folder of its latest correction (a later feedback on the same photo
overrides an earlier one, whatever model either was about). Photos corrected as "not garbage" go
to ``OUT/.not-garbage/``: binwise reads no dot folder as a class, so training leaves them out.
Exporting again into the same folder writes only what is new and moves photos whose correction
changed; files not named by a SHA-256 are never touched.

The store is not trusted (every replica holds its credentials): a row whose photo digest or suffix
is not of the form binwise writes, or whose photo's bytes do not hash to its digest, is left out and
named in the report. So every name written is one this export recomputed from the photo itself, and
nothing lands outside ``OUT``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BinwiseError
from ...fileio import atomic_write
from . import NOT_GARBAGE

NOT_GARBAGE_FOLDER = ".not-garbage"
EXPORTED_NAME = re.compile(r"[0-9a-f]{64}\.\w+")
DIGEST = re.compile(r"[0-9a-f]{64}")
SUFFIX = re.compile(r"[a-z0-9]{1,8}")


@dataclass
class ExportReport:
    written: int = 0  # photos written this time
    kept: int = 0  # already there from an earlier export
    removed: int = 0  # moved away: their correction changed
    not_garbage: int = 0  # in .not-garbage/
    per_class: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # rows left out, and why


def folder_name(corrected: str) -> str:
    if corrected == NOT_GARBAGE:
        return NOT_GARBAGE_FOLDER
    if "/" in corrected or "\\" in corrected or corrected.startswith("."):
        raise BinwiseError(f"class name {corrected!r} cannot be a folder name")
    return corrected


def export_feedback(store, out_dir: Path) -> ExportReport:
    """Every photo under its latest correction."""
    latest = {row.photo_sha256: (row, row.corrected) for row in store.rows()}  # oldest first: the last one wins
    return write_labelled(store, latest, out_dir)


def write_labelled(store, labelled: dict, out_dir: Path) -> ExportReport:
    """Write ``labelled`` ({photo SHA-256: (its stored row or review item, its class or NOT_GARBAGE)})
    into ``out_dir``, and move away earlier exports no longer among them."""
    report = ExportReport()
    wanted = {}
    for sha, (row, label) in labelled.items():
        if DIGEST.fullmatch(str(sha)) and SUFFIX.fullmatch(str(row.photo_suffix)):
            wanted[out_dir / folder_name(label) / f"{sha}.{row.photo_suffix}"] = (row, label)
        else:
            report.refused.append(f"row {row.id}: photo name {str(sha)[:80]!r}."
                                  f"{str(row.photo_suffix)[:20]!r} is not a SHA-256 and a suffix")
    for path in out_dir.glob("*/*") if out_dir.is_dir() else ():
        if EXPORTED_NAME.fullmatch(path.name) and path not in wanted:
            path.unlink()
            report.removed += 1
    for path, (row, label) in wanted.items():
        if path.is_file():
            report.kept += 1
        else:
            photo = store.read_photo(row)
            if hashlib.sha256(photo).hexdigest() != row.photo_sha256:
                report.refused.append(f"row {row.id}: its photo's bytes do not hash to its SHA-256")
                continue
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(photo))
            report.written += 1
        if path.parent.name == NOT_GARBAGE_FOLDER:
            report.not_garbage += 1
        else:
            report.per_class[label] = report.per_class.get(label, 0) + 1
    return report

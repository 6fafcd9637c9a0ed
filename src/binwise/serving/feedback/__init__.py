"""The feedback loop: photos the model got wrong, with the class a person says is right.

``POST /v1/feedback`` (``binwise.serving.feedback.routes``) records a photo, the model's answer and the
correction in a store (``binwise.serving.feedback.store``): an embedded SQLite database with the photos as
files beside it, or a PostgreSQL database that several replicas share. ``binwise feedback list``
shows the rows; ``binwise feedback export`` (``binwise.serving.feedback.export``) writes them as an
ImageFolder that ``binwise train DATA --extra DIR`` adds to the training split.
"""

from __future__ import annotations

import ipaddress
import unicodedata

from ...errors import BinwiseError
from ...taxonomy.classes import Taxonomy

# The correction of a photo that is no garbage at all (the answer to a wrong "ok", or the
# confirmation of an "unknown"); it is not a class, so training never reads it as one.
NOT_GARBAGE = "not garbage"
NOT_GARBAGE_NAMES = {NOT_GARBAGE, "not_garbage", "not-garbage", "不是垃圾"}
MAX_NOTE_CHARS = 500
DEFAULT_MAX_ROWS = 100_000  # rows a store takes before refusing more (binwise serve --feedback-max-rows)
# photo bytes a store takes in all, and from one network (routes.network_of), before refusing more:
# one address stored 239 MB in 8 s when only rows were counted
DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_NETWORK_BYTES = 64 * 1024**2
RATE_WINDOW_S = 60.0  # the window of the per-network rate limits (SqlStore.admit)


def resolve_correction(taxonomy: Taxonomy, text: str) -> tuple[int | None, str]:
    """(class index, English name) of a correction given as the English name (any case), the
    Chinese name or the index; (None, NOT_GARBAGE) for "not garbage"."""
    given = text.strip()
    if given.lower() in NOT_GARBAGE_NAMES:
        return None, NOT_GARBAGE
    # ASCII digits only, and few: str.isdigit() also passes "²" and other digits int() refuses, and
    # int() refuses numbers of more than 4,300 digits
    if given.isascii() and given.isdigit() and len(given) <= 6 and int(given) < taxonomy.num_classes:
        index = int(given)
        return index, taxonomy.classes_en[index]
    for names in (tuple(n.lower() for n in taxonomy.classes_en), taxonomy.classes_zh):
        if given.lower() in names:
            index = names.index(given.lower())
            return index, taxonomy.classes_en[index]
    raise BinwiseError(f"{given[:80]!r} is not a class of this model: give its English or Chinese name, its "
                       f"index (0-{taxonomy.num_classes - 1}) or {NOT_GARBAGE!r}", kind="unknown_class")


def check_note(note: str | None) -> str:
    """The note, stripped; refused when too long or holding control characters (a note ends up
    in terminals and spreadsheets)."""
    note = (note or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise BinwiseError(f"the note has {len(note)} characters; at most {MAX_NOTE_CHARS}", kind="invalid_note")
    if any(unicodedata.category(c) == "Cc" for c in note):
        raise BinwiseError("the note holds control characters (newlines, tabs, escapes): send plain text",
                           kind="invalid_note")
    return note


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

"""Checks of a taxonomy read from a file anyone may have written (a model file's metadata, a rule
file): each problem ends in one error naming the file and the field. Torch-free."""

from __future__ import annotations

import math

from ..errors import BinwiseError

MAX_CLASSES = 100_000
MAX_NAME_LENGTH = 200


class Problems:
    def __init__(self, path, what: str = "invalid model metadata"):
        self.path = path
        self.what = what

    def fail(self, problem: str):
        raise BinwiseError(f"{self.what}: {problem}", self.path)

    def need(self, ok: bool, problem: str) -> None:
        if not ok:
            self.fail(problem)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_name(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH


def check_taxonomy(taxonomy: dict, problems: Problems) -> int:
    """The number of classes, after checking every class and bin entry."""
    classes, bins = taxonomy.get("classes"), taxonomy.get("bins", [])
    problems.need(isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES,
                  f"taxonomy.classes must be a list of 1 to {MAX_CLASSES:,} classes")
    problems.need(isinstance(bins, list) and all(isinstance(b, dict) for b in bins), "taxonomy.bins must be a list of objects")
    bin_ids = set()
    for b in bins:
        problems.need(all(is_name(b.get(key, "")) for key in ("id", "en", "zh", "color")) and b.get("id") and b.get("en"),
                      f"taxonomy bin {b!r:.80} needs an id and an English name (text of at most {MAX_NAME_LENGTH} characters)")
        problems.need(set(b) <= {"id", "en", "zh", "color"}, f"taxonomy bin {b['id']!r} has unknown fields")
        bin_ids.add(b["id"])
    for i, c in enumerate(classes):
        problems.need(isinstance(c, dict) and is_name(c.get("en")) and c.get("en"),
                      f"taxonomy class {i} needs an English name (text of at most {MAX_NAME_LENGTH} characters)")
        problems.need(is_name(c.get("zh", "")), f"taxonomy class {i}'s Chinese name is not text")
        if bins:
            problems.need(isinstance(c.get("bin"), str) and c["bin"] in bin_ids,
                          f"taxonomy class {i} ({c['en']!r:.60}) is in no defined bin")
    names = [c["en"] for c in classes]
    problems.need(len(set(names)) == len(names), "taxonomy class names repeat (each output needs its own name)")
    problems.need(len(bin_ids) == len(bins), "taxonomy bin ids repeat")
    check_costs(taxonomy.get("costs"), [b["id"] for b in bins], problems)
    return len(classes)


def check_costs(costs, bin_ids: list[str], problems: Problems) -> tuple[tuple[str, str, float], ...]:
    """A ``costs`` section (``{true bin: {bin it went into: cost}}``, or None) checked against the
    file's bins, as ``(true bin, bin it went into, cost)`` entries in the file's order."""
    if costs is None:
        return ()
    problems.need(isinstance(costs, dict) and all(isinstance(row, dict) for row in costs.values()),
                  "costs must map each true bin to {bin it went into: cost}, e.g. costs: {hazardous: {other: 10}}")
    problems.need(bool(bin_ids), "costs are given but the taxonomy has no bins")
    known = set(bin_ids)
    entries = []
    for true_bin, row in costs.items():
        for chosen, cost in row.items():
            unknown = [b for b in (true_bin, chosen) if b not in known]
            problems.need(not unknown, f"costs name bins the taxonomy does not define: {unknown!r:.80} "
                                       f"(its bins: {', '.join(bin_ids)})")
            problems.need(is_number(cost) and cost >= 0,
                          f"costs: {true_bin} into {chosen} must be a number, 0 or more, not {cost!r:.40}")
            problems.need(true_bin != chosen or cost == 0,
                          f"costs: {true_bin} into {chosen} is the right bin, so its cost is 0, not {cost!r}")
            entries.append((true_bin, chosen, float(cost)))
    return tuple(entries)

"""``binwise feedback list DB`` and ``binwise feedback export DB OUT``: what the service's
``POST /v1/feedback`` recorded, shown, or written out as an ImageFolder to train on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

STORE_HELP = "the feedback store binwise serve --feedback-db wrote: a SQLite file or a postgresql:// URL"


def register(subparsers) -> None:
    p = subparsers.add_parser("feedback", help="list or export the feedback a service recorded (binwise serve "
                              "--feedback-db)")
    commands = p.add_subparsers(dest="feedback_command", metavar="{list,export}", required=True)
    listing = commands.add_parser("list", help="the recorded feedback, newest last: time, model, predicted -> "
                                  "corrected, status, note")
    listing.add_argument("db", help=STORE_HELP)
    listing.add_argument("--json", action="store_true", help="every field of every row, as JSON")
    listing.add_argument("--limit", type=int, metavar="N", help="only the newest N rows")
    listing.set_defaults(func=run_list)
    export = commands.add_parser("export", help="write the corrected photos as an ImageFolder OUT/<class>/"
                                 "<sha256>.<suffix> for 'binwise train DATA --extra OUT'")
    export.add_argument("db", help=STORE_HELP)
    export.add_argument("out", help="output folder (exporting again updates it)")
    export.add_argument("--reviewed", action="store_true", help="say that a person has checked these "
                        "corrections (binwise feedback list): anyone who reaches the service can send feedback, and "
                        "unreviewed labels poison the next model, so export refuses to run without this")
    export.set_defaults(func=run_export)


def run_list(args) -> int:
    from ..errors import BinwiseError
    from ..serving.feedback.stores import open_store

    if args.limit is not None and args.limit < 1:
        raise BinwiseError("--limit must be at least 1")
    store = open_store(args.db, create=False)
    try:
        rows = store.rows(args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
        return 0
    table = [("id", "time", "model", "predicted -> corrected", "status", "note")]
    table += [(str(r.id), r.time, r.model, f"{r.predicted} -> {r.corrected}", r.predicted_status, r.note) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"{len(rows)} feedback rows" + (f" (the newest {args.limit})" if args.limit else ""))
    return 0


def run_export(args) -> int:
    from ..errors import BinwiseError
    from ..serving.feedback.export import export_feedback
    from ..serving.feedback.stores import open_store

    if not args.reviewed:
        # measured: 200 wrong labels from 8 addresses took garbage26's test split from 95.4% to 93.1%
        raise BinwiseError("feedback joins training only when a person has checked it: look at the rows "
                           f"('binwise feedback list {args.db}'), then export with --reviewed")

    store = open_store(args.db, create=False)
    try:
        report = export_feedback(store, Path(args.out))
    finally:
        store.close()
    print_export(report, args.out, "feedback")
    return 0


def print_export(report, out: str, command: str) -> None:
    """What an export (``serving.feedback.export.ExportReport``) wrote, and what it left out."""
    from ..serving.feedback.export import NOT_GARBAGE_FOLDER

    classes = ", ".join(f"{name} {n}" for name, n in sorted(report.per_class.items()))
    print(f"{sum(report.per_class.values())} photos in {len(report.per_class)} class folders of {out}"
          + (f" ({classes})" if classes else ""))
    print(f"{report.written} written, {report.kept} already there, {report.removed} moved away (their label "
          f"changed); {report.not_garbage} 'not garbage' photos in {NOT_GARBAGE_FOLDER}/, which training skips")
    for problem in report.refused:
        print(f"binwise {command} export: left out {problem}", file=sys.stderr)

"""``binwise review list|label|report|export DB``: the review queue of a service's store (feedback,
and the photos ``binwise serve --keep-uncertain`` kept), labelled by people, exported once they agree."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .feedback import STORE_HELP, print_export

AGREE_HELP = "reviewers who must give an item one label before it is decided (default: %(default)s)"


def register(subparsers) -> None:
    from ..serving.feedback.review import DEFAULT_AGREE

    p = subparsers.add_parser("review", help="label the photos a service's users corrected or it was unsure "
                              "about, most useful first; export what reviewers agree on for training")
    commands = p.add_subparsers(dest="review_command", metavar="{list,label,report,export}", required=True)
    listing = commands.add_parser("list", help="the queue, most useful first: each item's photo, the model's "
                                  "choices with their bins, what its sender said")
    listing.add_argument("db", help=STORE_HELP)
    listing.add_argument("--model", required=True, help="the served model file (its classes, and whose items)")
    listing.add_argument("--reviewer", default=os.environ.get("USER", ""), help="leave out what this reviewer has "
                         "labelled (default: $USER)")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="items shown (default: %(default)s)")
    listing.add_argument("--agree", type=int, default=DEFAULT_AGREE, help=AGREE_HELP)
    listing.add_argument("--json", action="store_true", help="the items as JSON")
    listing.set_defaults(func=run_list)
    label = commands.add_parser("label", help="record your label of an item")
    label.add_argument("db", help=STORE_HELP)
    label.add_argument("item", type=int, help="the item's id (binwise review list)")
    label.add_argument("label", help="its class (English or Chinese name, or index), 'not garbage' or 'skip'")
    label.add_argument("--model", required=True, help="the served model file (its classes)")
    label.add_argument("--reviewer", default=os.environ.get("USER", ""), help="your name (default: $USER)")
    label.set_defaults(func=run_label)
    report = commands.add_parser("report", help="how many items are decided, the disagreements, and the "
                                 "networks whose feedback keeps disagreeing with the reviewers")
    report.add_argument("db", help=STORE_HELP)
    report.add_argument("--agree", type=int, default=DEFAULT_AGREE, help=AGREE_HELP)
    report.set_defaults(func=run_report)
    export = commands.add_parser("export", help="write the decided items (and their look-alikes) as an ImageFolder "
                                 "OUT/<class>/<sha256>.<suffix> for 'binwise train DATA --extra OUT'")
    export.add_argument("db", help=STORE_HELP)
    export.add_argument("out", help="output folder (exporting again updates it)")
    export.add_argument("--agree", type=int, default=DEFAULT_AGREE, help=AGREE_HELP)
    export.set_defaults(func=run_export)


def on_store(db: str, call, *args):
    """``call(store, *args)`` on the store ``db`` names, closed afterwards."""
    from ..serving.feedback.stores import open_store

    store = open_store(db, create=False)
    try:
        return call(store, *args)
    finally:
        store.close()


def taxonomy_of(model: str):
    from ..inference.classifier import runner_for

    return runner_for(Path(model)).describe(Path(model))[0].taxonomy


def check_agree(agree: int) -> None:
    from ..errors import BinwiseError

    if agree < 1:
        raise BinwiseError(f"--agree must be at least 1, got {agree}")


def run_list(args) -> int:
    from ..errors import BinwiseError
    from ..inference.classifier import model_id_of
    from ..serving.feedback import review

    check_agree(args.agree)
    if args.limit < 1:
        raise BinwiseError("--limit must be at least 1")
    taxonomy = taxonomy_of(args.model)

    def ranked_with_photos(store):
        ranked = review.queue(store, model_id_of(Path(args.model)), args.reviewer, args.agree, args.limit)
        return ranked, {i.id: getattr(store, "photo_path", lambda _: None)(i) for i, _ in ranked}

    ranked, photos = on_store(args.db, ranked_with_photos)
    shown = []
    for item, look_alikes in ranked:
        shown.append({"id": item.id, "source": item.source, "status": item.predicted_status,
                      "choices": [(taxonomy.classes_en[i], getattr(taxonomy.bin_of(i), "en", ""), p)
                                  for i, p in item.top_choices(3)],
                      "look_alikes": len(look_alikes), "photo": str(photos[item.id] or "")})
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    for s in shown:
        choices = ", ".join(f"{name} ({bin_}) {p:.0%}" for name, bin_, p in s["choices"])
        extra = f", stands for {s['look_alikes']} look-alikes" if s["look_alikes"] else ""
        print(f"{s['id']:>6}  {s['source']:<8} {s['status']:<7} {choices}{extra}  {s['photo']}")
    print(f"{len(shown)} items to review (binwise review label {args.db} ID CLASS --model {args.model})")
    return 0


def run_label(args) -> int:
    from ..serving.feedback import review

    label = review.resolve_label(taxonomy_of(args.model), args.label)
    on_store(args.db, review.add_review, args.item, args.reviewer, label)
    print(f"item {args.item}: {args.reviewer} says {label}")
    return 0


def run_report(args) -> int:
    from ..serving.feedback import review

    check_agree(args.agree)
    found = on_store(args.db, review.report, args.agree)
    decided = ", ".join(f"{label} {n}" for label, n in sorted(found.decided.items()))
    print(f"{found.items} items: {sum(found.decided.values())} decided by {args.agree} agreeing reviewers"
          + (f" ({decided})" if decided else "") + f", {found.undecided} not yet")
    for item, votes in found.disagreements:
        print(f"disagreement on item {item.id}: " + ", ".join(f"{who}: {label}" for who, label in sorted(votes.items())))
    for network, decided_n, wrong in found.flagged:
        print(f"flagged: network {network} sent {decided_n} decided feedbacks, {wrong} of them against the reviewers")
    return 0


def run_export(args) -> int:
    from ..serving.feedback.review import export_reviewed

    check_agree(args.agree)
    report = on_store(args.db, export_reviewed, Path(args.out), args.agree)
    print_export(report, args.out, "review")
    return 0

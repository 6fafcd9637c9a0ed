"""``binwise predict MODEL PATH...``: classify photos, folders or globs; print a table, JSON or CSV.

With an .onnx model this runs without importing torch.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path

from ..inference.classifier import BACKENDS

# show a progress bar only when there are enough photos to wait for
PROGRESS_MIN_FILES = 64


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify photos (files, folders, globs) and name their bins")
    p.add_argument("model", help="a binwise .safetensors model, or an .onnx file from 'binwise export'")
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos, folders (searched recursively) or globs")
    p.add_argument("-k", "--top-k", type=int, default=3, help="classes to show per photo (default 3)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--grid", metavar="PNG", help="also draw the photos with their labels into this image")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: by the file's suffix (.onnx onnxruntime, .tflite litert, otherwise torch)")
    p.add_argument("--threads", type=int, help="model threads (default: the library's)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N to run a .safetensors model on a "
                   "GPU (batch-1 calls replay a CUDA graph)")
    p.add_argument("--batch-size", type=int, default=32, help="photos per model call (default 32)")
    p.add_argument("--region", metavar="NAME|FILE", help="answer with this region's bins: a shipped rule set "
                   "(shanghai, beijing, germany) or a rule file covering the model's classes (default: the model "
                   "file's own)")
    add_threshold_arguments(p)
    p.set_defaults(func=run)


def add_threshold_arguments(p) -> None:
    """--min-confidence and --min-similarity, shared with ``binwise serve``."""
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="calibrated probability below which a photo is 'unsure' (default: the model file's, "
                   "chosen on validation for 99%% accuracy of the answered photos; 0.5 for uncalibrated models)")
    p.add_argument("--min-similarity", type=float, metavar="S",
                   help="similarity to the nearest training photo below which a photo is 'unknown' "
                   "(default: the model file's)")


def run(args) -> int:
    from tqdm import tqdm

    from ..errors import BinwiseError
    from ..inference.classifier import Classifier
    from .process import own_the_process

    if args.top_k < 1 or args.batch_size < 1:
        raise BinwiseError("--top-k and --batch-size must be at least 1")
    sources, missing, not_images = expand_paths(args.paths)
    if not_images:
        print(f"binwise predict: skipped {not_images} files that are not images (by their suffix)", file=sys.stderr)
    if not sources and not missing:
        print(f"binwise predict: no photos in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    own_the_process(args.threads)
    classifier = Classifier.load(args.model, backend=args.backend, threads=args.threads, device=args.device)
    classifier.set_thresholds(args.min_confidence, args.min_similarity)
    if args.region:
        from ..taxonomy.files import read_region

        classifier = classifier.with_bins(read_region(args.region, classifier.taxonomy).taxonomy)
    if classifier.status_note:
        print(f"binwise predict: note: {classifier.status_note}", file=sys.stderr)
    stream = classifier.predict_stream(sources, top_k=args.top_k, batch_size=args.batch_size)
    results, failures = [], len(missing)
    for pattern in missing:
        print(f"binwise predict: {pattern}: no such file, folder or matching photo", file=sys.stderr)
    for source, result in tqdm(stream, total=len(sources), unit="photo", file=sys.stderr,
                               disable=len(sources) < PROGRESS_MIN_FILES or None):
        if isinstance(result, BinwiseError):
            failures += 1
            print(f"binwise predict: {result}", file=sys.stderr)
        results.append((source, result))
    predictions = [r for _, r in results if not isinstance(r, BinwiseError)]
    if args.json:
        print(json.dumps([r.to_dict() if not isinstance(r, BinwiseError) else {"source": s, "error": str(r)}
                          for s, r in results], indent=2, ensure_ascii=False))
    elif args.csv:
        write_csv(predictions, args.top_k)
    else:
        print_table(predictions)
    if args.grid and predictions:
        draw_grid(predictions, args.grid)
        print(f"wrote {args.grid}", file=sys.stderr)
    if failures:
        print(f"binwise predict: {failures} of {len(sources) + len(missing)} could not be classified",
              file=sys.stderr)
    return 1 if failures else 0


def expand_paths(patterns: list[str]) -> tuple[list[str], list[str], int]:
    """Photos named by files, folders (recursive) and globs, in order; the patterns that matched
    nothing; and how many files folders and globs held that are not images (skipped: a folder of
    photos often holds a README or a COPYRIGHT). A file named on its own is kept even if it is not
    an image, so that it gets its own error."""
    from ..images import is_image_file

    sources, missing, not_images = [], [], 0
    for pattern in patterns:
        path = Path(pattern)
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError:  # e.g. a name too long: reported by the photo's own error
            is_dir, exists = False, True
        if is_dir:
            found = sorted(str(p) for p in path.rglob("*") if p.is_file())
        elif exists or not glob.has_magic(pattern):
            sources.append(pattern)  # a missing file is reported as "no such file" with the others
            continue
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                missing.append(pattern)
        images = [p for p in found if is_image_file(p)]
        not_images += len(found) - len(images)
        sources += images
    return sources, missing, not_images


def answer_words(p) -> str:
    """The answer in words: the class and bin when ok; the choices (and their bin, when they share
    one) when unsure; 'not garbage?' when unknown."""
    if p.status == "unknown":
        return "does not look like garbage"
    names = " or ".join(f"{c.en} {c.zh}".rstrip() for c in p.choices)
    words = names if p.status == "ok" else f"not sure: {names}"
    if p.bin:
        either = "" if p.status == "ok" or len(p.choices) < 2 else " either way"
        words += f"  -> {p.bin.en} {p.bin.zh}{either} ({p.bin_probability:.1%})"
    return words


def print_table(predictions) -> None:
    width = min(60, max((len(p.source) for p in predictions), default=5))
    for p in predictions:
        top = ", ".join(f"{s.en} {s.probability:.1%}" for s in p.top)
        print(f"{p.source:<{width}}  {p.status:<7s}  {answer_words(p)}  | {top}")


def write_csv(predictions, top_k: int) -> None:
    writer = csv.writer(sys.stdout)
    header = ["source", "status", "bin", "bin_zh", "bin_probability", "similarity"]
    for rank in range(1, top_k + 1):
        header += [f"class{rank}", f"class{rank}_zh", f"class{rank}_index", f"probability{rank}"]
    writer.writerow(header)
    for p in predictions:
        row = [p.source, p.status, p.bin.en if p.bin else "", p.bin.zh if p.bin else "",
               f"{p.bin_probability:.6f}" if p.bin_probability is not None else "",
               f"{p.similarity:.6f}" if p.similarity is not None else ""]
        for s in p.top:
            row += [s.en, s.zh, s.index, f"{s.probability:.6f}"]
        writer.writerow(row)


def draw_grid(predictions, out: str, max_photos: int = 64) -> None:
    """The photos with their top class, bin and confidence, the bin's colour on the title."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluation.fonts import bilingual, use_cjk_fallback
    from ..images import open_image

    shown = predictions[:max_photos]
    use_cjk_fallback()
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, shown):
        img = open_image(p.source)
        img.thumbnail((320, 320))
        ax.imshow(img)
        best = p.top[0]
        title = f"{bilingual(best.en, best.zh)} {best.probability:.0%}"
        if p.status != "ok":
            title = f"{p.status}: {title}"
        if p.bin:
            title += f"\n{bilingual(p.bin.en, p.bin.zh)} {p.bin_probability:.0%}"
        ax.set_title(title, fontsize=10, color=p.bin.color if p.bin else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)

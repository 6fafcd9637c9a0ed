"""Every benchmark script the README or docs name still runs: each answers ``--help`` (argparse
parses before any work starts, so this costs imports only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import runpy, sys
failed = []
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
    try:
        runpy.run_path(script, run_name="__main__")
        failed.append(f"{script}: ran without exiting on --help")
    except SystemExit as e:
        if e.code not in (0, None):
            failed.append(f"{script}: --help exited {e.code}")
    except Exception as e:
        failed.append(f"{script}: {type(e).__name__}: {e}")
    finally:
        sys.path.pop(0)
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def named_scripts() -> list[Path]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    return sorted({ROOT / m for m in re.findall(r"benchmarks/[\w/]+\.py", text)})


def test_docs_name_benchmark_scripts_that_exist():
    scripts = named_scripts()
    assert len(scripts) >= 10
    assert [s for s in scripts if not s.is_file()] == []


def test_every_named_benchmark_answers_help():
    scripts = [s for s in named_scripts() if "argparse" in s.read_text(encoding="utf-8")]
    result = subprocess.run([sys.executable, "-c", DRIVER, *map(str, scripts)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for choice in match.group(1).split(",")
            for p in expand_braces(path[:match.start()] + choice + path[match.end():])]


def test_every_results_file_the_docs_name_is_there():
    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    named = set(re.findall(r"benchmarks/results/[\w./{},*-]*[\w}]", text))
    assert len(named) >= 20
    missing = [path for pattern in named for path in expand_braces(pattern) if not list(ROOT.glob(path))]
    assert missing == []


def test_train_own_data_compares_recorded_runs():
    """``--compare`` joins one candidate's folds from several results files into one row."""
    results = ROOT / "benchmarks" / "results" / "train_own_data"
    files = [results / f"{name}.json" for name in ("2026-12-07-epochs16", "2026-12-08-lr1e-3", "2026-12-08-lr1e-3-more")]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "studies" / "train_own_data.py"), "--compare",
                          *map(str, files)], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    header, _, before, after = out.strip().splitlines()
    assert header.split(" | ")[1:4] == ["trashnet-fold0", "trashnet-fold1", "trashnet-fold2"]
    assert before.startswith("| `--epochs 16 --time-budget 1200` | 89.6% / 54.5% / 64.6% (99.2%) |")
    assert before.endswith("(6) |")
    # the second candidate's first two folds come from one file, the other four from the next
    assert after.startswith("| `--lr-max 1e-3` | 91.8% / 50.0% / 59.4% (")
    assert "| 90.3% / 63.6% / 69.1% (" in after and "| 91.6% / 50.0% / 56.4% (" in after
    assert after.endswith("93.6% (6) |")
    missing = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "studies" / "train_own_data.py"), "--compare",
                              str(ROOT / "README.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip().startswith(f"{ROOT / 'README.md'}: not a results file")
    assert len(missing.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_train_own_data_subset_keeps_the_held_out_photos_and_a_share_of_each_class(tmp_path):
    """``trashnet-foldK-subP``: P% of each class's train photos (the classes' proportions kept), every test photo."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from common import validation_tree
    finally:
        sys.path.pop(0)
    for name, n in {"a": 13, "b": 50}.items():  # 80% of them train: 10 and 40
        (tmp_path / "source" / "train" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / "source" / "train" / name / f"{i}.jpg")
    tree = validation_tree(tmp_path / "fold", source=tmp_path / "source")
    half = validation_tree(tmp_path / "half", source=tmp_path / "source", train_percent=50)

    def names(root, split, name):
        return {p.name for p in (root / split / name).iterdir()}
    assert [len(names(tree, "train", c)) for c in "ab"] == [10, 40]
    assert [len(names(half, "train", c)) for c in "ab"] == [5, 20]
    assert all(names(half, "train", c) <= names(tree, "train", c) for c in "ab")
    assert all(names(half, "test", c) == names(tree, "test", c) for c in "ab")
    again = validation_tree(tmp_path / "again", source=tmp_path / "source", train_percent=50)
    assert names(again, "train", "b") == names(half, "train", "b")  # seeded

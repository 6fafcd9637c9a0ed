"""Every benchmark script the README or docs name still runs: each answers ``--help`` (argparse
parses before any work starts, so this costs imports only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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

"""Taxonomy files: your own classes and bins, and regional sorting rules.

A taxonomy file (YAML, TOML, JSON or CSV) lists each class with its English name, an optional
Chinese name and its bin, and each bin with an id, names and a colour::

    name: my-bins
    source: where these rules come from
    version: "2026-01-01"          # optional: the rules' version or effective date
    bins:
      - {id: recyclable, en: recyclable, zh: 可回收物, color: "#1565c0"}
      - {id: residual, en: residual waste}
    classes:
      - {en: cardboard, zh: 硬纸板, bin: recyclable}
      - {en: trash, bin: residual}

An optional ``costs`` section says what putting an item of one of its bins into another costs
(``{true bin: {bin it went into: cost}}``, numbers of 0 or more, 0 into its own bin); the pairs it
leaves out cost what ``costs.bin_costs`` gives every taxonomy::

    costs:
      hazardous: {residual: 20}     # e.g. where hazardous waste in residual is burnt
      recyclable: {residual: 0.5}

A CSV has one row per class with the columns ``en``, ``zh`` (optional) and ``bin``, and no costs; its bins get
their id as name and a colour of their own. ``binwise train DIR --taxonomy FILE`` uses one (a
``taxonomy.yaml`` at the dataset's root is picked up), and ``binwise rebin`` gives a trained model
another region's rules; binwise ships rule files for the garbage26 classes (``rule_names``), and
``binwise serve --region`` / ``predict --region`` answer with a region's rules (``read_region``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
import json
import tomllib
from importlib import resources
from dataclasses import dataclass
from pathlib import Path

from ..errors import BinwiseError
from .checks import MAX_CLASSES, Problems, check_costs, check_taxonomy
from .classes import GARBAGE26, SHANGHAI_SOURCE, Bin, Taxonomy, costs_mapping

SUFFIXES = (".yaml", ".yml", ".toml", ".json", ".csv")
DATASET_FILE = "taxonomy.yaml"  # picked up at a dataset's root
MAX_FILE_BYTES = 4_000_000  # 100,000 classes with English and Chinese names fit in far less
PALETTE = ("#1565c0", "#4a4a4a", "#6d4c41", "#c62828", "#2e7d32", "#f9a825", "#6a1b9a", "#00838f")


# rules built in rather than shipped as a file: Shanghai's are garbage26's own bins (one copy of them)
BUILT_IN_RULES = {"shanghai": (dataclasses.replace(GARBAGE26, name="shanghai"),
                                {"source": SHANGHAI_SOURCE, "version": "2019-07-01"})}


@dataclass(frozen=True)
class Region:
    """A region's rules applied to a model's classes: the model's taxonomy with the region's bins."""

    name: str
    taxonomy: Taxonomy
    source: str = ""  # where the rules come from, as the file says
    version: str = ""  # the rules' version or effective date, as the file says

    def to_dict(self) -> dict:
        # costs: those the rules state; every other pair costs binwise's default (``costs.bin_costs``)
        return {"name": self.name, "source": self.source, "version": self.version,
                "bins": [dataclasses.asdict(b) for b in self.taxonomy.bins],
                "costs": costs_mapping(self.taxonomy.costs)}


def rule_names() -> list[str]:
    """The rules binwise ships (package data and ``BUILT_IN_RULES``), by name."""
    return sorted([p.name.rsplit(".", 1)[0] for p in resources.files("binwise.taxonomy.rules").iterdir()
                   if p.name.endswith(".yaml")] + list(BUILT_IN_RULES))


def resolve(spec: str | Path) -> Path | resources.abc.Traversable:
    """A taxonomy file path, or the name of a shipped rule file."""
    shipped = resources.files("binwise.taxonomy.rules") / f"{spec}.yaml"
    if str(spec) in rule_names() and shipped.is_file():
        return shipped
    path = Path(spec)
    if not path.is_file():
        raise BinwiseError(f"no such taxonomy file (shipped rules: {', '.join(rule_names())})", path)
    return path


def read_taxonomy(spec: str | Path) -> tuple[Taxonomy, str]:
    """The taxonomy in a file (or shipped rules) and its stated source ("" when it names none)."""
    taxonomy, data = read_with_fields(spec)
    return taxonomy, str(data.get("source", ""))


def read_region(spec: str | Path, model_taxonomy: Taxonomy) -> Region:
    """A region's rules (a shipped name or a file) applied to a model's classes; one error naming
    the file when they do not cover the model's classes."""
    rules, data = read_with_fields(spec)
    return Region(rules.name, rebinned(model_taxonomy, rules, str(spec)), str(data.get("source") or ""),
                  str(data.get("version") or ""))


def read_with_fields(spec: str | Path) -> tuple[Taxonomy, dict]:
    """The taxonomy in a file (or shipped rules), and the file's top-level fields."""
    if str(spec) in BUILT_IN_RULES:
        return BUILT_IN_RULES[str(spec)]
    path = resolve(spec)
    name = str(spec)
    suffix = "." + path.name.rsplit(".", 1)[-1].lower()
    if suffix not in SUFFIXES:
        raise BinwiseError(f"a taxonomy file is YAML, TOML, JSON or CSV, not {suffix}", name)
    try:
        raw = path.read_bytes() if not isinstance(path, Path) else read_bounded(path)
        text = raw.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is not part of the text
    except (OSError, UnicodeDecodeError) as e:
        raise BinwiseError(f"cannot read taxonomy file ({e})", name) from None
    data = parse(text, suffix, name)
    taxonomy = from_mapping(data, name, default_name=Path(path.name).stem)
    # what info, predict and serve will check in the model file, checked before any model is written
    check_taxonomy(taxonomy.to_dict(), Problems(name, "taxonomy file"))
    return taxonomy, data


def read_bounded(path: Path) -> bytes:
    """The file's bytes, refused before reading when it is larger than any taxonomy needs."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BinwiseError(f"taxonomy file is {size / 1e6:.1f} MB; a taxonomy file is at most "
                           f"{MAX_FILE_BYTES / 1e6:.0f} MB", path)
    return path.read_bytes()


def parse(text: str, suffix: str, name: str) -> dict:
    try:
        if suffix == ".csv":
            return parse_csv(text, name)
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = parse_yaml(text, name)
    except BinwiseError:
        raise
    except Exception as e:  # every parser's own error type: one line naming the file
        raise BinwiseError(f"taxonomy file is not valid {suffix[1:].upper()}: {str(e).splitlines()[0]}", name) from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise BinwiseError("taxonomy file needs a non-empty list 'classes' (each with 'en' and 'bin')", name)
    return data


def parse_csv(text: str, name: str) -> dict:
    """One row per class; the separator is found from the header (Excel writes ';' where the decimal
    mark is a comma)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BinwiseError("taxonomy CSV is empty: its first line names the columns en, zh (optional) and bin", name)
    if len(lines) > MAX_CLASSES + 1:
        raise BinwiseError(f"taxonomy CSV has {len(lines) - 1:,} rows; at most {MAX_CLASSES:,} classes", name)
    header = lines[0]
    separator = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=separator)
    columns = [c.strip() for c in reader.fieldnames or []]
    if "en" not in columns:
        raise BinwiseError(f"taxonomy CSV has no 'en' column (its first line reads {header[:80]!r}); the columns "
                           "are en, zh (optional) and bin", name)
    return {"classes": [{k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                        for row in reader], "rows": "line"}


def parse_yaml(text: str, name: str):
    """YAML without anchors and aliases: a taxonomy needs none, and aliases nested in aliases grow
    a few hundred bytes into gigabytes (a 'billion laughs' file)."""
    import yaml

    for token in yaml.scan(text):
        if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
            raise BinwiseError(f"taxonomy file uses YAML anchors or aliases (line {token.start_mark.line + 1}); "
                               "write each class out", name)
    return yaml.safe_load(text)


def from_mapping(data: dict, name: str, default_name: str) -> Taxonomy:
    classes = data["classes"]
    if len(classes) > MAX_CLASSES:
        raise BinwiseError(f"taxonomy file lists {len(classes):,} classes; at most {MAX_CLASSES:,}", name)
    for i, c in enumerate(classes):
        if not (isinstance(c, dict) and isinstance(c.get("en"), str) and c["en"].strip()):
            where = f"line {i + 2}" if data.get("rows") == "line" else f"class {i + 1}"
            raise BinwiseError(f"{where} has no English name 'en'", name)
    names = [c["en"].strip() for c in classes]
    twice = sorted(n for n, count in Counter(names).items() if count > 1)
    if twice:
        raise BinwiseError(f"classes listed twice: {twice}", name)
    assigned = [str(c.get("bin") or "").strip() for c in classes]
    if any(assigned) and not all(assigned):
        raise BinwiseError(f"classes without a bin: {[n for n, b in zip(names, assigned) if not b]}", name)
    bins = []
    for i, b in enumerate(data.get("bins") or []):
        if not isinstance(b, dict) or not str(b.get("id", "")).strip():
            raise BinwiseError("every bin needs an 'id'", name)
        bins.append(Bin(str(b["id"]), str(b.get("en") or b["id"]), str(b.get("zh") or ""),
                        str(b.get("color") or PALETTE[i % len(PALETTE)])))
    known = {b.id for b in bins}
    for bin_id in dict.fromkeys(assigned):  # bins only named by classes (a CSV): id as name
        if bin_id and bin_id not in known:
            if data.get("bins"):
                raise BinwiseError(f"class assigned to a bin the file does not define: {bin_id!r}", name)
            bins.append(Bin(bin_id, bin_id, "", PALETTE[len(bins) % len(PALETTE)]))
            known.add(bin_id)
    zh = [str(c.get("zh") or "") for c in classes]
    bins = bins if any(assigned) else []
    costs = check_costs(data.get("costs"), [b.id for b in bins], Problems(name, "taxonomy file"))
    return Taxonomy(classes_en=tuple(names), classes_zh=tuple(zh) if any(zh) else (),
                    bins=tuple(bins), class_bins=tuple(assigned) if any(assigned) else (),
                    name=str(data.get("name") or default_name), costs=costs)


def for_folders(taxonomy: Taxonomy, folders: list[str], where: str) -> Taxonomy:
    """``taxonomy`` checked against a dataset's class folders: one error naming every mismatch."""
    in_file, on_disk = set(taxonomy.classes_en), set(folders)
    problems = []
    if on_disk - in_file:
        problems.append(f"folders not in the taxonomy file: {sorted(on_disk - in_file)}")
    if in_file - on_disk:
        problems.append(f"classes in the taxonomy file with no folder: {sorted(in_file - on_disk)}")
    if problems:
        raise BinwiseError("; ".join(problems), where)
    return taxonomy


def rebinned(current: Taxonomy, rules: Taxonomy, where: str) -> Taxonomy:
    """``current``'s classes, in its order, with the bins of ``rules`` (Chinese names from the rules
    where they give them). Every class must be in the rules."""
    if not rules.class_bins:
        raise BinwiseError("the rules assign no bins", where)
    missing = sorted(set(current.classes_en) - set(rules.classes_en))
    if missing:
        raise BinwiseError(f"the rules give no bin for the model's classes {missing}", where)
    index = {n: i for i, n in enumerate(rules.classes_en)}
    zh = tuple((rules.classes_zh[index[n]] if rules.classes_zh and rules.classes_zh[index[n]] else
                (current.classes_zh[i] if current.classes_zh else "")) for i, n in enumerate(current.classes_en))
    return Taxonomy(classes_en=current.classes_en, classes_zh=zh if any(zh) else (), bins=rules.bins,
                    class_bins=tuple(rules.class_bins[index[n]] for n in current.classes_en), name=rules.name,
                    costs=rules.costs)

"""Class lists and the bins they belong to.

A taxonomy is the label side of a model: class names (English, optionally Chinese), the bins, and
which bin each class goes in. It is saved inside every model file so labels travel with weights.
The garbage26 preset is the MindSpore tutorial's: its class index order is what its checkpoints use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bin:
    id: str
    en: str
    zh: str = ""
    color: str = "#888888"


@dataclass(frozen=True)
class Taxonomy:
    """Classes in index order, with an optional bin for each."""

    classes_en: tuple[str, ...]
    classes_zh: tuple[str, ...] = ()
    bins: tuple[Bin, ...] = ()
    class_bins: tuple[str, ...] = ()  # bin id of each class, same order as classes_en
    name: str = ""
    # (true bin, bin it went into, cost) as a taxonomy or rule file states them; ``costs.bin_costs``
    # fills in the pairs it leaves out
    costs: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self):
        n = len(self.classes_en)
        if n == 0:
            raise ValueError("a taxonomy needs at least one class")
        if self.classes_zh and len(self.classes_zh) != n:
            raise ValueError(f"{len(self.classes_zh)} Chinese names for {n} classes")
        if self.class_bins:
            if len(self.class_bins) != n:
                raise ValueError(f"{len(self.class_bins)} bin assignments for {n} classes")
            unknown = set(self.class_bins) - {b.id for b in self.bins}
            if unknown:
                raise ValueError(f"classes assigned to undefined bins: {sorted(unknown)}")
        unknown = {b for true_bin, chosen, _ in self.costs for b in (true_bin, chosen)} - {b.id for b in self.bins}
        if unknown:
            raise ValueError(f"costs of undefined bins: {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes_en)

    def bin_of(self, class_index: int) -> Bin | None:
        if not self.class_bins:
            return None
        bin_id = self.class_bins[class_index]
        return next(b for b in self.bins if b.id == bin_id)

    def bin_index_of_classes(self) -> list[int]:
        """For each class, the index of its bin in ``bins`` (for bin-level accuracy)."""
        ids = [b.id for b in self.bins]
        return [ids.index(b) for b in self.class_bins]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": [
                {"en": en,
                 "zh": self.classes_zh[i] if self.classes_zh else "",
                 "bin": self.class_bins[i] if self.class_bins else None}
                for i, en in enumerate(self.classes_en)
            ],
            "bins": [{"id": b.id, "en": b.en, "zh": b.zh, "color": b.color} for b in self.bins],
            # only when stated, so a model file without costs reads as before
            **({"costs": costs_mapping(self.costs)} if self.costs else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Taxonomy":
        classes = data["classes"]
        has_bins = bool(data.get("bins"))
        return cls(
            classes_en=tuple(c["en"] for c in classes),
            classes_zh=tuple(c.get("zh", "") for c in classes) if any(c.get("zh") for c in classes) else (),
            bins=tuple(Bin(**b) for b in data.get("bins", [])),
            class_bins=tuple(c["bin"] for c in classes) if has_bins else (),
            name=data.get("name", ""),
            costs=tuple((a, b, float(c)) for a, row in (data.get("costs") or {}).items() for b, c in row.items()),
        )

    @classmethod
    def from_names(cls, names: list[str], name: str = "") -> "Taxonomy":
        """A plain class list with no bins (any ImageFolder dataset)."""
        return cls(classes_en=tuple(names), name=name)


def costs_mapping(costs: tuple[tuple[str, str, float], ...]) -> dict[str, dict[str, float]]:
    """``Taxonomy.costs`` as a file writes them: ``{true bin: {bin it went into: cost}}``."""
    mapping: dict[str, dict[str, float]] = {}
    for true_bin, chosen, cost in costs:
        mapping.setdefault(true_bin, {})[chosen] = cost
    return mapping


GARBAGE_BINS = (
    Bin("dry", "dry waste", "干垃圾", "#4a4a4a"),
    Bin("recyclable", "recyclable", "可回收物", "#1565c0"),
    Bin("wet", "wet (kitchen) waste", "湿垃圾", "#6d4c41"),
    Bin("hazardous", "hazardous", "有害垃圾", "#c62828"),
)

# (English, Chinese, bin) in the tutorial's index order.
_GARBAGE26 = [
    ("Seashell", "贝壳", "dry"), ("Lighter", "打火机", "dry"), ("Old Mirror", "旧镜子", "dry"),
    ("Broom", "扫把", "dry"), ("Ceramic Bowl", "陶瓷碗", "dry"), ("Toothbrush", "牙刷", "dry"),
    ("Disposable Chopsticks", "一次性筷子", "dry"), ("Dirty Cloth", "脏污衣服", "dry"),
    ("Newspaper", "报纸", "recyclable"), ("Glassware", "玻璃制品", "recyclable"),
    ("Basketball", "篮球", "recyclable"), ("Plastic Bottle", "塑料瓶", "recyclable"),
    ("Cardboard", "硬纸板", "recyclable"), ("Glass Bottle", "玻璃瓶", "recyclable"),
    ("Metalware", "金属制品", "recyclable"), ("Hats", "帽子", "recyclable"),
    ("Cans", "易拉罐", "recyclable"), ("Paper", "纸张", "recyclable"),
    ("Vegetable Leaf", "菜叶", "wet"), ("Orange Peel", "橙皮", "wet"), ("Eggshell", "蛋壳", "wet"),
    ("Banana Peel", "香蕉皮", "wet"),
    ("Battery", "电池", "hazardous"), ("Tablet capsules", "药片胶囊", "hazardous"),
    ("Fluorescent lamp", "荧光灯", "hazardous"), ("Paint bucket", "油漆桶", "hazardous"),
]

GARBAGE26 = Taxonomy(
    classes_en=tuple(c[0] for c in _GARBAGE26),
    classes_zh=tuple(c[1] for c in _GARBAGE26),
    bins=GARBAGE_BINS,
    class_bins=tuple(c[2] for c in _GARBAGE26),
    name="garbage26",
)

PRESETS = {"garbage26": GARBAGE26}

# garbage26's class-to-bin map is Shanghai's: shipped as the ``shanghai`` rules (``files.rule_names``)
SHANGHAI_SOURCE = ("Shanghai Municipal Household Waste Management Regulations (上海市生活垃圾管理条例, in force "
                   "2019-07-01); class-to-bin map as in the MindSpore MobileNetV2 garbage-classification tutorial")

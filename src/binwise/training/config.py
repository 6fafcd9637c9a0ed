"""The training configuration: one typed dataclass, named presets, YAML/TOML files, CLI overrides.

Precedence: preset < ``--config FILE`` < command-line flags; without a preset, ``mode: finetune``
(from the file or a flag) starts from the ``finetune`` preset, ``mode: head`` from ``head``, anything
else from ``default`` (``mode: auto``).
Every field is also a flag (``lr_max`` -> ``--lr-max``); the resolved config is saved in the run
directory and the model file.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import BinwiseError
from .schedules import ScheduleConfig

MODES = ("auto", "head", "finetune")
OPTIMIZERS = ("sgd", "adamw")
CLASS_BALANCE = ("none", "loss", "sqrt")


# The augmentation spec; ``augment`` builds it for the CPU and the device path.
POLICIES = ("none", "trivialaugment", "randaugment")


@dataclass
class AugmentConfig:
    store_size: int = 256  # photos are reduced to this square before cropping
    # side of the training crops (0: the model's input size). Smaller crops cost less per step, and a
    # network trained on them tests well at the larger input size (Touvron et al., NeurIPS 2019)
    crop_size: int = 0
    scale_min: float = 0.08  # random resized crop: area fraction of the square
    scale_max: float = 1.0
    ratio_min: float = 3 / 4
    ratio_max: float = 4 / 3
    flip: float = 0.5
    jitter: float = 0.4  # brightness, contrast and saturation
    policy: str = "none"  # none | trivialaugment | randaugment (CPU path only)
    erasing: float = 0.0  # probability of random erasing
    # batch mixing (0: off): MixUp / CutMix with this Beta(alpha, alpha); with both, one of the two per batch.
    # On cached activations they mix the activations (manifold mixup, CutMix on the 14x14 map).
    mixup: float = 0.0
    cutmix: float = 0.0

    def validate(self) -> list[tuple[bool, str]]:
        return [
            (0 < self.scale_min <= self.scale_max <= 1, f"augment scale must satisfy 0 < min <= max <= 1, "
             f"got {self.scale_min}..{self.scale_max}"),
            (0 < self.ratio_min <= self.ratio_max, f"augment ratio must satisfy 0 < min <= max, "
             f"got {self.ratio_min}..{self.ratio_max}"),
            (self.store_size >= 16, f"augment store_size must be at least 16, got {self.store_size}"),
            (self.crop_size == 0 or 32 <= self.crop_size <= self.store_size,
             f"augment crop_size must be 0 (the input size) or 32 to store_size, got {self.crop_size}"),
            (0 <= self.flip <= 1 and 0 <= self.erasing <= 1, "augment flip and erasing are probabilities in [0, 1]"),
            (self.jitter >= 0, f"augment jitter must be >= 0, got {self.jitter}"),
            (self.mixup >= 0 and self.cutmix >= 0, "augment mixup and cutmix are Beta alphas >= 0"),
            (self.policy in POLICIES, f"augment policy must be one of {', '.join(POLICIES)}, got {self.policy!r}"),
        ]


# The tutorial's augmentation (random resized crop down to 8%, flip, colour jitter 0.4).
TUTORIAL_AUGMENT = AugmentConfig()
# Fine-tuning's: crops keep at least a quarter of the square, so the object stays in view.
FINETUNE_AUGMENT = AugmentConfig(scale_min=0.25, jitter=0.2)


@dataclass
class TrainConfig:
    # auto: head first, then fine-tuning when validation says it can help and time allows;
    # head: frozen backbone, cached features; finetune: backprop into the backbone
    mode: str = "head"
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "sgd"  # sgd (momentum) | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # layer-wise rates: each block below the top trains at layer_decay times the rate of the one above it
    # (the head at the full rate); 1 is one rate for all
    layer_decay: float = 1.0
    label_smoothing: float = 0.0
    dropout: float = 0.0  # before the classifier
    # loss: cross-entropy weighted by inverse class frequency, so a small class counts as much as a large
    # one; sqrt: by its square root, halfway
    class_balance: str = "none"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # head mode: augmented views cached per photo (each costs one backbone pass per photo, once)
    views: int = 0
    # finetune mode: > 0 caches the frozen prefix's activations for this many augmented views of each
    # photo and trains the suffix on them (``training.activations``); 0 decodes and augments every step
    cached_views: int = 0
    # finetune mode: how many of the last backbone blocks train (None: all, 0: head only, backbone
    # recomputed every step as in the tutorial)
    trainable_blocks: int | None = None
    # finetune mode: first train the head on cached features of the frozen backbone, with head
    # mode's recipe (``warm_start_config``), so fine-tuning starts from a good head, not a random
    # one whose large gradients would wreck the pretrained features ("linear probe, then fine-tune")
    warm_start_head: bool = False
    # finetune mode: "train" lets batch norm use batch statistics and update its running ones;
    # "frozen" keeps every BN in eval mode (running statistics fixed, gamma/beta still trained)
    batchnorm: str = "train"
    val_fraction: float = 0.1  # held out of train (seeded, stratified) to monitor and choose settings
    # a dataset without a test folder: this fraction of its photos is its test split, and val_fraction
    # is taken of all its photos too (default 80/10/10)
    test_fraction: float = 0.1
    retrain_on_all: bool = True  # after the monitored run, train again on all of train for the final model
    keep_best: bool = False  # end a monitored phase with its best epoch by validation accuracy
    # calibration (training.calibration): the accuracy the answered (status ok) held-out photos must
    # reach, the share of held-out garbage photos the unknown threshold may call unknown, and the
    # folds of the probe's cross-validation
    target_accuracy: float = 0.99
    unknown_rate: float = 0.02
    calibration_folds: int = 5
    time_budget: float = 600.0  # auto mode: seconds the whole run may take (fine-tuning fits in what is left)
    # auto mode: keep fine-tuning only when McNemar's one-sided p of its validation gain over the probe
    # is below this. 1 (default): whenever it fixes more validation photos than it breaks; on six
    # validation folds of trashnet and garbage26 the fine-tuned model was never worse than the probe,
    # and 0.05 refused it twice (benchmarks/tuning/tune_finetune_gate.py)
    finetune_significance: float = 1.0
    seed: int = 0
    workers: int = 2  # DataLoader processes decoding photos
    feature_batch_size: int = 32
    engine: str = "auto"  # frozen backbone for cached features: auto | onnx | torch
    device: str = "auto"  # auto: cuda when available
    # finetune mode: decode the photos once, keep them on the device and augment whole batches
    # there (binwise.gpu_data): auto = on CUDA when they fit in a quarter of its free memory
    data_on_device: str = "auto"
    keep_checkpoints: int = 2  # the last N epoch checkpoints are kept, plus the best

    def validate(self) -> "TrainConfig":
        try:
            return self._validate()
        except TypeError:  # a comparison with a value of the wrong type, from a config file
            def kind(value):
                return str if isinstance(value, str) else (int, float)
            wrong = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                     if isinstance(f.default, (int, float, str)) and not isinstance(getattr(self, f.name), kind(f.default))]
            raise BinwiseError(f"settings of the wrong type: {', '.join(wrong) or 'see the config file'}") from None

    def _validate(self) -> "TrainConfig":
        checks = [
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.class_balance in CLASS_BALANCE,
             f"class_balance must be one of {', '.join(CLASS_BALANCE)}, got {self.class_balance!r}"),
            (self.cached_views >= 0, f"cached_views must be >= 0, got {self.cached_views}"),
            (0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1], got {self.layer_decay}"),
            (0 < self.test_fraction < 1, f"test_fraction must be in (0, 1), got {self.test_fraction}"),
            (self.val_fraction + self.test_fraction < 1, "val_fraction + test_fraction must be below 1"),
            (self.time_budget > 0, f"time_budget must be positive, got {self.time_budget}"),
            *self.augment.validate(),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.views >= 0, f"views must be >= 0, got {self.views}"),
            (self.engine in ("auto", "onnx", "torch"), f"engine must be auto, onnx or torch, got {self.engine!r}"),
            (self.data_on_device in ("auto", "yes", "no"),
             f"data_on_device must be auto, yes or no, got {self.data_on_device!r}"),
            (isinstance(self.warm_start_head, bool), f"warm_start_head must be true or false, got {self.warm_start_head!r}"),
            (self.batchnorm in ("train", "frozen"), f"batchnorm must be train or frozen, got {self.batchnorm!r}"),
            (0 < self.finetune_significance <= 1,
             f"finetune_significance must be in (0, 1], got {self.finetune_significance}"),
            (0 < self.target_accuracy <= 1, f"target_accuracy must be in (0, 1], got {self.target_accuracy}"),
            (0 <= self.unknown_rate < 1, f"unknown_rate must be in [0, 1), got {self.unknown_rate}"),
            (self.calibration_folds >= 2, f"calibration_folds must be at least 2, got {self.calibration_folds}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BinwiseError(f"invalid config: {message}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, base: "TrainConfig | None" = None, source: str = "config") -> "TrainConfig":
        """``base`` (default: the defaults) with the fields in ``data`` replaced; unknown keys are errors."""
        return _merge(base or cls(), data, source)


def _merge(base, data: dict, source: str):
    known = {f.name: f for f in fields(base)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BinwiseError(f"unknown {type(base).__name__} fields {unknown}; known: {sorted(known)}", source)
    changes = {}
    for name, value in data.items():
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise BinwiseError(f"{name} must be a table of {sorted(f.name for f in fields(current))}", source)
            changes[name] = _merge(current, value, source)
        else:
            changes[name] = tuple(value) if isinstance(current, tuple) else value
    return replace(base, **changes)


# The MindSpore tutorial's recipe: frozen backbone recomputed for every batch, Momentum SGD,
# cosine decay from 0.05 over 10 epochs of batch 16, the tutorial's augmentation.
TUTORIAL = TrainConfig(mode="finetune", trainable_blocks=0, epochs=10, batch_size=16, val_fraction=0.0,
                       retrain_on_all=False, schedule=ScheduleConfig(name="cosine", lr_max=0.05),
                       augment=TUTORIAL_AUGMENT)

# The linear probe: the same optimiser on cached features of a frozen backbone, so the head can
# train for many epochs in seconds. Values chosen by validation accuracy on two seeded 10% splits
# of train (benchmarks/tuning/tune_head.py, results in benchmarks/results/tune_head/tune_head.json), never on test.
# Cached augmented views did not help there (the tutorial's crops reach down to 8% of the photo,
# far from the centre crop seen at test time), so by default none are computed.
HEAD = TrainConfig(mode="head", epochs=30, batch_size=64, views=0, label_smoothing=0.1,
                   weight_decay=1e-4, schedule=ScheduleConfig(name="cosine", lr_max=0.02, warmup_epochs=1))

# "Linear probe, then fine-tune": the head trained on cached features as in head mode, then the last
# 5 backbone blocks fine-tuned on cached activations of the frozen prefix (4 augmented views of
# each photo) with AdamW, BN frozen, the best epoch by validation kept. AdamW because the imported
# weights have batch norm folded into them, which leaves per-channel weight scales 100x apart: one
# SGD rate is far too large for some channels (measured: training accuracy 0.91 -> 0.51 in 40 steps)
# while Adam's per-parameter step is scale-free. The recipe was chosen on validation splits of proxy
# datasets (benchmarks/tuning/tune_finetune.py, docs/training.md), never on a test split; then, on
# three trashnet and three garbage26 validation folds of the train splits
# (benchmarks/results/train_own_data/):
# - 16 epochs, not 8: held-out top-1 89.7% / 96.2% against 88.8% / 96.2% for about 15 s more (the
#   epochs run on cached activations; 2026-12-07-epochs16); a short budget halves them first;
# - the loss weighted by the inverse square root of class frequency (2026-12-08-sqrt16): on balanced
#   data (garbage26) the weights are within 1.1% of 1, so nothing changes; on trashnet the smallest
#   class's recall rose from 62% to 65% on average at the same accuracy;
# - lr 3e-4 kept: 1e-3 gained 0.7 points on five trashnet folds (90.8% against 90.2%) and 1.2 on
#   half of three of them, but answered 11 points fewer held-out photos `ok` (a third as many on the
#   halves: 2026-12-08-sized*, -sub50*); on folders of about 10 photos a class it lost 5 of 26
#   held-out photos (fewshot) where 3e-4 kept the probe (2026-12-08-small-*). MixUp/CutMix of the
#   activations and 8 views gained less (2026-12-08-mix, -views8, -lr-mix*).
FINETUNE = TrainConfig(mode="finetune", warm_start_head=True, trainable_blocks=5, batchnorm="frozen", epochs=16,
                       batch_size=32, optimizer="adamw", weight_decay=0.05, label_smoothing=0.1, class_balance="sqrt",
                       cached_views=4, augment=FINETUNE_AUGMENT, val_fraction=0.1, retrain_on_all=False,
                       keep_best=True, schedule=ScheduleConfig(name="cosine", lr_max=3e-4, warmup_epochs=1))

# binwise's default: the probe, then FINETUNE's fine-tuning when validation says it can add and
# the time budget allows; the better of the two by validation accuracy is kept (``training.auto``).
# The whole network on photos (--trainable-blocks all --cached-views 0 --crop-size 160 --epochs 30)
# was measured against it on two trashnet folds and was not better, at three times the time.
DEFAULT = replace(FINETUNE, mode="auto")

PRESETS = {"default": DEFAULT, "head": HEAD, "finetune": FINETUNE, "tutorial": TUTORIAL}


def warm_start_config(config: TrainConfig) -> TrainConfig:
    """How the probe trains inside finetune and auto mode: head mode's recipe (HEAD's values, chosen
    on validation for exactly this job) with this run's seed, split, data loading and devices."""
    run_settings = ("seed", "workers", "feature_batch_size", "engine", "device", "keep_checkpoints",
                    "val_fraction", "test_fraction", "class_balance")
    return replace(HEAD, **{name: getattr(config, name) for name in run_settings})


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BinwiseError(f"cannot read config file ({e.strerror})", path) from None
    import yaml  # here, not at import time: the torch-free inference install needs no YAML

    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)  # PyYAML's messages span lines: keep the problem and its place
        reason = (f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}" if mark and getattr(e, "problem", None)
                  else " ".join(str(e).split()))
        raise BinwiseError(f"config file is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {reason}",
                           path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BinwiseError("config file must hold a mapping of field names to values", path)
    return data


def flat_fields(config=None, prefix: str = "") -> list[tuple[str, dataclasses.Field, object]]:
    """(dotted path, field, default) of every leaf field, for generating command-line flags."""
    config = config or TrainConfig()
    out = []
    for f in fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += flat_fields(value, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f, value))
    return out


def nest(dotted: dict) -> dict:
    """{'schedule.lr_max': 0.1} -> {'schedule': {'lr_max': 0.1}}"""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict | None = None) -> TrainConfig:
    """The preset, then the file, then the overrides. Without a preset, the base is the preset of
    the mode the file or the overrides set (``finetune``, ``head``), else ``default`` (auto)."""
    from_file = read_config_file(config_file) if config_file else {}
    if preset is None:
        mode = (overrides or {}).get("mode", from_file.get("mode"))
        preset = mode if mode in ("finetune", "head") else "default"
    if preset not in PRESETS:
        raise BinwiseError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if from_file:
        config = TrainConfig.from_dict(from_file, config, source=str(config_file))
    if overrides:
        config = TrainConfig.from_dict(nest(overrides), config, source="command line")
    return config.validate()


def save_config(config: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))

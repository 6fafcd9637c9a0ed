"""``binwise train``: a MobileNetV2 classifier from pretrained weights and an ImageFolder dataset.

Two modes share one epoch loop (``fit``):

- ``head``: the backbone is frozen, so each photo's pooled feature is computed once (and cached
  across runs, see ``features``) and the classifier trains on those features for many epochs in
  seconds;
- ``finetune``: photos are decoded and augmented every step and gradients flow into the last
  ``trainable_blocks`` backbone blocks (all by default; 0 is the tutorial's frozen backbone,
  recomputed at every step). With ``warm_start_head`` the head is first trained as in head mode,
  on cached features ("linear probe, then fine-tune"); ``batchnorm: frozen`` keeps BN in eval mode.

With ``val_fraction`` > 0 a seeded, stratified part of train is held out and monitored; with
``retrain_on_all`` the final model is then trained again, same settings, on all of train. The
test split is only ever used for the final report.

A run directory holds ``config.yaml``, ``log.csv`` (one row per epoch), ``metrics.json``,
``model.safetensors``, ``curves.png``, ``confusion.png`` and, per phase, ``checkpoints/``:
safetensors files written atomically each epoch (and on Ctrl-C), from which ``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import distributed, evaluate, features as feats
from .config import TrainConfig, save_config, warm_start_config
from .data import (Dataset, PhotoDataset, Sample, load_dataset, photo_loader, seeded_rng, seeded_view,
                   single_view, stratified_split, train_transform, warn_skipped)
from .errors import BinwiseError
from .gpu_data import BatchAugment, DeviceImages, fits_on_device
from .model import MobileNetV2, MobileNetV2Config
from .modelfile import ModelFile, atomic_write, save_model, sha256_of_file
from .taxonomy import Taxonomy

CHECKPOINT_KEY = "binwise_checkpoint"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_pretrained(path: Path) -> ModelFile:
    """Any weights file binwise can import (TFLite, MindSpore, torchvision, binwise)."""
    from .weights import import_weights

    return import_weights(path)


def build_model(pretrained: ModelFile, taxonomy: Taxonomy, dropout: float) -> MobileNetV2:
    """The pretrained backbone under a fresh head with one output per class."""
    base = pretrained.model.config.to_dict()
    model = MobileNetV2(MobileNetV2Config.from_dict({**base, "num_classes": taxonomy.num_classes,
                                                     "dropout": dropout, "activation": None}))
    model.backbone.load_state_dict(pretrained.model.backbone.state_dict())
    return model


def freeze_backbone_except_last(model: MobileNetV2, trainable_blocks: int | None) -> None:
    """Freeze all but the last ``trainable_blocks`` feature blocks (None: train everything)."""
    blocks = list(model.backbone.features)
    n = len(blocks) if trainable_blocks is None else min(trainable_blocks, len(blocks))
    for i, block in enumerate(blocks):
        block.requires_grad_(i >= len(blocks) - n)


def frozen_prefix(model: MobileNetV2) -> int:
    """How many leading feature blocks have no trainable parameter."""
    count = 0
    for block in model.backbone.features:
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


# ---------------------------------------------------------------------------- the epoch loop


@dataclass
class Phase:
    """One training run of ``module``: its batches, where it checkpoints, what it reports."""

    name: str
    module: nn.Module  # what the optimiser trains (and what checkpoints hold)
    forward: Callable[[torch.Tensor], torch.Tensor]  # inputs -> logits
    batches: Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # (epoch, first step)
    steps_per_epoch: int
    validate: Callable[[], dict] | None  # -> {"val_loss", "val_acc"}
    folder: Path
    train_mode: Callable[[], None]  # put the model in the mode training needs
    history: list[dict] = field(default_factory=list)


def make_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.schedule.lr_max, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def save_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> Path:
    """Trainable weights, momentum buffers and the loop state, in one atomically written file."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for i, param_state in optimizer.state_dict()["state"].items():
        for k, v in param_state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    path = folder / checkpoint_name(state)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={CHECKPOINT_KEY: json.dumps(state)}))
    return path


def checkpoint_name(state: dict) -> str:
    return f"ckpt-{state['global_step']:09d}.safetensors"  # names sort in training order


def latest_checkpoint(folder: Path) -> Path | None:
    files = sorted(folder.glob("ckpt-*.safetensors"))
    return files[-1] if files else None


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        state = json.loads(f.metadata()[CHECKPOINT_KEY])
    tensors = load_file(str(path))
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            optim_state["state"].setdefault(int(i), {})[name] = value
    optimizer.load_state_dict(optim_state)
    torch.set_rng_state(tensors["rng.torch"])
    return state


def prune_checkpoints(folder: Path, keep: int, best: str | None) -> None:
    files = sorted(folder.glob("ckpt-*.safetensors"))
    for f in files[:-keep]:
        if f.name != best:
            f.unlink()


def fit(phase: Phase, config: TrainConfig, progress: bool = True) -> list[dict]:
    """Train ``phase.module`` for ``config.epochs`` epochs, resuming from its latest checkpoint.

    Returns one dict per epoch (train loss/accuracy, lr, validation metrics, seconds).
    """
    from tqdm import tqdm

    optimizer = make_optimizer(phase.module, config)
    schedule = config.schedule.build(phase.steps_per_epoch, config.epochs)
    main = distributed.current().is_main  # only rank 0 writes checkpoints and reports progress
    state = {"phase": phase.name, "epoch": 0, "step_in_epoch": 0, "history": [], "best": None, "done": False}
    checkpoint = latest_checkpoint(phase.folder)
    distributed.require_same(checkpoint and checkpoint.name, "latest checkpoints")
    if checkpoint:
        state = load_checkpoint(checkpoint, phase.module, optimizer)
        if state["done"]:
            return state["history"]
        if main:
            print(f"resuming {phase.name} from {checkpoint}", file=sys.stderr)
    total = phase.steps_per_epoch * config.epochs
    bar = tqdm(total=total, initial=state["epoch"] * phase.steps_per_epoch + state["step_in_epoch"],
               desc=phase.name, unit="step", disable=not (progress and main), dynamic_ncols=True)
    loss_sum = correct = seen = 0
    epoch, start_step = state["epoch"], state["step_in_epoch"]
    step = start_step
    try:
        while epoch < config.epochs:
            started = time.perf_counter()
            phase.train_mode()
            loss_sum = correct = seen = 0
            step = start_step
            for inputs, labels in phase.batches(epoch, start_step):
                lr = schedule(epoch * phase.steps_per_epoch + step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # this rank's share of the mean loss over the global batch (0: all its photos unreadable)
                weight = distributed.loss_weight(len(labels), labels.device)
                if weight:
                    logits = phase.forward(inputs)
                    summed = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing,
                                             reduction="sum")
                    optimizer.zero_grad(set_to_none=True)
                    (summed * weight).backward()
                    optimizer.step()
                    seen += len(labels)
                    loss_sum += summed.item()
                    correct += (logits.argmax(1) == labels).sum().item()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(seen, 1):.3f}",
                                acc=f"{correct / max(seen, 1):.3f}", lr=f"{lr:.4g}", refresh=False)
            loss_sum, correct, seen = distributed.sum_over_ranks(loss_sum, correct, seen)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "lr": lr if seen else schedule(epoch * phase.steps_per_epoch)}
            if phase.validate:
                row.update(phase.validate())
            row["seconds"] = time.perf_counter() - started
            state["history"].append(row)
            epoch, start_step = epoch + 1, 0
            score = row.get("val_acc", -row["train_loss"])
            state.update(epoch=epoch, step_in_epoch=0, global_step=epoch * phase.steps_per_epoch,
                         done=epoch == config.epochs)
            if state["best"] is None or score >= state["best"][1]:
                state["best"] = [checkpoint_name(state), score]
            if main:
                save_checkpoint(phase.folder, phase.module, optimizer, state)
                prune_checkpoints(phase.folder, config.keep_checkpoints, state["best"][0])
    except KeyboardInterrupt:
        bar.close()
        state.update(epoch=epoch, step_in_epoch=step, global_step=epoch * phase.steps_per_epoch + step)
        if step > start_step and main:
            path = save_checkpoint(phase.folder, phase.module, optimizer, state)
            print(f"\ninterrupted: saved {path}; continue with --resume", file=sys.stderr)
        raise
    bar.close()
    return state["history"]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees the same batches as an uninterrupted one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


# ---------------------------------------------------------------------------- head mode


def head_phase(name: str, model: MobileNetV2, train_x: torch.Tensor, train_y: torch.Tensor,
               val: tuple[torch.Tensor, torch.Tensor] | None, config: TrainConfig, folder: Path,
               device: torch.device) -> Phase:
    """Train the head on cached features: every view of every photo is one example per epoch."""
    x = train_x.reshape(-1, train_x.shape[-1]).to(device)  # (N * V, C)
    y = train_y.repeat_interleave(train_x.shape[1]).to(device)
    steps = math.ceil(len(x) / config.batch_size)

    def batches(epoch: int, first: int):
        order = epoch_order(len(x), config.seed, epoch).to(device)
        for s in range(first, steps):
            idx = order[s * config.batch_size:(s + 1) * config.batch_size]
            yield x[idx], y[idx]

    def validate() -> dict:
        model.head.eval()
        with torch.inference_mode():
            logits = model.head(val[0].to(device))
        labels = val[1].to(device)
        return {"val_loss": F.cross_entropy(logits, labels).item(),
                "val_acc": (logits.argmax(1) == labels).float().mean().item()}

    return Phase(name, model.head, model.head, batches, steps, validate if val else None, folder,
                 train_mode=lambda: model.head.train())


def train_head(model: MobileNetV2, pre, dataset: Dataset, train: list[Sample], val: list[Sample],
               config: TrainConfig, run_dir: Path, cache_dir: Path | None, device: torch.device,
               progress: bool) -> dict:
    """Head mode: cached features, then ``fit`` on them. Returns the report's training part."""
    started = time.perf_counter()
    train_f = cached_features(model, pre, train + val, config, cache_dir, progress)
    test_f = cached_features(model, pre, dataset.test, replace(config, views=0), cache_dir, progress)
    feature_seconds = time.perf_counter() - started
    in_val = rows_of(train_f, val)

    phases = []
    if val:
        monitored = head_phase("head (train - val)", model, train_f.features[~in_val], train_f.labels[~in_val],
                               (train_f.features[in_val, 0], train_f.labels[in_val]), config,
                               run_dir / "checkpoints" / "monitored", device)
        phases.append(monitored)
    if not val or config.retrain_on_all:
        phases.append(head_phase("head (all train)", model, train_f.features, train_f.labels, None, config,
                                 run_dir / "checkpoints" / "final", device))
    histories = [fit_head(model, phase, config, progress) for phase in phases]
    model.head.eval()
    with torch.inference_mode():
        test_logits = model.head(test_f.features[:, 0].to(device)).float().cpu()
    return {
        "histories": histories,
        "phases": [p.name for p in phases],
        "test_logits": test_logits, "test_labels": test_f.labels, "test_samples": test_f.samples,
        "skipped": sorted(set(train_f.skipped + test_f.skipped)),
        "feature_seconds": feature_seconds,
        "features_computed": train_f.computed + test_f.computed,
        "features_reused": train_f.reused + test_f.reused,
    }


def cached_features(model: MobileNetV2, pre, samples: list[Sample], config: TrainConfig, cache_dir: Path | None,
                    progress: bool) -> feats.Features:
    """The pooled backbone features of ``samples`` (``config.views`` augmented views each), from the cache."""
    return feats.extract_features(model, pre, samples, views=config.views, seed=config.seed, cache_dir=cache_dir,
                                  batch_size=config.feature_batch_size, workers=config.workers,
                                  engine=config.engine, progress=progress)


def rows_of(features: feats.Features, samples: list[Sample]) -> torch.Tensor:
    """Which rows of ``features`` are photos of ``samples`` (a boolean mask)."""
    paths = {s.path for s in samples}
    return torch.tensor([s.path in paths for s in features.samples], dtype=torch.bool)


def fit_head(model: MobileNetV2, phase: Phase, config: TrainConfig, progress: bool) -> list[dict]:
    """``fit`` a head phase from the tutorial's head init."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a linear layer on small batches: extra threads only add sync cost
    try:
        torch.manual_seed(config.seed)
        reset_head(model)
        return fit(phase, config, progress)
    finally:
        torch.set_num_threads(threads)


def reset_head(model: MobileNetV2) -> None:
    """The tutorial's head init: N(0, 0.01) weights, zero bias."""
    nn.init.normal_(model.head.classifier.weight, 0, 0.01)
    nn.init.zeros_(model.head.classifier.bias)


# ---------------------------------------------------------------------------- finetune mode


def epoch_batches(n: int, config: TrainConfig, epoch: int, first: int) -> list[list[int]]:
    """This rank's part of each batch of ``epoch_order`` from step ``first`` on (resume mid-epoch)."""
    order = epoch_order(n, config.seed, epoch)[first * config.batch_size:]
    return [part.tolist() for part in distributed.rank_batches(order, config.batch_size, distributed.current())]


def finetune_phase(name: str, model: MobileNetV2, pre, train: list[Sample], val: list[Sample],
                   config: TrainConfig, folder: Path, device: torch.device, skipped: set[str]) -> Phase:
    cuda = device.type == "cuda"
    frozen = frozen_prefix(model)
    features = model.backbone.features
    trainable = distributed.wrap(nn.Sequential(features[frozen:], model.head), device)  # DDP when distributed

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last if cuda else torch.contiguous_format)
        with autocast():
            with torch.no_grad():  # the frozen prefix needs no graph
                x = features[:frozen](images)
            return trainable(x)

    if config.data_on_device == "yes" or (config.data_on_device == "auto" and fits_on_device(len(train), device)):
        # decoded once, kept on the device, augmented a whole batch at a time there
        stored = DeviceImages(train, device, threads=max(2, config.workers))
        skipped.update(stored.skipped)
        augment = BatchAugment(pre).to(device)
        steps = math.ceil(len(stored) / config.batch_size)

        def batches(epoch: int, first: int):
            parts = stored.batches(epoch_batches(len(stored), config, epoch, first))
            for step, (images, labels) in enumerate(parts, start=first):
                # random crops per (seed, epoch, step, rank): as on resume, whatever ran before
                with seeded_rng(config.seed, epoch, step, distributed.current().rank, device=device):
                    images = augment(images)
                yield images, labels
    else:
        steps = math.ceil(len(train) / config.batch_size)

        def batches(epoch: int, first: int):
            # each photo's augmentation depends on (seed, epoch, photo) only, not on rank or worker
            augmented = PhotoDataset(train, seeded_view(train_transform(pre), config.seed, epoch))
            loader = photo_loader(augmented, config.batch_size, config.workers,
                                  batches=epoch_batches(len(train), config, epoch, first), pin_memory=cuda)
            for batch in loader:
                skipped.update(batch.skipped)
                yield batch.images, batch.labels.to(device)

    def train_mode():
        model.train()
        for block in features[:frozen]:
            block.eval()  # frozen blocks keep their statistics
        if config.batchnorm == "frozen":
            freeze_batchnorm(model)

    def validate() -> dict:
        logits, labels, errors = evaluate.predict_logits(model, pre, val, config.feature_batch_size,
                                                          config.workers, device)
        skipped.update(errors)
        return {"val_loss": F.cross_entropy(logits, labels).item(),
                "val_acc": (logits.argmax(1) == labels).float().mean().item()}

    return Phase(name, model, forward, batches, steps, validate if val else None, folder, train_mode)


def freeze_batchnorm(model: nn.Module) -> None:
    """Every BN in eval mode: running statistics used and kept, gamma/beta still trainable."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def warm_start_head(name: str, model: MobileNetV2, features: feats.Features, train: list[Sample],
                    val: list[Sample], config: TrainConfig, folder: Path, device: torch.device,
                    progress: bool) -> list[dict]:
    """The linear probe of "linear probe, then fine-tune": train the head on cached features of the
    still-frozen backbone, as head mode does, so that fine-tuning starts from a good head."""
    head_config = warm_start_config(config)
    rows, val_rows = rows_of(features, train), rows_of(features, val)
    monitored = (features.features[val_rows, 0], features.labels[val_rows]) if val else None
    phase = head_phase(name, model, features.features[rows], features.labels[rows], monitored, head_config,
                       folder, device)
    return fit_head(model, phase, head_config, progress)


def prepare_batchnorm(model: MobileNetV2, pre, train: list[Sample], config: TrainConfig) -> None:
    """Give folded BN (imported inference weights) real statistics, so train-mode BN keeps the
    pretrained features (see ``weights.batchnorm``)."""
    from .weights.batchnorm import batchnorm_is_folded, unfold_batchnorm

    if frozen_prefix(model) == len(model.backbone.features) or not batchnorm_is_folded(model):
        return
    loader = photo_loader(PhotoDataset(train[::max(1, len(train) // 256)][:256], single_view(train_transform(pre))),
                          config.feature_batch_size, config.workers, seed=config.seed)
    unfold_batchnorm(model, (b.images for b in loader if len(b.labels)))


def train_finetune(model: MobileNetV2, pre, dataset: Dataset, train: list[Sample], val: list[Sample],
                   config: TrainConfig, run_dir: Path, cache_dir: Path | None, device: torch.device,
                   progress: bool) -> dict:
    skipped: set[str] = set()
    head_features = None
    if config.warm_start_head:  # computed (or read from the cache) by the pretrained backbone, once
        with distributed.main_first():
            head_features = cached_features(model, pre, train + val, warm_start_config(config), cache_dir, progress)
        skipped.update(head_features.skipped)
    freeze_backbone_except_last(model, config.trainable_blocks)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    plan = []
    if val:
        plan.append(("train - val", train, val, run_dir / "checkpoints" / "monitored"))
    if not val or config.retrain_on_all:
        plan.append(("all train", train + val, [], run_dir / "checkpoints" / "final"))
    phases, histories = [], []
    for split, fit_train, fit_val, folder in plan:
        model.load_state_dict(initial)
        torch.manual_seed(config.seed)
        reset_head(model)
        model.to(device)
        if head_features is not None:
            phases.append(f"head warm start ({split})")
            histories.append(warm_start_head(phases[-1], model, head_features, fit_train, fit_val, config,
                                             folder.with_name(folder.name + "-head"), device, progress))
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        prepare_batchnorm(model, pre, fit_train, config)
        phases.append(f"finetune ({split})")
        phase = finetune_phase(phases[-1], model, pre, fit_train, fit_val, config, folder, device, skipped)
        histories.append(fit(phase, config, progress))
    logits, labels, errors = evaluate.predict_logits(model, pre, dataset.test, config.feature_batch_size,
                                                      config.workers, device)
    skipped.update(errors)
    warn_skipped(sorted(skipped))
    return {"histories": histories, "phases": phases, "test_logits": logits,
            "test_labels": labels, "test_samples": None, "skipped": sorted(skipped)}


# ---------------------------------------------------------------------------- the run


def saved_run(run_dir: Path) -> tuple[TrainConfig, Path, Path, Path, Path | None]:
    """The (config, data, run_dir, pretrained, cache_dir) a run directory was trained with."""
    from .config import read_config_file

    if not (run_dir / "run.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise BinwiseError("not a binwise run directory (no run.json / config.yaml)", run_dir)
    sources = json.loads((run_dir / "run.json").read_text())
    config = TrainConfig.from_dict(read_config_file(run_dir / "config.yaml")).validate()
    cache_dir = Path(sources["cache_dir"]) if sources.get("cache_dir") else None
    return config, Path(sources["data"]), run_dir, Path(sources["pretrained"]), cache_dir


def write_log(path: Path, phases: list[str], histories: list[list[dict]]) -> None:
    rows = [{"phase": name, **row} for name, history in zip(phases, histories) for row in history]
    columns = ["phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def train(config: TrainConfig, data: Path, run_dir: Path, pretrained: Path, cache_dir: Path | None = None,
          progress: bool = True) -> dict:
    """Train per ``config`` and write the run directory; returns the metrics written to metrics.json.

    If ``run_dir`` holds checkpoints of an unfinished run with the same config, training resumes.
    Under torchrun (or ``distributed.launch``) each process trains its part of every batch and
    only rank 0 writes the run directory (see ``distributed``).
    """
    started = time.perf_counter()
    rank, device = distributed.join(pick_device(config.device))
    distributed.check_config(config, rank.world_size)
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        from .config import read_config_file
        if read_config_file(config_path) != json.loads(json.dumps(config.to_dict())):
            raise BinwiseError("run directory holds a run with a different config; use another --run-dir "
                               "or --resume it without changing settings", run_dir)
    distributed.barrier()  # every rank has read the old config before rank 0 writes the new one
    if rank.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, config_path)
        sources = {"data": str(data), "pretrained": str(pretrained), "cache_dir": str(cache_dir) if cache_dir else None}
        atomic_write(run_dir / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(sources, indent=2)))
    torch.manual_seed(config.seed)
    dataset = load_dataset(data)
    if not dataset.test:
        print(f"warning: {data} has no test/ folder; the report's test metrics are on the validation split",
              file=sys.stderr)
    base = load_pretrained(pretrained)
    pre = base.preprocessing
    model = build_model(base, dataset.taxonomy, config.dropout)
    train_samples, val_samples = (stratified_split(dataset.train, config.val_fraction, config.seed)
                                  if config.val_fraction > 0 else (dataset.train, []))
    if not dataset.test:
        dataset.test = val_samples
    if config.mode == "head":
        result = train_head(model, pre, dataset, train_samples, val_samples, config, run_dir, cache_dir,
                            device, progress)
    else:
        result = train_finetune(model, pre, dataset, train_samples, val_samples, config, run_dir, cache_dir,
                                device, progress)
    result["skipped"] = distributed.union_over_ranks(result["skipped"])
    model.cpu().eval()

    report = evaluate.classification_report(result["test_logits"], result["test_labels"], dataset.taxonomy)
    wall = time.perf_counter() - started
    metrics = {
        "test_top1": report["top1"], "test_top5": report["top5"], "test_bin_accuracy": report.get("bin_accuracy"),
        "test_photos": report["count"],
        # the last monitored phase: finetune mode's head warm start comes before its fine-tuning
        "final_val_acc": next((h[-1].get("val_acc") for h in reversed(result["histories"])
                               if h and "val_acc" in h[-1]), None),
        "unreadable_photos": result["skipped"],
        "wall_seconds": wall,
        **{k: result[k] for k in ("feature_seconds", "features_computed", "features_reused") if k in result},
    }
    provenance = {"pretrained": str(pretrained), "pretrained_sha256": sha256_of_file(pretrained),
                  "pretrained_provenance": base.provenance, "dataset": str(data), "mode": config.mode,
                  "config": config.to_dict(), "train_photos": len(dataset.train)}
    if not rank.is_main:
        return metrics
    save_model(run_dir / "model.safetensors", ModelFile(model, dataset.taxonomy, pre, provenance, metrics))
    write_log(run_dir / "log.csv", result["phases"], result["histories"])
    atomic_write(run_dir / "metrics.json", lambda tmp: Path(tmp).write_text(
        json.dumps({**metrics, "report": report}, indent=2, ensure_ascii=False)))
    from . import plots
    plots.training_curves(result["phases"], result["histories"], run_dir / "curves.png")
    plots.confusion(report, dataset.taxonomy, run_dir / "confusion.png")
    return metrics

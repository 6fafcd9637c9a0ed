"""What one training run is: its settings and where its inputs and outputs are, as one object.

The run directory keeps it (``config.yaml`` for the settings, ``run.json`` for the sources), so
``--resume`` rebuilds the same object. A new run input is one field here: ``run.json`` writes and
reads every field but the two it is stored as (``config``, ``run_dir``).
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from . import distributed
from ..errors import BinwiseError
from ..fileio import atomic_write
from .config import TrainConfig, read_config_file, save_config


@dataclass(frozen=True)
class RunSpec:
    config: TrainConfig
    data: Path  # the dataset (an ImageFolder tree or a flat folder)
    run_dir: Path  # where the run is written
    pretrained: Path  # the backbone weights
    cache_dir: Path | None = None  # feature / activation cache (None: the default)
    taxonomy: Path | None = None  # a taxonomy file (classes and bins, see ``taxonomy.files``)
    extra: tuple[Path, ...] = ()  # more training photos (``binwise feedback export``), train split only

    def sources(self) -> dict:
        """``run.json``: every field but the settings and the run directory, as text."""
        def text(value):
            if isinstance(value, tuple):
                return [str(v) for v in value]
            return None if value is None else str(value)
        return {f.name: text(getattr(self, f.name)) for f in fields(self) if f.name not in ("config", "run_dir")}

    def save(self) -> None:
        """Refuse a run directory of another config; write this run's config and sources (rank 0)."""
        config_path = self.run_dir / "config.yaml"
        if config_path.exists() and read_config_file(config_path) != json.loads(json.dumps(self.config.to_dict())):
            raise BinwiseError("run directory holds a run with a different config; use another --run-dir "
                               "or --resume it without changing settings", self.run_dir)
        distributed.barrier()  # every rank has read the old config before rank 0 writes the new one
        if distributed.current().is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, config_path)
            atomic_write(self.run_dir / "run.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(self.sources(), indent=2)))

    @classmethod
    def load(cls, run_dir: Path) -> "RunSpec":
        """The run a run directory was started with (for ``--resume``)."""
        if not (run_dir / "run.json").is_file() or not (run_dir / "config.yaml").is_file():
            raise BinwiseError("not a binwise run directory (no run.json / config.yaml)", run_dir)
        try:
            sources = json.loads((run_dir / "run.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BinwiseError(f"run.json is unreadable ({e})", run_dir) from None
        if not isinstance(sources, dict):
            raise BinwiseError("run.json does not name the run's data and pretrained weights", run_dir)
        values = {}
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in ("config", "run_dir"):
                continue
            value, kind = sources.get(f.name, f.default), hints[f.name]
            if kind is Path:  # required
                ok = isinstance(value, str)
            elif kind == tuple[Path, ...]:
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            else:  # Path | None
                ok = value is None or isinstance(value, str)
            if not ok:
                raise BinwiseError(f"run.json does not name the run's {f.name.replace('_', ' ')} as it should",
                                   run_dir)
            values[f.name] = (tuple(Path(v) for v in value) if kind == tuple[Path, ...]
                              else None if value is None else Path(value))
        config = TrainConfig.from_dict(read_config_file(run_dir / "config.yaml")).validate()
        return cls(config=config, run_dir=run_dir, **values)

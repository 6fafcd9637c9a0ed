"""``binwise rebin``: the same classifier under another region's bins, without retraining.

The weights and the classes (names, order) stay as they are, so every class probability is
unchanged; the class -> bin map and the bins (names, colours) come from the rules. Bin figures
measured under the old bins no longer apply and are dropped from the file's metrics; the
provenance records the change.
"""

from __future__ import annotations

from pathlib import Path

from .file import ModelFile, load_model, save_model
from ..taxonomy.files import read_taxonomy, rebinned


def rebin(model_path: str | Path, rules: str | Path, out: str | Path) -> ModelFile:
    model_file = load_model(model_path)
    rules_taxonomy, source = read_taxonomy(rules)
    taxonomy = rebinned(model_file.taxonomy, rules_taxonomy, str(rules))
    history = list(model_file.provenance.get("rebinned", []))
    history.append({"from": model_file.taxonomy.name, "to": taxonomy.name, "rules": str(rules), "source": source,
                    "bins_before": [b.id for b in model_file.taxonomy.bins]})
    metrics = {k: v for k, v in model_file.metrics.items() if "bin" not in k}
    result = ModelFile(model_file.model, taxonomy, model_file.preprocessing,
                       {**model_file.provenance, "rebinned": history}, metrics,
                       model_file.calibration, model_file.reference_features)
    save_model(out, result)
    return result

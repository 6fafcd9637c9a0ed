"""The tutorial's MINDIR: a binwise model as the MindSpore tutorial's network, exported by MindSpore.

binwise writes the model as a tutorial checkpoint (``weights.mindspore_ckpt.write_ckpt``), then runs
``mindir_worker.py`` in a Python with MindSpore, which builds the tutorial's network
(``mindspore_network``; TF 'SAME' padded models get ``pad_mode="same"`` convolutions, so they
export exactly), loads the checkpoint and exports MINDIR. MindSpore 2.10 needs numpy < 2 and
binwise's training install has numpy 2, so MindSpore runs in its own interpreter, found in this
order: ``mindspore_python``, ``$BINWISE_MINDSPORE_PYTHON``, this Python if it has MindSpore,
``.venv-mindspore`` beside the checkout (``scripts/setup-mindspore.sh``).

The MINDIR takes what the tutorial's network takes: float32 (batch, 3, H, W), already normalised
with the model's mean and std. binwise's JSON metadata (classes, bins, preprocessing) is in the
MINDIR's ``user_info["binwise"]``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import BinwiseError

MINDSPORE_PYTHON_ENV = "BINWISE_MINDSPORE_PYTHON"
WORKER = Path(__file__).with_name("mindir_worker.py")
EXPORT_TIMEOUT_SECONDS = 600  # MindSpore takes about 15 s for MobileNetV2 on 2 cores
INPUT_DESCRIPTION = "float32 (batch, 3, height, width), resized, centre-cropped and normalised with the preprocessing's mean and std"


def mindspore_python(given: str | os.PathLike | None = None) -> str:
    """The Python that runs MindSpore (see the module docstring for the order)."""
    if given or os.environ.get(MINDSPORE_PYTHON_ENV):
        python = Path(given or os.environ[MINDSPORE_PYTHON_ENV])
        if not python.is_file():
            raise BinwiseError("no such Python for MindSpore" + ("" if given else f" (from ${MINDSPORE_PYTHON_ENV})"),
                               python)
        return str(python)
    if importlib.util.find_spec("mindspore") is not None:
        return sys.executable
    beside_checkout = Path(__file__).resolve().parents[3] / ".venv-mindspore" / "bin" / "python"
    if beside_checkout.is_file():
        return str(beside_checkout)
    raise BinwiseError("the MINDIR export runs MindSpore, which is not installed here: run "
                       "scripts/setup-mindspore.sh (a .venv-mindspore beside the checkout), or point "
                       f"--mindspore-python or ${MINDSPORE_PYTHON_ENV} at a Python with mindspore and numpy < 2")


def export_mindir(model_path: str | os.PathLike, out: str | os.PathLike,
                  mindspore_interpreter: str | os.PathLike | None = None) -> Path:
    """Write ``model_path`` (a binwise .safetensors file) as the tutorial's MINDIR to ``out``."""
    from ..fileio import current_umask, sha256_of_file
    from ..model.file import load_model
    from ..weights.mindspore_ckpt import write_ckpt

    python = mindspore_python(mindspore_interpreter)
    model_file = load_model(model_path)
    config = model_file.model.config
    meta = model_file.metadata()
    meta["export"] = {"format": "mindir", "precision": "fp32", "input": INPUT_DESCRIPTION,
                      "source": f"{Path(model_path).name}@{sha256_of_file(model_path)[:12]}"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        # the network below pads as the model does, so a 'SAME' padded model needs no change
        write_ckpt(ckpt, model_file, allow_padding_change=True)
        job = {"ckpt": str(ckpt), "out": str(Path(tmp) / "model"), "num_classes": config.num_classes,
               "width_mult": config.width_mult, "pad_mode": "same" if config.padding == "tf_same" else "pad",
               "input_size": model_file.preprocessing.input_size,
               "metadata": json.dumps(meta, ensure_ascii=False)}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        try:
            result = subprocess.run([python, str(WORKER), str(Path(tmp) / "job.json")], capture_output=True,
                                    text=True, errors="replace", timeout=EXPORT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise BinwiseError(f"MindSpore did not finish the MINDIR export within {EXPORT_TIMEOUT_SECONDS} s",
                               model_path) from None
        written = Path(tmp) / "model.mindir"
        if result.returncode != 0 or not written.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BinwiseError(f"MindSpore could not export the MINDIR ({python} exited {result.returncode}: {last})",
                               model_path)
        os.chmod(written, 0o666 & ~current_umask())  # MindSpore writes it read-only for its owner alone
        os.replace(written, out)  # same folder: atomic
    return out

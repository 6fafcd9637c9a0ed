"""Build the tutorial's network in MindSpore, load a checkpoint into it and export it as MINDIR.

    python mindir_worker.py JOB.json

Run by ``binwise.export.mindir_file`` in a Python that has MindSpore (which needs numpy < 2, so it
usually lives in its own venv). It imports nothing of binwise's package: only MindSpore, numpy and
``mindspore_network`` beside it. JOB: ckpt, out (a file name without .mindir), num_classes,
width_mult, pad_mode, input_size, metadata (a JSON string stored in the MINDIR's user_info).
"""

import json
import sys
from pathlib import Path

import mindspore as ms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mindspore_network import tutorial_network  # noqa: E402


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    net = tutorial_network(job["num_classes"], job["width_mult"], job["pad_mode"])
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(job["ckpt"]), strict_load=True)
    if not_loaded:
        sys.exit(f"parameters not loaded: {not_loaded}")
    net.set_train(False)
    size = job["input_size"]

    def add_metadata(model_proto):
        model_proto.user_info["binwise"] = job["metadata"]

    # a dynamic batch dimension, as the ONNX export has
    inputs = ms.Tensor(shape=[None, 3, size, size], dtype=ms.float32)
    ms.export(net, inputs, file_name=job["out"], file_format="MINDIR", custom_func=add_metadata)


if __name__ == "__main__":
    ms.set_device("CPU")
    main(sys.argv[1])

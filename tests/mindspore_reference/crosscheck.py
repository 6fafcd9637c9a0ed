"""Run the tutorial's network in MindSpore for tests/test_weights_mindspore.py.

    python crosscheck.py JOBS.json

Each job builds the network (num_classes, width_mult, pad_mode) and then either
- "load": loads a .ckpt with load_checkpoint + load_param_into_net (every parameter must load), or
- "save": fills it with random weights and batch-norm statistics and saves it as a training
  checkpoint would be saved (optimizer state included, with a CRC trailer), or
- "mindir": instead loads the exported MINDIR in "mindir" (mindspore.load + GraphCell) and also
  writes its user_info to "user_info" (JSON);
and in every case writes its logits for the images in "input" (N, 3, H, W float32 .npy) to "logits".
PYNATIVE mode: compiling a graph would take longer than the few forward passes here.
"""

import json
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

# the network lives in the package, beside the MINDIR export that builds it
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src" / "binwise" / "export"))
from mindspore_network import tutorial_network  # noqa: E402


def randomize(net, seed):
    """Random weights from MindSpore's initialisers plus non-trivial batch-norm parameters."""
    rng = np.random.default_rng(seed)
    ranges = {"moving_mean": (-0.5, 0.5), "moving_variance": (0.5, 2.0), "gamma": (0.5, 1.5),
              "beta": (-0.5, 0.5), "bias": (-0.5, 0.5)}
    for param in net.get_parameters():
        low_high = ranges.get(param.name.rsplit(".", 1)[-1])
        if low_high:
            param.set_data(ms.Tensor(rng.uniform(*low_high, param.shape).astype(np.float32)))


def run(job):
    if job["action"] == "mindir":
        logits = nn.GraphCell(ms.load(job["mindir"]))(ms.Tensor(np.load(job["input"]))).asnumpy()
        np.save(job["logits"], logits)
        Path(job["user_info"]).write_text(json.dumps(dict(ms.load_mindir(job["mindir"]).user_info)))
        return
    net = tutorial_network(job["num_classes"], job.get("width_mult", 1.0), job.get("pad_mode", "pad"))
    if job["action"] == "load":
        not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(job["ckpt"]), strict_load=True)
        if not_loaded:
            sys.exit(f"parameters not loaded from {job['ckpt']}: {not_loaded}")
    else:
        randomize(net, job.get("seed", 0))
        optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
        loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        train_step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), optimizer)
        ms.save_checkpoint(train_step, job["ckpt"], crc_check=True)
    net.set_train(False)
    logits = net(ms.Tensor(np.load(job["input"]))).asnumpy()
    np.save(job["logits"], logits)


if __name__ == "__main__":
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run(job)

"""Data-parallel fine-tuning (``binwise train --devices N``), run here with 2 CPU processes (gloo)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from binwise.training import distributed
from binwise.cli import main
from binwise.training.config import TUTORIAL, save_config

from test_data import make_tree
from test_train import pretrained  # noqa: F401  (the tiny pretrained model fixture)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 7 photos per class, 2 held out: 15 to train on, so batches of 4 end with a short one of 3,
    # which 2 processes split 2 + 1
    return make_tree(tmp_path_factory.mktemp("data"), per_class=7, test_per_class=2)


def cli(data, run_dir, weights, *flags):
    """``binwise train`` for 2 epochs. The backbone is frozen (trainable_blocks=0), so no BatchNorm
    layer trains: in training mode each process would normalise by its own part of the batch (on
    CPU, without SyncBatchNorm), and one and two processes could not agree."""
    args = ["train", str(data), "--pretrained", str(weights), "--run-dir", str(run_dir), "--preset", "tutorial",
            "--quiet"]
    for name, value in (("epochs", 2), ("batch-size", 4), ("trainable-blocks", 0), ("val-fraction", 0.25),
                        ("retrain-on-all", "false"), ("keep-checkpoints", 5), ("lr-max", 0.05)):
        args += [f"--{name}", str(value)]
    return main(args + list(flags))


def files(run_dir):
    """The run's files, a TensorBoard event file by its folder (its name has a time and a process id)."""
    names = (str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return sorted(name.split("/events.out.tfevents.")[0] + "/events" if "/events.out.tfevents." in name else name
                  for name in names)


@pytest.fixture(scope="module")
def one_process(pretrained, data, tmp_path_factory):  # noqa: F811
    """The run directory of a one-process run, to compare with."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the 2 processes has (on a busy 2-core machine, also 20x faster)
    try:
        assert cli(data, run_dir, pretrained, "--workers", "0") == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def assert_same_weights(run_dir, reference):
    """Same photos, crops and global batches; only the float32 rounding differs (two half-batch
    gradients averaged instead of one batch's, summed in another order): measured 2e-7 at most.
    Averaging each process's mean loss (DDP's usual recipe) instead of taking the mean over the
    global batch changes the weights by up to 8e-3 here (the short last batch splits 2 + 1)."""
    expected, got = load_file(reference / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_train_the_same_model_as_one(pretrained, data, one_process, tmp_path):  # noqa: F811
    run_dir = tmp_path / "two"
    # each process decodes with a DataLoader worker: augmentation depends on neither
    assert cli(data, run_dir, pretrained, "--workers", "1", "--devices", "2") == 0
    assert_same_weights(run_dir, one_process)
    checkpoints = sorted((run_dir / "checkpoints" / "monitored").glob("ckpt-*.safetensors"))
    after_one_epoch = load_file(checkpoints[0])["model.head.classifier.weight"]
    final = load_file(run_dir / "model.safetensors")["head.classifier.weight"]
    assert (final - after_one_epoch).abs().max() > 1e-2  # the second epoch trained
    # rank 0 alone wrote: the same files as the one-process run, nothing per rank, no leftovers
    assert files(run_dir) == files(one_process)
    assert len((run_dir / "log.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow  # starts 2 processes (10-30 s on a busy 2-core machine)
def test_two_processes_resume_a_run(one_process, tmp_path, capfd):
    run_dir = tmp_path / "run"
    shutil.copytree(one_process, run_dir)
    # as if killed during the second epoch: its checkpoint and the final files were never written
    checkpoints = sorted((run_dir / "checkpoints" / "monitored").glob("ckpt-*.safetensors"))
    assert len(checkpoints) == 2
    for f in [checkpoints[-1], run_dir / "model.safetensors", run_dir / "metrics.json"]:
        f.unlink()
    assert main(["train", "--resume", str(run_dir), "--devices", "2", "--quiet"]) == 0
    assert capfd.readouterr().err.count("resuming") == 1  # both ranks resumed, rank 0 said so
    assert_same_weights(run_dir, one_process)
    assert files(run_dir) == files(one_process)


def test_settings_that_cannot_run_data_parallel_are_refused_before_starting(pretrained, data, tmp_path,  # noqa: F811
                                                                            capfd):
    assert cli(data, tmp_path / "a", pretrained, "--mode", "head", "--devices", "2") == 2
    assert "head mode" in capfd.readouterr().err
    assert cli(data, tmp_path / "b", pretrained, "--batch-size", "5", "--devices", "2") == 2
    assert "divide evenly" in capfd.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow  # starts 2 processes (10-30 s on a busy 2-core machine) to test error reporting
def test_a_failing_process_stops_the_run_with_its_error(pretrained, data, tmp_path, capfd):  # noqa: F811
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(TUTORIAL, run_dir / "config.yaml")  # another run's config
    assert cli(data, run_dir, pretrained, "--devices", "2") == 2
    assert "different config" in capfd.readouterr().err


def test_rank_batches_split_each_global_batch_in_order():
    order = torch.randperm(11)
    parts = [distributed.rank_batches(order, 4, distributed.Rank(r, 3)) for r in range(3)]
    assert [[len(p) for p in rank] for rank in parts] == [[2, 2, 1], [1, 1, 1], [1, 1, 1]]
    for k, batch in enumerate(order.split(4)):
        assert torch.cat([rank[k] for rank in parts]).tolist() == batch.tolist()


def test_one_process_is_not_distributed(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    rank, device = distributed.join(torch.device("cpu"))
    assert rank == distributed.Rank() and not torch.distributed.is_initialized()
    assert distributed.wrap(torch.nn.Linear(2, 2), device).__class__ is torch.nn.Linear


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_fine_tune_with_synchronised_batchnorm(pretrained, data, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    # the last 2 blocks train, their BatchNorm layers as SyncBatchNorm over NCCL
    assert cli(data, run_dir, pretrained, "--trainable-blocks", "2", "--device", "cuda", "--devices", "2") == 0
    before, after = load_file(pretrained), load_file(run_dir / "model.safetensors")
    changed = {k for k in before if k.startswith("backbone.") and not torch.equal(before[k], after[k])}
    assert any(k.endswith("running_mean") for k in changed) and all(torch.isfinite(v).all() for v in after.values())

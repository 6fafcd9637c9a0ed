"""Batch norm of imported weights: giving folded BN its statistics back before fine-tuning.

Weights exported for inference (TFLite, and any converter that folds batch norm) come with each
BN already folded into its convolution: ``y = W*x + b``. binwise loads them into its Conv + BN
layers as ``gamma = 1, beta = b, running_mean = 0, running_var = 1 - eps``, which reproduces
``W*x + b`` exactly in eval mode. Such a BN holds no real statistics, though: in train mode it
normalises each channel by the statistics of the current batch, so every conv output gets mean
``b`` and variance 1 whatever the pretrained scale was, and the pretrained features are lost at
the first training step.

``unfold_batchnorm`` puts the statistics back. It runs a few batches of real images through the
model in eval mode (exactly the pretrained function), measures the mean ``mu`` and variance
``var`` of every conv's output per channel, and sets

    running_mean = mu, running_var = var, gamma = sqrt(var + eps), beta = b + mu

so that eval mode still computes ``gamma * (z - mu) / sqrt(var + eps) + beta = z + b`` (unchanged)
and train mode, which uses batch statistics close to ``mu`` and ``var`` on similar images,
computes nearly the same. Fine-tuning then starts from the pretrained features and BN keeps
adapting its statistics to the new data as usual.

The alternative is to keep every BN frozen in eval mode while fine-tuning (statistics never
updated, gamma/beta trainable or not). That also preserves the features, but then BN never adapts
to the new data and the training loop must remember to re-freeze BN after every ``model.train()``;
un-folding leaves an ordinary model that trains like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """Every batch norm with the convolution feeding it, as (conv name, conv, BN name, BN).

    In binwise's MobileNetV2 each BN is defined right after its conv, so definition order pairs them.
    """
    pairs = []
    last_conv: tuple[str, nn.Conv2d] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last_conv = (name, module)
        elif isinstance(module, nn.BatchNorm2d):
            if last_conv is None or last_conv[1].out_channels != module.num_features:
                raise ValueError(f"batch norm {name} does not follow a convolution of {module.num_features} channels")
            pairs.append((*last_conv, name, module))
            last_conv = None
    return pairs


def batchnorm_is_folded(model: nn.Module) -> bool:
    """True if every BN still holds the placeholder statistics of folded weights (mean 0, var 1 - eps),
    i.e. training in train mode would discard the pretrained features until ``unfold_batchnorm``."""
    norms = [bn for _, _, _, bn in conv_bn_pairs(model)]
    return bool(norms) and all(
        torch.count_nonzero(bn.running_mean) == 0
        and torch.allclose(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps), rtol=0, atol=1e-7)
        for bn in norms)


@torch.no_grad()
def unfold_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Give every BN the statistics of its conv's output on ``batches`` (N, C, H, W image tensors,
    preprocessed as the model expects), keeping the eval-mode function unchanged.

    Each BN must currently act as a plain bias (``running_var == 1 - eps``, ``running_mean == 0``,
    ``gamma == 1``), as after importing folded weights; anything else is refused, since its
    statistics would be overwritten.
    """
    pairs = conv_bn_pairs(model)
    if not batchnorm_is_folded(model) or any(not torch.all(bn.weight == 1) for *_, bn in pairs):
        raise ValueError("unfold_batchnorm needs folded batch norm (gamma 1, mean 0, var 1 - eps)")
    device = next(model.parameters()).device
    # per batch and conv: (values per channel, mean, variance), combined exactly at the end
    batch_stats: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {name: [] for name, *_ in pairs}

    def record(name):
        def hook(_module, _inputs, output):
            var, mean = torch.var_mean(output.detach(), dim=(0, 2, 3), unbiased=False)
            batch_stats[name].append((output.numel() // output.shape[1], mean.double(), var.double()))
        return hook

    was_training = model.training
    handles = [conv.register_forward_hook(record(name)) for name, conv, _, _ in pairs]
    try:
        model.eval()
        for batch in batches:
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not batch_stats[pairs[0][0]]:
        raise ValueError("unfold_batchnorm needs at least one batch of images")

    for name, _, _, bn in pairs:
        counts, means, variances = zip(*batch_stats[name])
        weights = torch.tensor(counts, dtype=torch.float64, device=device)[:, None] / sum(counts)
        means, variances = torch.stack(means), torch.stack(variances)
        mean = (weights * means).sum(0)
        # biased variance (what train-mode BN divides by), from per-batch variances and mean offsets
        var = (weights * (variances + (means - mean).square())).sum(0)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(bn.bias.double() + mean)

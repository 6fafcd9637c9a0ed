"""MindSpore .ckpt files, read and written without MindSpore.

A .ckpt is a sequence of protobuf ``Checkpoint`` messages, one per tensor (or per 512 MB slice of
a larger tensor), written back to back so that together they parse as one message; MindSpore's
``save_checkpoint(..., crc_check=True)`` appends ``b"crc_num"`` and a 10-byte big-endian CRC32 of
everything before it. The schema, as MindSpore 2.10's ``checkpoint.proto`` defines it (proto2):

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;
      required string tensor_type = 2;  // "Float32", "Float16", "Int32", ...
      required bytes tensor_content = 3;  // row-major, little-endian
    }

Parameter names are those of the tutorial's network (backbone and head combined without a prefix):
``features.N.features.{0,1}.*`` for a ConvBNReLU (its SequentialCell is called ``features``),
``features.N.conv.I...`` inside an inverted residual, batch norm as ``gamma``, ``beta``,
``moving_mean``, ``moving_variance``, and the classifier ``head.1.weight`` / ``head.1.bias``
(index 0 is the global average pooling). Checkpoints saved from other wrappings of the same
network add a prefix (``backbone.``, ``head.head.1.weight``) and carry optimizer state
(``moments.*``, ``learning_rate``, ``global_step``, ...); reading accepts both.
"""

from __future__ import annotations

import binascii
import os
import re
from functools import cache
from pathlib import Path

from ..errors import BinwiseError

# The classifier's name in the tutorial's head: SequentialCell([GlobalAvgPooling(), Dense]).
HEAD_DENSE = "head.1"
BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
# MindSpore splits a tensor over 512 MB into several messages.
SLICE_BYTES = 512 << 20
CRC_MARK = b"crc_num"
CRC_TRAILER_LEN = len(CRC_MARK) + 10
# Far above any MobileNetV2 checkpoint (about 30 MB with optimizer state); refuses absurd files
# before reading them into memory.
MAX_FILE_BYTES = 1 << 30

_CHECKPOINT_PROTO = """
name: "binwise_mindspore_checkpoint.proto"
syntax: "proto2"
message_type {
  name: "Checkpoint"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".Checkpoint.Value" }
  nested_type {
    name: "Value"
    field { name: "tag" number: 1 label: LABEL_REQUIRED type: TYPE_STRING }
    field { name: "tensor" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".TensorProto" }
  }
}
message_type {
  name: "TensorProto"
  field { name: "dims" number: 1 label: LABEL_REPEATED type: TYPE_INT64 }
  field { name: "tensor_type" number: 2 label: LABEL_REQUIRED type: TYPE_STRING }
  field { name: "tensor_content" number: 3 label: LABEL_REQUIRED type: TYPE_BYTES }
}
"""


@cache
def _checkpoint_class():
    """The Checkpoint message class, built from the schema above in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_CHECKPOINT_PROTO, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint"))


@cache
def _tensor_types() -> dict:
    """MindSpore's tensor_type string for each torch dtype it shares with binwise."""
    import torch

    return {torch.float16: "Float16", torch.bfloat16: "BFloat16", torch.float32: "Float32",
            torch.float64: "Float64", torch.int8: "Int8", torch.uint8: "UInt8", torch.int16: "Int16",
            torch.int32: "Int32", torch.int64: "Int64", torch.bool: "Bool"}


def encode_checkpoint(tensors: dict, slice_bytes: int = SLICE_BYTES) -> bytes:
    """The .ckpt bytes for ``{name: tensor}`` as MindSpore writes them: one Checkpoint message per
    tensor; a tensor over ``slice_bytes`` is split along its first axis into several, each of which
    carries the full dims."""
    import torch

    checkpoint = _checkpoint_class()
    chunks = []
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        pieces = [tensor] if tensor.dim() == 0 or nbytes <= slice_bytes else \
            torch.tensor_split(tensor, -(-nbytes // slice_bytes))
        for piece in pieces:
            message = checkpoint()
            value = message.value.add()
            value.tag = name
            value.tensor.dims.extend(tensor.shape)
            value.tensor.tensor_type = _tensor_types()[tensor.dtype]
            # through uint8, because numpy has no bfloat16
            value.tensor.tensor_content = piece.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            chunks.append(message.SerializeToString())
    return b"".join(chunks)


def decode_checkpoint(data: bytes, path: str | os.PathLike) -> dict[str, tuple[str, list[int], bytes]]:
    """``{tag: (tensor_type, dims, content)}``, slices of one tag joined, the CRC checked if present."""
    from google.protobuf.message import DecodeError

    if data[-CRC_TRAILER_LEN:-10] == CRC_MARK:
        data, crc = data[:-CRC_TRAILER_LEN], int.from_bytes(data[-10:], "big")
        if binascii.crc32(data) != crc:
            raise BinwiseError("MindSpore checkpoint is damaged: its CRC32 does not match", path)
    message = _checkpoint_class()()
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise BinwiseError(f"not a MindSpore checkpoint, or a truncated one (protobuf: {e})", path) from None
    if not message.IsInitialized():  # the parser does not enforce proto2's required fields
        missing = message.FindInitializationErrors()
        raise BinwiseError(f"not a MindSpore checkpoint: {len(missing)} required fields are missing "
                           f"(first: {missing[0]})", path)
    entries: dict[str, tuple[str, list[int], bytes]] = {}
    for value in message.value:
        if not value.HasField("tensor"):
            entries[value.tag] = ("", [], b"")  # a map tensor (embedding tables): never a MobileNetV2 weight
            continue
        tensor = value.tensor
        if value.tag in entries:  # a tensor over 512 MB comes in slices along its first axis
            kind, dims, content = entries[value.tag]
            entries[value.tag] = (kind, dims, content + tensor.tensor_content)
        else:
            entries[value.tag] = (tensor.tensor_type, list(tensor.dims), tensor.tensor_content)
    return entries


def mindspore_names(model) -> dict[str, str]:
    """Each binwise state-dict name -> the name of that parameter in the tutorial's network."""
    from torch import nn

    from ..model.network import ConvBNReLU

    names = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue  # num_batches_tracked: MindSpore's batch norm keeps no counter
        module_path, leaf = key.rsplit(".", 1)
        if module_path == "head.classifier":
            names[key] = f"{HEAD_DENSE}.{leaf}"
            continue
        # backbone.features.3.conv.1.0 -> features.3.conv.1.features.0
        module, parts = model.backbone, []
        for part in module_path.split(".")[1:]:
            module = module.get_submodule(part)
            parts.append(part)
            if isinstance(module, ConvBNReLU):
                parts.append("features")
        if isinstance(module, nn.BatchNorm2d):
            leaf = BN_LEAVES[leaf]
        names[key] = ".".join(parts + [leaf])
    return names


@cache
def _backbone_names_to_binwise() -> dict[str, str]:
    """MindSpore backbone name -> binwise name; the names are the same at every width."""
    from ..model.network import MobileNetV2

    return {ms: bw for bw, ms in mindspore_names(MobileNetV2()).items() if not bw.startswith("head.")}


# A backbone parameter after any wrapper prefix ("backbone.", "network.backbone.", ...).
_BACKBONE_NAME = re.compile(r"(?:[A-Za-z_]\w*\.)*?(features\.\d+\..+)")
# A parameter of the head: a name with a "head" component, e.g. head.1.weight or head.head.1.weight.
_HEAD_NAME = re.compile(r"(?:\w+\.)*?head\.(.+)\.(weight|bias)")


def _network_parameters(entries: dict, path) -> dict[str, str]:
    """``{tag: binwise name}`` for the network's parameters; training state is left out."""
    to_binwise = _backbone_names_to_binwise()
    found: dict[str, str] = {}
    head_layers: set[str] = set()
    for tag in entries:
        slot, _, rest = tag.partition(".")
        # learning_rate, global_step, momentum, beta1_power, ...: scalars of the training loop.
        # moments.<parameter>, moment1.<parameter>, ...: an optimizer's slot for a parameter.
        if not rest or rest in entries:
            continue
        head = _HEAD_NAME.fullmatch(tag)
        backbone = _BACKBONE_NAME.fullmatch(tag)
        if head:
            head_layers.add(head.group(1))
            name = f"head.classifier.{head.group(2)}"
        elif backbone and backbone.group(1) in to_binwise:
            name = to_binwise[backbone.group(1)]
        else:
            raise BinwiseError(f"unknown parameter {tag!r}: not the MindSpore tutorial's MobileNetV2", path)
        if name in found.values():
            raise BinwiseError(f"parameter {tag!r} appears twice, with and without a prefix", path)
        found[tag] = name
    if len(head_layers) > 1:
        raise BinwiseError(f"more than one classifier layer in the head: {sorted(head_layers)}", path)
    missing = sorted(ms for ms, bw in to_binwise.items() if bw not in found.values())
    if missing:
        raise BinwiseError(f"{len(missing)} parameters of the tutorial's MobileNetV2 are missing "
                           f"(first: {missing[0]})", path)
    return found


def _to_tensor(tag: str, entry: tuple[str, list[int], bytes], path):
    """A parameter's float tensor, after checking its type and that its bytes fill its dims."""
    import torch

    kind, dims, content = entry
    dtype = next((d for d, name in _tensor_types().items() if name == kind and d.is_floating_point), None)
    if dtype is None:
        raise BinwiseError(f"parameter {tag!r} has type {kind or 'map tensor'!r}, expected floating point",
                           path)
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    if len(content) != expected or any(d < 0 for d in dims):
        raise BinwiseError(f"parameter {tag!r} holds {len(content)} bytes, but {kind} {tuple(dims)} "
                           f"needs {expected}", path)
    return torch.frombuffer(bytearray(content), dtype=dtype).reshape(dims) if content else \
        torch.zeros(dims, dtype=dtype)


def read_ckpt(path: str | os.PathLike, taxonomy=None):
    """A MindSpore MobileNetV2 checkpoint as a ModelFile (eval mode, symmetric padding, ImageNet
    preprocessing). Optimizer state is ignored; ``taxonomy`` names the classes (see choose_taxonomy)."""
    from .build import build_model_file

    path = Path(path)
    if not path.is_file():
        raise BinwiseError("no such checkpoint file", path)
    size = path.stat().st_size
    if size == 0:
        raise BinwiseError("empty file, not a MindSpore checkpoint", path)
    if size > MAX_FILE_BYTES:
        raise BinwiseError(f"{size} bytes is far too large for a MobileNetV2 checkpoint", path)
    entries = decode_checkpoint(path.read_bytes(), path)
    names = _network_parameters(entries, path)
    tensors = {bw: _to_tensor(tag, entries[tag], path) for tag, bw in names.items()}
    return build_model_file(tensors, path, taxonomy, "mindspore-ckpt")


def write_ckpt(path: str | os.PathLike, model_file, allow_padding_change: bool = False) -> None:
    """Save a binwise model (a ModelFile, or the path of a model file) as a .ckpt that the tutorial's
    code loads (``load_checkpoint`` + ``load_param_into_net`` on its MobileNetV2), atomically.

    The tutorial's network pads its convolutions symmetrically; a model using TensorFlow 'SAME'
    padding (TFLite imports) computes very different outputs there, so it is refused unless
    ``allow_padding_change`` says that is understood (the same file in a MindSpore network whose
    convolutions use ``pad_mode="same"`` computes binwise's outputs: tests/test_weights_mindspore.py).
    """
    from ..model.file import ModelFile, load_model
    from ..fileio import atomic_write

    if not isinstance(model_file, ModelFile):
        model_file = load_model(model_file)
    config = model_file.model.config
    if config.padding != "symmetric" and not allow_padding_change:
        raise BinwiseError(f"this model uses {config.padding!r} padding but the MindSpore tutorial's "
                           "network pads symmetrically, so it would compute different outputs there (a "
                           "network whose convolutions use pad_mode='same' computes the same)", path)
    state = model_file.model.state_dict()
    data = encode_checkpoint({ms: state[bw] for bw, ms in mindspore_names(model_file.model).items()})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

"""A TFLite flatbuffer as ai-edge-litert's schema objects (``ModelT``), to change and write back."""

from __future__ import annotations

import numpy as np


def unpacked(flatbuffer: bytes):
    """``flatbuffer`` as a ``ModelT`` with every buffer's data inline. ai-edge-quantizer stores
    constant data after the flatbuffer, at offsets counted from the file's start, which repacking
    would leave pointing at the wrong bytes."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(flatbuffer, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    return model


def packed(model, size_hint: int) -> bytes:
    """``model`` (a ``ModelT``) as a TFLite flatbuffer; ``size_hint``: about how many bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

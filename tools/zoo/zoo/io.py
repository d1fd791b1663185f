"""File writers: safetensors (by hand, deterministic) and .npy."""

import io
import json
import struct

import numpy as np

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def safetensors_bytes(tensors):
    """The safetensors encoding of an ordered {name: array}: u64 header length, JSON header (keys in
    insertion order, padded with spaces to 8 bytes), then the little-endian data back to back."""
    header, chunks, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()

"""Minimal safetensors reader/writer over numpy (the format is an 8-byte
little-endian header length, a JSON header, then the raw tensor bytes)."""
import json
import struct

import numpy as np

DTYPES = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
NP_TYPES = {v: k for k, v in DTYPES.items()}


def save(path, tensors, metadata=None):
    header = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name]).astype(tensors[name].dtype.newbyteorder("<")).tobytes())


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=NP_TYPES[info["dtype"]]).reshape(info["shape"])
    return out

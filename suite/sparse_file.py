"""The compressed sparse weights file: a bitmask plus the non-zero values for each sparse tensor.

Layout (a NumPy `.npz`, i.e. a zip of `.npy` entries, deflate-compressed):
  `header`      UTF-8 JSON as a uint8 array: format name and version, the metadata the writer passes
                (model, input size, ...), and per tensor its name, shape, dtype, encoding, non-zero
                count and sparsity; a SHA-256 over every restored tensor (names, dtypes, shapes, bytes).
  `t<i>.bits`   tensor i's non-zero pattern, 1 bit per element in C order (np.packbits, big bit order);
  `t<i>.values` its non-zero elements in C order, little-endian, as byte planes: a uint8 array
                [itemsize, count] whose row j holds byte j of every value (the "shuffle" of blosc
                and HDF5: exponent bytes sit together and deflate well, about 10% smaller);
  `t<i>.dense`  the whole tensor (dense encoding).
A tensor is stored as bitmask + values whenever that is smaller than dense: every pruned tensor (for
float32, any tensor more than 1/32 zero), never a dense one.

Why `.npz`: it holds no code (read with allow_pickle=False, nothing in it is ever called), it needs
nothing but NumPy to read on a deployment host, zip gives each entry a CRC, and deflate squeezes the
bitmasks further. "Non-zero" is by bits, so -0.0 is kept as a value and the round trip is bit-exact.
"""
import hashlib
import json
import os
import zipfile
import zlib

import numpy as np

from suite.errors import CheckpointError

FORMAT = "paddle-sparse-weights"
VERSION = 1
SUFFIX = ".sparse.npz"


def _nonzero_bits(array):
    """True where an element's bit pattern is not all zero (so -0.0 counts as a value)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(f"u{flat.dtype.itemsize}") != 0


def _byte_planes(values):
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little.view(np.uint8).reshape(-1, values.dtype.itemsize).T)


def _from_byte_planes(planes, dtype):
    return np.ascontiguousarray(planes.T).view(dtype.newbyteorder("<")).reshape(-1).astype(dtype)


def _digest(tensors):
    digest = hashlib.sha256()
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def encode(tensors, metadata=None):
    """{entry: array} for np.savez: each tensor as bitmask + values when that is smaller, else dense."""
    entries, described = {}, []
    for i, (name, array) in enumerate(tensors.items()):
        array = np.asarray(array)
        nonzero = _nonzero_bits(array)
        count = int(nonzero.sum())
        row = {"name": name, "shape": list(array.shape), "dtype": array.dtype.str, "nonzeros": count,
               "sparsity": 1.0 - count / array.size if array.size else 0.0}
        if (array.size + 7) // 8 + count * array.itemsize < array.nbytes:
            row["encoding"] = "bitmask"
            entries[f"t{i}.bits"] = np.packbits(nonzero)
            entries[f"t{i}.values"] = _byte_planes(np.ascontiguousarray(array).reshape(-1)[nonzero])
        else:
            row["encoding"] = "dense"
            entries[f"t{i}.dense"] = array
        described.append(row)
    header = {"format": FORMAT, "version": VERSION, "metadata": metadata or {}, "tensors": described, "sha256": _digest(tensors)}
    entries["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    return entries


def write(path, tensors, metadata=None):
    """Write the file at `path` (through a temporary file and a rename); returns its size in bytes."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **encode(tensors, metadata))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return os.path.getsize(path)


def read(path):
    """(tensors {name: array}, metadata) from a sparse weights file; every inconsistency is a CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path} is not a readable sparse weights file ({exc}); export it again") from exc
    try:
        header = json.loads(entries.pop("header").tobytes())
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} has no valid header: it is not a {FORMAT} file (written by export.py --format sparse)") from exc
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path} is {header.get('format')!r} version {header.get('version')!r}; this suite reads {FORMAT} version {VERSION}")
    tensors = {}
    for i, row in enumerate(header["tensors"]):
        tensors[row["name"]] = _decode(path, entries, i, row)
    if _digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path} fails its SHA-256 check: the file is corrupt; export it again")
    return tensors, header["metadata"]


def _decode(path, entries, i, row):
    dtype, shape = np.dtype(row["dtype"]), tuple(row["shape"])
    size = int(np.prod(shape))
    problem = f"{path}: tensor {row['name']} is inconsistent with its header"
    if row["encoding"] == "dense":
        array = entries.get(f"t{i}.dense")
        if array is None or array.dtype != dtype or array.shape != shape:
            raise CheckpointError(f"{problem} (dense entry missing or of another dtype/shape); export it again")
        return array
    bits, planes = entries.get(f"t{i}.bits"), entries.get(f"t{i}.values")
    if bits is None or planes is None or planes.ndim != 2 or planes.shape[0] != dtype.itemsize or bits.size != (size + 7) // 8:
        raise CheckpointError(f"{problem} (bitmask or values missing, or of another size); export it again")
    nonzero = np.unpackbits(bits, count=size).astype(bool)
    if int(nonzero.sum()) != planes.shape[1]:
        raise CheckpointError(f"{problem} ({int(nonzero.sum())} bits set, {planes.shape[1]} values); export it again")
    flat = np.zeros(size, dtype)
    flat[nonzero] = _from_byte_planes(planes, dtype)
    return flat.reshape(shape)

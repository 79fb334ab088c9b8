"""The compressed sparse weights file: a bitmask plus the non-zero values for each sparse tensor.

Layout: a NumPy `.npz` (a zip of `.npy` entries, deflate-compressed) with five kinds of entry:
  `header`           UTF-8 JSON as a uint8 array: format name and version, the metadata the writer
                     passes (model, input size, ...), a SHA-256 over every restored tensor (names,
                     dtypes, shapes, bytes), and per tensor, in order: name, shape, dtype, encoding
                     ("bitmask" or "dense"), non-zero count, sparsity, and its offsets in the entries below;
  `bits`             the bitmask tensors' non-zero patterns, 1 bit per element in C order (np.packbits,
                     big bit order), each tensor starting on a whole byte;
  `values.<dtype>`   the non-zero elements of the bitmask tensors of that dtype, in order;
  `dense.<dtype>`    the whole dense tensors of that dtype, in order.
Values are stored little-endian as byte planes: a uint8 array [itemsize, count] whose row j holds byte j
of every element (the "shuffle" of blosc and HDF5: exponent bytes sit together and deflate about 10%
better). A tensor is bitmask-encoded whenever that is smaller than dense (for float32: more than 1/32
of it zero), so every pruned tensor is and no dense one is. A few entries for the whole model, not a few
per tensor, keep zip and .npy headers from costing more than the bitmasks on small models.

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
    bits, pieces, described = [], {}, []  # pieces: (encoding, dtype) -> flat arrays in order
    bits_offset = 0
    offsets = {}  # (encoding, dtype) -> elements so far
    for name, array in tensors.items():
        array = np.asarray(array)
        flat = np.ascontiguousarray(array).reshape(-1)
        nonzero = _nonzero_bits(flat)
        count = int(nonzero.sum())
        row = {"name": name, "shape": list(array.shape), "dtype": array.dtype.str, "nonzeros": count,
               "sparsity": 1.0 - count / array.size if array.size else 0.0}
        if (array.size + 7) // 8 + count * array.itemsize < array.nbytes:
            row.update(encoding="bitmask", bits_offset=bits_offset)
            packed = np.packbits(nonzero)
            bits.append(packed)
            bits_offset += packed.size
            flat = flat[nonzero]
        else:
            row["encoding"] = "dense"
        key = (row["encoding"], array.dtype.str)
        row["offset"] = offsets.get(key, 0)
        offsets[key] = row["offset"] + flat.size
        pieces.setdefault(key, []).append(flat)
        described.append(row)
    entries = {"bits": np.concatenate(bits) if bits else np.zeros(0, np.uint8)}
    for (encoding, dtype), flats in pieces.items():
        entries[f"{'values' if encoding == 'bitmask' else 'dense'}.{dtype}"] = _byte_planes(np.concatenate(flats))
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
    entries = _load_entries(path)
    header = _header(path, entries.pop("header", None))
    try:
        streams = {name: _from_byte_planes(planes, np.dtype(name.split(".", 1)[1])) for name, planes in entries.items() if name != "bits"}
        tensors = {row["name"]: _decode(entries["bits"], streams, row) for row in header["tensors"]}
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path}: a tensor is inconsistent with the header ({type(exc).__name__}: {exc}); export it again") from exc
    if _digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path} fails its SHA-256 check: the file is corrupt; export it again")
    return tensors, header["metadata"]


def read_metadata(path):
    """The metadata of a sparse weights file, from its header alone (the tensors are neither read nor checked)."""
    return _header(path, _load_entries(path, only="header").get("header"))["metadata"]


def _load_entries(path, only=None):
    """{entry: array} of the file's entries (just ONLY when given), or a CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files if only in (None, name)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path} is not a readable sparse weights file ({exc}); export it again") from exc


def _header(path, entry):
    """The parsed header entry, or a CheckpointError naming what is wrong with it."""
    try:
        header = json.loads(entry.tobytes())
    except (AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path} has no valid header: it is not a {FORMAT} file (written by export.py --format sparse)") from exc
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path} is {header.get('format')!r} version {header.get('version')!r}; this suite reads {FORMAT} version {VERSION}")
    return header


def _decode(bits, streams, row):
    dtype, shape = np.dtype(row["dtype"]), tuple(row["shape"])
    size, start = int(np.prod(shape)), row["offset"]
    if row["encoding"] == "dense":
        flat = streams[f"dense.{dtype.str}"][start : start + size]
        if flat.size != size:
            raise ValueError(f"{row['name']}: {flat.size} of {size} elements stored")
        return flat.reshape(shape)
    nonzero = np.unpackbits(bits[row["bits_offset"] : row["bits_offset"] + (size + 7) // 8], count=size).astype(bool)
    values = streams[f"values.{dtype.str}"][start : start + row["nonzeros"]]
    if int(nonzero.sum()) != row["nonzeros"] or values.size != row["nonzeros"]:
        raise ValueError(f"{row['name']}: {int(nonzero.sum())} bits set, {values.size} values, {row['nonzeros']} in the header")
    flat = np.zeros(size, dtype)
    flat[nonzero] = values
    return flat.reshape(shape)

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
import math
import os

import numpy as np

from suite.artefacts import staging, untrusted
from suite.artefacts.untrusted import (
    integer,
    list_of,
    map_of,
    one_of,
    ratio,
    record,
    text,
)
from suite.errors import CheckpointError

FORMAT = "paddle-sparse-weights"
VERSION = 1
SUFFIX = ".sparse.npz"
FIX = "export it again"
ROW_FIELDS = record(
    {"name": text, "shape": list_of(integer(0)), "dtype": untrusted.numeric_dtype, "encoding": one_of("bitmask", "dense"),
     "nonzeros": integer(0), "sparsity": ratio, "offset": integer(0)},
    {"bits_offset": integer(0)},
)
HEADER_FIELDS = record({"format": text, "version": integer(), "metadata": map_of(untrusted.anything),
                        "tensors": list_of(ROW_FIELDS), "sha256": untrusted.sha256})


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
    """Write the file at `path` (staged, so never half-written); returns its size in bytes."""
    with staging.staged_file(path, "the sparse weights file") as tmp:
        staging.write_npz(tmp, encode(tensors, metadata))
        return os.path.getsize(tmp)


def read(path):
    """(tensors {name: array}, metadata) from a sparse weights file; every inconsistency is a CheckpointError.

    The header is checked field by field, and every tensor's extent against the entries that hold it, before
    any tensor is decoded: a crafted header cannot make the reader allocate more than the file holds.
    """
    entries = untrusted.load_npz(path, f"a {FORMAT} file (written by export.py --format sparse)", FIX)
    header = _header(path, entries.pop("header", None))
    try:
        streams = _streams(entries)
        for i, row in enumerate(header["tensors"]):
            _check_extent(row, entries["bits"], streams, f"tensors[{i}] ({row['name']})")
        if len({row["name"] for row in header["tensors"]}) != len(header["tensors"]):
            raise ValueError("a tensor name appears twice")
        tensors = {row["name"]: _decode(entries["bits"], streams, row) for row in header["tensors"]}
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}; {FIX}") from None
    if _digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path} fails its SHA-256 check: the file is corrupt; {FIX}")
    return tensors, header["metadata"]


def read_metadata(path):
    """The metadata of a sparse weights file, from its checked header alone (the tensors are neither read nor decoded)."""
    entries = untrusted.load_npz(path, f"a {FORMAT} file (written by export.py --format sparse)", FIX, only={"header"})
    return _header(path, entries.get("header"))["metadata"]


def _header(path, entry):
    """The header entry parsed and checked field by field, or a CheckpointError naming what is wrong with it."""
    if entry is None:
        raise CheckpointError(f"{path} has no header entry: it is not a {FORMAT} file (written by export.py --format sparse)")
    header = untrusted.parse_json(entry.tobytes(), f"{path} header", "a sparse file header", FIX)
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        found = (header.get("format"), header.get("version")) if isinstance(header, dict) else (None, None)
        raise CheckpointError(f"{path} is {found[0]!r} version {found[1]!r}; this suite reads {FORMAT} version {VERSION}")
    untrusted.check(header, HEADER_FIELDS, f"{path} header", FIX)
    return header


def _streams(entries):
    """{entry name: flat values} of the values.<dtype> and dense.<dtype> entries; any other entry is refused."""
    bits = entries.get("bits")
    if bits is None or bits.dtype != np.uint8 or bits.ndim != 1:
        raise ValueError("its bits entry is missing or not a flat uint8 array")
    streams = {}
    for name, planes in entries.items():
        if name == "bits":
            continue
        kind, _, dtype = name.partition(".")
        if kind not in ("values", "dense") or not untrusted.is_numeric_dtype(dtype):
            raise ValueError(f"it holds an entry {name!r}, which is not one this format has (header, bits, values.<dtype>, dense.<dtype>)")
        dtype = np.dtype(dtype)
        if planes.dtype != np.uint8 or planes.ndim != 2 or planes.shape[0] != dtype.itemsize:
            raise ValueError(f"entry {name} is not {dtype.itemsize} byte planes of uint8")
        streams[name] = _from_byte_planes(planes, dtype)
    return streams


def _check_extent(row, bits, streams, where):
    """The elements `row` declares must lie inside the entries that hold them."""
    size = math.prod(row["shape"])
    if row["nonzeros"] > size:
        raise ValueError(f"{where} declares {row['nonzeros']} non-zeros in {size} elements")
    if row["encoding"] == "bitmask":
        if "bits_offset" not in row or row["bits_offset"] + (size + 7) // 8 > bits.size:
            raise ValueError(f"{where} declares {size} elements, beyond the {bits.size} bytes of bits")
        stream, count = f"values.{row['dtype']}", row["nonzeros"]
    else:
        stream, count = f"dense.{row['dtype']}", size
    if stream not in streams or row["offset"] + count > streams[stream].size:
        held = streams[stream].size if stream in streams else 0
        raise ValueError(f"{where} declares {count} values at offset {row['offset']}, beyond the {held} {stream} holds")


def _decode(bits, streams, row):
    """The tensor a header row describes (its extent already checked by _check_extent)."""
    dtype, shape = np.dtype(row["dtype"]), tuple(row["shape"])
    size, start = math.prod(shape), row["offset"]
    if row["encoding"] == "dense":
        return streams[f"dense.{dtype.str}"][start : start + size].reshape(shape)
    nonzero = np.unpackbits(bits[row["bits_offset"] : row["bits_offset"] + (size + 7) // 8], count=size).astype(bool)
    if int(nonzero.sum()) != row["nonzeros"]:
        raise ValueError(f"{row['name']}: {int(nonzero.sum())} bits set, {row['nonzeros']} non-zeros in the header")
    flat = np.zeros(size, dtype)
    flat[nonzero] = streams[f"values.{dtype.str}"][start : start + row["nonzeros"]]
    return flat.reshape(shape)

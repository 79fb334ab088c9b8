"""Reading files a user hands the suite, which may be truncated, corrupt or crafted.

JSON is read with its size bounded and every failure (bad UTF-8, too deep, numbers too long) named; `.npz`
archives are read entry by entry with each array's declared size checked against the bytes the entry holds
before anything is allocated (the bytes are read as they come, never as much as a header claims), never unpickling; the fields a
reader uses are checked for type and range with `check`; a file name a file lists is confined to the folder
it came from by `inside`. Every refusal is one CheckpointError naming the file and the fix.
"""
import json
import math
import os
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy

from suite.errors import CheckpointError

MAX_JSON_BYTES = 16 << 20  # far above any state.json this suite writes (its curve grows ~100 bytes a progress line)


class Invalid(ValueError):
    """A field failed its check: `where` (a path such as tensors[3].shape) and what was expected."""

    def __init__(self, where, value, expected):
        super().__init__(f"{where} is {_describe(value)}, expected {expected}")


MISSING = object()


def _describe(value):
    """A short description of a JSON value that never recurses into it."""
    if value is MISSING:
        return "missing"
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**12:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- field checks: each is a function (value, where) that raises Invalid -------------------------------------

def anything(value, where):
    """Any JSON value (used where the reader itself checks it, or only compares it)."""


def text(value, where):
    if type(value) is not str:
        raise Invalid(where, value, "a string")


def boolean(value, where):
    if type(value) is not bool:
        raise Invalid(where, value, "true or false")


def integer(low=None, high=None):
    """An integer in [low, high] (bounds optional)."""
    expected = "an integer" + (f" >= {low}" if low is not None else "") + (f" <= {high}" if high is not None else "")

    def check(value, where):
        if type(value) is not int or (low is not None and value < low) or (high is not None and value > high):
            raise Invalid(where, value, expected)
    return check


def number(accept=None, expected="a finite number"):
    """A finite int or float for which `accept(value)` holds (if given)."""
    def check(value, where):
        if type(value) not in (int, float) or not math.isfinite(value) or (accept and not accept(value)):
            raise Invalid(where, value, expected)
    return check


ratio = number(lambda v: 0 <= v <= 1, "a ratio in [0, 1]")


def sha256(value, where):
    if type(value) is not str or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise Invalid(where, value, "a SHA-256 in hex")


def is_numeric_dtype(value):
    """True for a NumPy dtype string of booleans, integers or floats as NumPy spells it (`<f4`, `|u1`): never
    objects, strings or records."""
    try:
        return type(value) is str and np.dtype(value).kind in "biuf" and np.dtype(value).str == value
    except TypeError:
        return False


def numeric_dtype(value, where):
    if not is_numeric_dtype(value):
        raise Invalid(where, value, "a numeric dtype such as '<f4'")


def one_of(*choices):
    def check(value, where):
        if type(value) is not str or value not in choices:
            raise Invalid(where, value, "one of " + ", ".join(map(repr, choices)))
    return check


def optional(field):
    """`field`, or null."""
    def check(value, where):
        if value is not None:
            field(value, where)
    return check


def list_of(field):
    def check(value, where):
        if type(value) is not list:
            raise Invalid(where, value, "a list")
        for i, item in enumerate(value):
            field(item, f"{where}[{i}]")
    return check


def map_of(field):
    """An object with any names, each value passing `field`."""
    def check(value, where):
        if type(value) is not dict:
            raise Invalid(where, value, "an object")
        for key, item in value.items():
            field(item, f"{where}.{key}")
    return check


def record(required, optional_fields=None):
    """An object holding every key of `required` (and maybe those of `optional_fields`), each passing its field;
    other keys are left alone."""
    fields = {**required, **(optional_fields or {})}

    def check(value, where):
        if type(value) is not dict:
            raise Invalid(where, value, "an object")
        for key, field in fields.items():
            if key in value:
                field(value[key], f"{where}.{key}" if where else key)
            elif key in required:
                raise Invalid(f"{where}.{key}" if where else key, MISSING, "present")
    return check


def check(value, field, source, fix, where=""):
    """`value` (read from `source`) if it passes `field`, else a CheckpointError naming the file, the field and the fix."""
    try:
        field(value, where or "the content")
    except Invalid as exc:
        raise CheckpointError(f"{source}: {exc}; {fix}") from None
    return value


# ---- JSON ------------------------------------------------------------------------------------------------------

def parse_json(raw, source, what, fix, field=None):
    """The JSON value in bytes `raw` (from `source`), checked against `field`; any failure names `source`."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, integers past Python's digit limit; too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CheckpointError(f"{source} is not {what} ({reason}); {fix}") from None
    return check(value, field, source, fix) if field else value


def read_json(path, what, fix, field=None):
    """The JSON file at PATH, bounded in size and checked against `field`; any failure is one CheckpointError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc}); {fix}") from exc
    if len(raw) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is over {MAX_JSON_BYTES >> 20} MiB: not {what}; {fix}")
    return parse_json(raw, path, what, fix, field)


# ---- .npz ------------------------------------------------------------------------------------------------------

def load_npz(path, what, fix, only=None):
    """{entry: array} of an `.npz` archive (just the entries named in `only`, when given), read without unpickling
    and without allocating more than it holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            return dict(_read_entry(archive, info) for info in archive.infolist() if only is None or info.filename[: -len(".npy")] in only)
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise CheckpointError(f"{path} is not {what} ({exc}); {fix}") from exc


def _read_entry(archive, info):
    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"entry {name!r} is not a .npy array")
    with archive.open(info) as f:
        version = npy.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"entry {name} is .npy version {version}, not 1.0 or 2.0")
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = reader(f)
        if dtype.hasobject:
            raise ValueError(f"entry {name} holds Python objects, which would need a pickle: never loaded")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - f.tell()
        if declared != held:
            raise ValueError(f"entry {name} declares shape {list(shape)} of {dtype} ({declared} bytes) but holds {held} bytes")
        data = f.read(declared)
    if len(data) != declared:
        raise ValueError(f"entry {name} is truncated")
    return name[: -len(".npy")], np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


# ---- paths a file names ----------------------------------------------------------------------------------------

def inside(folder, name, source):
    """FOLDER/NAME for a file name that `source` lists, refused unless it stays inside FOLDER (no absolute path,
    no `..`, no symbolic link out of it)."""
    root = os.path.realpath(folder)
    path = os.path.join(folder, name) if type(name) is str and name and "\0" not in name else None
    if path is None or os.path.isabs(name) or os.path.commonpath([root, os.path.realpath(path)]) != root or os.path.realpath(path) == root:
        raise CheckpointError(f"{source} names {_describe(name)}, which is not a file inside {folder}: the files it lists "
                              f"must be there; refused (the file may be crafted)")
    return path

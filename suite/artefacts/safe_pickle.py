"""Reading weights files without running code from them: unpickling through an allow-list of globals.

`.pdparams` / `.pdopt` files are pickles, and `pickle.load` (so `paddle.load` and
`paddle.static.load_program_state`) calls any function a file names. The files Paddle writes
(`paddle.save` of a layer's or an optimizer's state dict, `paddle.static.save`, in Paddle 2.6 and 3.x,
both IRs, pickle protocols 2 to 4) name only NumPy's array and dtype reconstruction and a few plain
containers, so every other global is refused before it is called. ALLOWED_GLOBALS lists each one.
"""
import _compat_pickle
import collections
import os
import pickle

import numpy as np

from suite.errors import CheckpointError

SPLIT_INFO = "UnpackBigParamInfor@@"  # Paddle's spelling (io_utils._unpack_saved_dict)
NAME_TABLE = "StructuredToParameterName@@"
WEIGHTS_FILE = "a weights file Paddle writes"
NUMERIC_KINDS = "biufc"  # the array kinds a weights file holds: booleans, integers, floats, complex


class UnsafePickleError(CheckpointError):
    """A pickle names a global outside ALLOWED_GLOBALS: not a file Paddle writes, and possibly malicious."""


def _latin1_bytes(text, encoding):
    """`_codecs.encode(text, 'latin1')`: how protocol-2 pickles spell bytes (array data); other codecs are refused."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not the latin1 "
                                     f"text-to-bytes call protocol-2 pickles make")
    return text.encode("latin1")


def _empty_bytes():
    """`bytes()`: how protocol-2 pickles spell b'' (the data of a zero-size array); `bytes(n)` is refused."""
    return b""


class _StateDict(collections.OrderedDict):
    """What the allow-list makes for `collections.OrderedDict`: the same dict, except that a pickle's BUILD
    (which could set attributes such as `pop` or `items` on it and so hijack the code reading it) is refused."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a BUILD instruction targets a dict: not how dicts are pickled")


# NumPy pickles name the module of the NumPy that wrote them (numpy.core before 2.0, numpy._core since);
# both spellings get the running NumPy's own function, found without importing anything by name.
_reconstruct = np.zeros(0).__reduce__()[0]

# Keyed by Python 3 names: the Python 2 names of protocol-2 pickles (__builtin__.tuple) are translated first.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # every ndarray, written by NumPy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # every ndarray, written by NumPy 2.x
    ("numpy", "ndarray"): np.ndarray,  # the class _reconstruct makes
    ("numpy", "dtype"): np.dtype,  # every array's dtype
    ("_codecs", "encode"): _latin1_bytes,  # protocol 2: array data
    ("builtins", "bytes"): _empty_bytes,  # protocol 2: data of a zero-size array
    ("builtins", "tuple"): tuple,  # a Tensor saved outside a flat state dict is pickled as (name, array)
    ("collections", "OrderedDict"): _StateDict,  # a layer's state_dict saved inside another dict
}


def _python3_name(module, name):
    """The Python 3 name of a global as pickle's fix_imports translates it (__builtin__.tuple -> builtins.tuple)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _AllowListUnpickler(pickle.Unpickler):
    """An Unpickler whose every global comes from ALLOWED_GLOBALS; `name` and `kind` are for the refusal."""

    def __init__(self, file, name, kind, encoding):
        super().__init__(file, encoding=encoding)
        self.name, self.kind = name, kind

    def find_class(self, module, name):
        module, name = _python3_name(module, name)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.name} is not {self.kind}: it asks to call {module}.{name}, which is not one of the array and "
                f"container types such files use; refused before calling it (the file may be malicious), nothing loaded"
            ) from None


def unpickle(file, name, kind=WEIGHTS_FILE, encoding="latin1"):
    """The object pickled in the binary `file`, rebuilt from allow-listed globals only.

    `name` (the file's path) and `kind` (what it should be) go into the messages; `encoding` is pickle's, for
    str data of Python 2 pickles (Paddle reads with 'latin1'). Raises UnsafePickleError for a refused global,
    CheckpointError for a truncated, corrupt or non-pickle file.
    """
    try:
        return _AllowListUnpickler(file, name, kind, encoding).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # a broken pickle can fail in any way; every way means "unreadable"
        raise CheckpointError(f"{name} is not {kind}: truncated, corrupt or not a pickle "
                              f"({type(exc).__name__}: {exc})") from exc


def load(path):
    """The object in the pickle file `path`, as `paddle.load(path, return_numpy=True)` gives it.

    As Paddle does for a dict: arrays that protocol-2/3 saves split (over 1 GiB) are joined, and the name table
    (StructuredToParameterName@@, the parameters' names at save time; nothing here needs them) is dropped.
    Tensors pickled outside a flat state dict stay (name, array) tuples, which paddle.load makes into Tensors.
    """
    try:
        with open(path, "rb") as f:
            obj = unpickle(f, path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if type(obj) in (dict, _StateDict):
        _join_split_arrays(obj, path)
        obj.pop(NAME_TABLE, None)
    return obj


def _join_split_arrays(state, path):
    """Undo paddle.framework.io_utils._unpack_saved_dict: parts `key@@.i` of a flattened array -> the array."""
    info = state.pop(SPLIT_INFO, None)
    if info is None:
        return
    try:
        for key, entry in info.items():
            parts = [state.pop(part) for part in entry["slices"]]
            state[key] = np.concatenate(parts).reshape(entry["OriginShape"])
    except Exception as exc:  # whatever a crafted entry makes fail
        raise CheckpointError(f"{path}: its {SPLIT_INFO} entry (how Paddle stores arrays over 1 GiB) does not match "
                              f"the file's arrays ({type(exc).__name__}: {exc}); the file is corrupt") from exc


def load_arrays(path):
    """{name: ndarray} of a weights file: `paddle.save(layer.state_dict())`, or one `paddle.static.save` file.

    Equal to what paddle.load (Tensors as arrays) or load_program_state returns; anything but a dict of
    numeric arrays (an optimizer's LR_Scheduler entry, a nested dict) is refused: use `load` for those.
    """
    state = load(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of arrays: not {WEIGHTS_FILE}")
    for key, value in state.items():
        if not isinstance(key, str) or type(value) is not np.ndarray or value.dtype.kind not in NUMERIC_KINDS or value.dtype.fields:
            what = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            raise CheckpointError(f"{path}: entry {key!r} is {what}, not an array of numbers named by a string; "
                                  f"a weights file holds only those")
    return state


def load_program_state(model_path):
    """{name: ndarray} of what `paddle.static.save(program, prefix)` wrote: prefix.pdparams, then prefix.pdopt if any.

    Takes the prefix, or the prefix with .pdparams/.pdopt/.pdmodel, as paddle.static.load_program_state does
    (but not its fallback to the folders of the Paddle 1.x save_vars format).
    """
    prefix = model_path
    for suffix in (".pdparams", ".pdopt", ".pdmodel"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    if not os.path.isfile(prefix + ".pdparams"):
        raise CheckpointError(f"{prefix}.pdparams not found: {model_path} should be the prefix a "
                              f"paddle.static.save wrote (PREFIX.pdparams, PREFIX.pdopt)")
    state = load_arrays(prefix + ".pdparams")
    if os.path.exists(prefix + ".pdopt"):
        state.update(load_arrays(prefix + ".pdopt"))
    return state

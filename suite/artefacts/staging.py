"""Every file and folder the suite writes is staged: written under a temporary name beside its final place,
flushed to disk, then renamed into place. A kill, a crash or a full disk leaves the previous version or
nothing, never an empty or truncated file; a failed write is one WriteError naming the path (exit status 4).

Staging names are `.tmp-<final name>-<pid>`. The next writer of the same place removes those whose process
is gone; a folder that a replace moved aside (`....old`) and never got to delete is put back if the new one
never arrived.
"""
import os
import re
import shutil
import zipfile
from contextlib import contextmanager

import numpy as np

from suite.errors import CheckpointError, SuiteError, WriteError

PREFIX = ".tmp-"
_LEFTOVER = re.compile(rf"^{re.escape(PREFIX)}(?P<name>.+)-(?P<pid>\d+)(?P<old>\.old)?$")


def staging_path(path):
    """Where PATH is staged by this process."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{PREFIX}{name}-{os.getpid()}")


def is_staging(name):
    """True for a file or folder name that a writer stages under (never a result)."""
    return name.startswith(PREFIX)


def refuse_staged(path):
    """A CheckpointError for a path inside a staging folder: what a killed write left is never read as a result."""
    staged = [part for part in os.path.abspath(path).split(os.sep) if is_staging(part)]
    if staged:
        raise CheckpointError(f"{path} is in {staged[0]}, a staging folder a write that did not finish left behind, not a "
                              "result; the next write there removes it")


def shown(path):
    """PATH as a user should see it: a staging folder on the way is named by the place it is staged for."""
    parts = [(_LEFTOVER.match(part) or {"name": part})["name"] for part in os.fspath(path).split(os.sep)]
    return os.sep.join(parts)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def remove_leftovers(folder, name=None):
    """Remove what writers that are gone left staged in FOLDER (for the final name NAME only, if given)."""
    for entry in os.listdir(folder):
        found = _LEFTOVER.match(entry)
        if not found or (name is not None and found["name"] != name) or _alive(int(found["pid"])):
            continue
        final = os.path.join(folder, found["name"])
        if found["old"] and not os.path.lexists(final):
            os.rename(os.path.join(folder, entry), final)  # a replace killed between its two renames
        else:
            _remove(os.path.join(folder, entry))


def _fsync(path):
    """Flush a file, or every file under a folder and the folder's entries, to disk."""
    folder = os.path.isdir(path)
    for file in [os.path.join(top, n) for top, _, names in os.walk(path) for n in names] if folder else [path]:
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    if folder:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _staged(path, what, kept):
    """The shared part: a fresh staging path beside PATH for the block, OSError as a WriteError, cleanup."""
    folder, name = os.path.split(os.path.abspath(path))
    staging = staging_path(path)
    existed = os.path.lexists(path)
    try:
        os.makedirs(folder, exist_ok=True)
        remove_leftovers(folder, name)
        _remove(staging)  # a leftover of an earlier process that had this pid
        yield staging
    except SuiteError:
        raise  # the block's own refusal (a WriteError is an OSError too)
    except OSError as exc:
        kept = kept or ("the previous version is kept" if existed else "nothing was written there")
        raise WriteError(f"could not write {what} {shown(path)} ({exc.strerror or exc}); {kept}") from exc
    finally:
        _remove(staging)


@contextmanager
def staged_file(path, what, kept=None):
    """Yields a temporary path beside PATH to write the file to; when the block ends without error, it is flushed and
    renamed to PATH. `what` names the output before its path in the error (`--json`, `the plot`); `kept` overrides
    what the error says is kept."""
    with _staged(path, what, kept) as staging:
        yield staging
        _fsync(staging)
        os.replace(staging, path)


@contextmanager
def staged_folder(path, what, replace=False, kept=None):
    """Yields an empty staging folder beside PATH; when the block ends without error, it is flushed and renamed to
    PATH. PATH must be absent or an empty folder (a concurrent writer that got there first makes this a WriteError),
    unless `replace`: then an existing PATH is moved aside and deleted once the new folder is in place."""
    with _staged(path, what, kept) as staging:
        os.makedirs(staging)
        yield staging
        _fsync(staging)
        old = staging + ".old"
        if replace and os.path.isdir(path):
            os.rename(path, old)
        elif os.path.isdir(path):
            os.rmdir(path)  # empty, or OSError: another writer filled it first
        os.rename(staging, path)
        _remove(old)


def write_npz(path, entries):
    """What np.savez_compressed writes (a deflated zip of .npy entries), but with the archive closed even when a
    write fails: NumPy 1.x leaves it open, and its clean-up then fails again, noisily, when the process exits."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in entries.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)

"""The checkpoint folder: written atomically, verified against its manifest before anything is read from it.

A checkpoint is a folder MODEL_PATH/epoch_N holding every persistable of the training program:
`model.pdparams` (the model's parameters, as `paddle.static.save` writes them), `model.pdopt`
(optimizer state, LR), `masks.npz` (the pruning masks, 0/1, packed 1 bit per weight, so a sparse
run's checkpoint costs about what a dense one does), plus `state.json` (epoch, step, LR schedule,
pruner state, flags) and `manifest.json` (sizes and SHA-256 of the files). It is written to a
temporary folder and renamed into place; `latest` is a symlink swapped atomically, so it only ever
names a complete checkpoint. Whether a run may continue from one is decided in suite/training/resume.py.
"""
import hashlib
import json
import os
import pickle
import shutil
import zipfile
import zlib

import numpy as np
import paddle

from sparsity import static
from suite.artefacts import safe_pickle
from suite.errors import CheckpointError

FORMAT_VERSION = 2
PREFIX = "model"
MASKS = "masks.npz"
STATE = "state.json"
MANIFEST = "manifest.json"
LATEST = "latest"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(folder):
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack_masks(masks):
    """{name: 0/1 float mask} -> entries for np.savez: each mask as packed bits, plus the shapes and dtypes."""
    entries, layout = {}, {}
    for name, mask in masks.items():
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"mask {name} holds values other than 0 and 1; it cannot be stored as bits")
        entries[name] = np.packbits(mask.reshape(-1) != 0)
        layout[name] = {"shape": list(mask.shape), "dtype": mask.dtype.str}
    entries["__layout__"] = np.frombuffer(json.dumps(layout).encode(), np.uint8)
    return entries


def unpack_masks(path):
    """{name: mask} as the program holds them (0/1 in their dtype) from a masks.npz file (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            layout = json.loads(archive["__layout__"].tobytes())
            return {
                name: np.unpackbits(archive[name], count=int(np.prod(spec["shape"]))).astype(spec["dtype"]).reshape(spec["shape"])
                for name, spec in layout.items()
            }
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path} is not a masks file this suite writes ({exc}); use an earlier checkpoint") from exc


def write_persistables(folder, program, scope):
    """Every persistable of `program` from `scope` into FOLDER: parameters, optimizer state, packed masks."""
    names = static.persistables(program)
    parameters = {p.name for p in static.parameters(program)}
    groups = {".pdparams": {}, ".pdopt": {}}
    masks = {}
    for name in names:
        value = static.read(scope, name)
        if static.is_mask_name(name):
            masks[name] = value
        else:
            groups[".pdparams" if name in parameters else ".pdopt"][name] = value
    for suffix, values in groups.items():
        with open(os.path.join(folder, PREFIX + suffix), "wb") as f:
            pickle.dump(values, f, protocol=4)
    with open(os.path.join(folder, MASKS), "wb") as f:
        np.savez_compressed(f, **pack_masks(masks))


def save(model_path, epoch, program, state, keep=0):
    """Write MODEL_PATH/epoch_N atomically, point `latest` at it, keep the newest `keep` (0: all)."""
    os.makedirs(model_path, exist_ok=True)
    _remove_staging_leftovers(model_path)
    name = f"epoch_{epoch}"
    final = os.path.join(model_path, name)
    staging = os.path.join(model_path, f".tmp-{name}-{os.getpid()}")
    os.makedirs(staging)
    try:
        write_persistables(staging, program, paddle.static.global_scope())
        with open(os.path.join(staging, STATE), "w") as f:
            json.dump({"format_version": FORMAT_VERSION, **state}, f, indent=1, sort_keys=True)
        files = sorted(os.listdir(staging))
        manifest = {
            "format_version": FORMAT_VERSION,
            "files": {n: {"size": os.path.getsize(os.path.join(staging, n)), "sha256": _sha256(os.path.join(staging, n))} for n in files},
        }
        with open(os.path.join(staging, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        _fsync_tree(staging)
        if os.path.isdir(final):  # a checkpoint of the same epoch (a re-run) is moved aside, then replaced
            os.rename(final, os.path.join(model_path, f".tmp-old-{name}-{os.getpid()}"))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    link = os.path.join(model_path, f".tmp-{LATEST}-{os.getpid()}")
    os.symlink(name, link)
    os.replace(link, os.path.join(model_path, LATEST))
    _remove_staging_leftovers(model_path)
    if keep:
        _prune_old(model_path, keep, epoch)
    return final


def _remove_staging_leftovers(model_path):
    """Half-written checkpoints of a run that was killed while saving (only rank 0 ever writes here)."""
    for name in os.listdir(model_path):
        if name.startswith(".tmp-"):
            path = os.path.join(model_path, name)
            if os.path.islink(path) or not os.path.isdir(path):
                os.remove(path)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _prune_old(model_path, keep, newest):
    """Keep the `keep` newest checkpoints up to epoch `newest` (the one just written); later ones are left alone."""
    epochs = sorted(
        (int(n.split("_")[1]) for n in os.listdir(model_path) if n.startswith("epoch_") and n.split("_")[1].isdigit()),
        reverse=True,
    )
    for epoch in [e for e in epochs if e <= newest][keep:]:
        shutil.rmtree(os.path.join(model_path, f"epoch_{epoch}"), ignore_errors=True)


def resolve(path):
    """The checkpoint folder for PATH: a checkpoint itself, or a model_path whose `latest` names one."""
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return path
    latest = os.path.join(path, LATEST)
    if os.path.isfile(os.path.join(latest, MANIFEST)):
        return os.path.realpath(latest)
    raise CheckpointError(f"no checkpoint at {path}: expected {MANIFEST} there or a '{LATEST}' link to a checkpoint folder")


def verify(folder):
    """Check the manifest: every file present with its size and checksum. Returns state.json's content."""
    folder = resolve(folder)
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}/{MANIFEST} is unreadable ({exc}); the checkpoint is corrupt, use an earlier one") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder} has checkpoint format {manifest.get('format_version')!r}, this suite reads {FORMAT_VERSION}")
    for name, want in manifest["files"].items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, use an earlier one")
        if os.path.getsize(path) != want["size"]:
            raise CheckpointError(f"{path} is {os.path.getsize(path)} bytes, the manifest says {want['size']}: truncated or corrupt, use an earlier checkpoint")
        if _sha256(path) != want["sha256"]:
            raise CheckpointError(f"{path} fails its SHA-256 check: the checkpoint is corrupt, use an earlier one")
    with open(os.path.join(folder, STATE)) as f:
        return json.load(f)


def read_persistables(folder):
    """{name: ndarray} of every persistable saved in the checkpoint, masks unpacked (call verify first)."""
    folder = resolve(folder)
    values = safe_pickle.load_program_state(os.path.join(folder, PREFIX))
    values.update(unpack_masks(os.path.join(folder, MASKS)))
    return values


def model_spec(state):
    """What rebuilds the model a checkpoint was saved from: model, scale, image_size, in_channels, num_classes, data."""
    return dict(state["spec"])

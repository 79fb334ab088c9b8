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
import math
import os
import pickle
import shutil

import numpy as np
import paddle

from sparsity import static
from suite.artefacts import safe_pickle, staging, untrusted
from suite.artefacts.untrusted import (
    integer,
    list_of,
    map_of,
    number,
    one_of,
    optional,
    ratio,
    record,
    text,
)
from suite.errors import CheckpointError, WriteError

FORMAT_VERSION = 2
PREFIX = "model"
MASKS = "masks.npz"
STATE = "state.json"
MANIFEST = "manifest.json"
LATEST = "latest"
FILES = (PREFIX + ".pdparams", PREFIX + ".pdopt", MASKS, STATE)  # what a reader reads: each must be in the manifest
CORRUPT = "the checkpoint is corrupt or was altered; use an earlier one"

# The fields of each JSON file, checked before any is used (suite/artefacts/untrusted.py).
MANIFEST_FIELDS = record({"format_version": integer(), "files": map_of(record({"size": integer(0), "sha256": untrusted.sha256}))})
SPEC_FIELDS = record({  # the model and data facts saved with weights (checkpoints, exports, sparse files)
    "model": text, "scale": number(lambda v: v > 0, "a number > 0"), "image_size": integer(1), "in_channels": integer(1),
    "num_classes": integer(1), "data": text, "data_dir": optional(text),
}, {"widths": optional(map_of(list_of(integer(1))))})  # a slimmed model's layer widths (slim.py)
STATE_FIELDS = record({
    "epoch": integer(0), "step": integer(0), "ir": one_of("pir", "legacy"), "nranks": integer(1), "spec": SPEC_FIELDS,
    "structure": map_of(text), "targets": map_of(optional(ratio)), "flags": map_of(untrusted.anything),
    "lr": record({"last_epoch": integer(-1), "last_lr": number()}),
    "pruner": optional(record({"iteration": integer(0)}, {
        "mask_ratio": optional(ratio), "mask_feed": optional(list_of(number())), "thresholds": optional(list_of(number())),
        "frozen": untrusted.boolean})),
    "history": list_of(record({"epoch": integer(0), "step": integer(0), "top1": ratio, "top5": ratio,
                               "model_sparsity": ratio, "pruned_sparsity": ratio})),
    "curve": list_of(record({"step": integer(0), "loss": number(), "top1": ratio, "sparsity": ratio, "lr": number()})),
})
SLIM_STATE_FIELDS = record({  # a slim model's checkpoint (slim.py): weights and what rebuilds them, no training run
    "kind": one_of("slim"), "ir": one_of("pir", "legacy"), "spec": SPEC_FIELDS, "structure": map_of(text), "targets": map_of(optional(ratio)),
})
MASK_LAYOUT_FIELDS = map_of(record({"shape": list_of(integer(0)), "dtype": untrusted.numeric_dtype}))


def sha256_of(path):
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """{name: mask} as the program holds them (0/1 in their dtype) from a masks.npz file (never unpickles).

    Each mask's declared shape must match its packed bits before it is unpacked, so a crafted layout cannot
    make it allocate more than the file holds.
    """
    fix = "use an earlier checkpoint"
    entries = untrusted.load_npz(path, "a masks file this suite writes", fix)
    if "__layout__" not in entries:
        raise CheckpointError(f"{path} has no __layout__ entry: not a masks file this suite writes; {fix}")
    layout = untrusted.parse_json(entries.pop("__layout__").tobytes(), f"{path}:__layout__", "a masks layout", fix, MASK_LAYOUT_FIELDS)
    masks = {}
    for name, spec in layout.items():
        size, packed = math.prod(spec["shape"]), entries.get(name)
        if packed is None or packed.dtype != np.uint8 or packed.shape != ((size + 7) // 8,):
            raise CheckpointError(f"{path}: mask {name} of shape {spec['shape']} needs {(size + 7) // 8} packed bytes, the file "
                                  f"holds {'none' if packed is None else f'{packed.size} of {packed.dtype}'}; {fix}")
        masks[name] = np.unpackbits(packed, count=size).astype(spec["dtype"]).reshape(spec["shape"])
    return masks


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
    staging.write_npz(os.path.join(folder, MASKS), pack_masks(masks))


def _write_contents(folder, program, scope, state):
    """A checkpoint's files in FOLDER: the persistables, state.json, then manifest.json over them."""
    write_persistables(folder, program, scope)
    with open(os.path.join(folder, STATE), "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **state}, f, indent=1, sort_keys=True)
    files = sorted(os.listdir(folder))
    manifest = {
        "format_version": FORMAT_VERSION,
        "files": {n: {"size": os.path.getsize(os.path.join(folder, n)), "sha256": sha256_of(os.path.join(folder, n))} for n in files},
    }
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def write(folder, program, scope, state, what):
    """A checkpoint of `program`'s persistables in `scope` at FOLDER (new or empty), staged beside it and renamed into
    place: a model that is not a training run's (slim.py's), so no `latest` link and no optimizer state. `what`
    names it in the one line a failed write ends with."""
    with staging.staged_folder(folder, what) as staged:
        _write_contents(staged, program, scope, state)
    return folder


def save(model_path, epoch, program, state, keep=0):
    """Write MODEL_PATH/epoch_N atomically, point `latest` at it, keep the newest `keep` (0: all).

    Only one process writes a model path (train.py holds its lock), so whatever another process left staged
    there is a leftover of a run that was killed while saving.
    """
    name = f"epoch_{epoch}"
    final = os.path.join(model_path, name)
    latest = os.path.join(model_path, LATEST)
    kept = f"{latest} still names the previous checkpoint" if os.path.lexists(latest) else "no checkpoint was written"
    with staging.staged_folder(final, f"the checkpoint of epoch {epoch} to", replace=True, kept=kept) as folder:
        staging.remove_leftovers(model_path)
        _write_contents(folder, program, paddle.static.global_scope(), state)
    _point_latest(model_path, name, kept)
    if keep:
        _prune_old(model_path, keep, epoch)
    return final


def _point_latest(model_path, name, kept):
    """Swap the `latest` symlink to NAME in one rename."""
    link = staging.staging_path(os.path.join(model_path, LATEST))
    try:
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(name, link)
        os.replace(link, os.path.join(model_path, LATEST))
    except OSError as exc:
        raise WriteError(f"could not point {os.path.join(model_path, LATEST)} at {name} ({exc.strerror or exc}); {kept}") from exc


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
    staging.refuse_staged(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return path
    latest = os.path.join(path, LATEST)
    if os.path.isfile(os.path.join(latest, MANIFEST)):
        return os.path.realpath(latest)
    raise CheckpointError(f"no checkpoint at {path}: expected {MANIFEST} there or a '{LATEST}' link to a checkpoint folder")


def verify(folder):
    """Check the manifest (every file a reader reads listed, inside the folder, with its size and checksum) and
    return state.json's content, its fields checked."""
    folder = resolve(folder)
    manifest_path = os.path.join(folder, MANIFEST)
    manifest = untrusted.read_json(manifest_path, "a checkpoint manifest", CORRUPT)
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path} is of checkpoint format {version!r}, this suite reads {FORMAT_VERSION}")
    untrusted.check(manifest, MANIFEST_FIELDS, manifest_path, CORRUPT)
    unlisted = [n for n in FILES if n not in manifest["files"]]
    if unlisted:
        raise CheckpointError(f"{manifest_path} does not list {', '.join(unlisted)}; {CORRUPT}")
    for name, want in manifest["files"].items():
        path = untrusted.inside(folder, name, manifest_path)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, use an earlier one")
        if os.path.getsize(path) != want["size"]:
            raise CheckpointError(f"{path} is {os.path.getsize(path)} bytes, the manifest says {want['size']}: truncated or corrupt, use an earlier checkpoint")
        if sha256_of(path) != want["sha256"]:
            raise CheckpointError(f"{path} fails its SHA-256 check: the checkpoint is corrupt, use an earlier one")
    path = os.path.join(folder, STATE)
    state = untrusted.read_json(path, "a checkpoint state", CORRUPT)
    slimmed = isinstance(state, dict) and state.get("kind") == "slim"
    return untrusted.check(state, SLIM_STATE_FIELDS if slimmed else STATE_FIELDS, path, CORRUPT)


def read_persistables(folder):
    """{name: ndarray} of every persistable saved in the checkpoint, masks unpacked (call verify first)."""
    folder = resolve(folder)
    values = safe_pickle.load_program_state(os.path.join(folder, PREFIX))
    values.update(unpack_masks(os.path.join(folder, MASKS)))
    return values


def model_spec(state):
    """What rebuilds the model a checkpoint was saved from: model, scale, image_size, in_channels, num_classes, data."""
    return dict(state["spec"])

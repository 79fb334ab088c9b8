"""Every way weights come in: a checkpoint folder of ours, a Paddle state-dict file (the model zoo's and
PaddleClas's `.pdparams`), or a compressed sparse file written by export.py.

All three are read into the same shape, a `Source`: arrays keyed by the layers' structural names
(`conv1.0.weight`, the keys of `layer.state_dict()`), so weights are matched to a program by what the
layers are, not by the variable names a program happens to generate.
"""
import json
import os
from dataclasses import dataclass, field

from sparsity import static
from suite.artefacts import checkpoint, safe_pickle, sparse_file
from suite.errors import CheckpointError

STATE_DICT_SUFFIXES = (".pdparams",)
EXPORT_MANIFEST = "export.json"  # written by export.py beside its artefacts: the model and data they are for


@dataclass
class Source:
    """Weights read from PATH: {structural name: array}, the model they were saved from (if recorded), and
    {structural name: target ratio} of the tensors that were pruned when it was saved."""

    path: str
    kind: str  # "checkpoint", "state_dict" or "sparse"
    arrays: dict
    spec: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)


def kind_of(path):
    """'checkpoint', 'sparse' or 'state_dict' for PATH, or a CheckpointError saying what is accepted."""
    if os.path.isdir(path):
        checkpoint.resolve(path)  # raises with the checkpoint's own message
        return "checkpoint"
    if os.path.isfile(path):
        if path.endswith(sparse_file.SUFFIX):
            return "sparse"
        if path.endswith(STATE_DICT_SUFFIXES):
            return "state_dict"
    raise CheckpointError(
        f"{path} is not a weights source: pass a checkpoint folder (MODEL_PATH or MODEL_PATH/epoch_N), a state-dict "
        f"file (*.pdparams, from paddle.save(layer.state_dict())) or a sparse file (*{sparse_file.SUFFIX} from export.py)"
    )


def read(path):
    """Read and verify the weights at PATH (see kind_of); nothing is loaded into a program yet."""
    kind = kind_of(path)
    if kind == "checkpoint":
        folder = checkpoint.resolve(path)
        state = checkpoint.verify(folder)
        values = checkpoint.read_persistables(folder)
        structure = state["structure"]  # structural name -> variable name
        arrays = {key: values[var] for key, var in structure.items() if var in values}
        targets = {key: state["targets"][var] for key, var in structure.items() if var in state["targets"]}
        return Source(folder, kind, arrays, checkpoint.model_spec(state), targets)
    if kind == "sparse":
        arrays, metadata = sparse_file.read(path)
        if metadata.get("onnx"):
            raise CheckpointError(
                f"{path} is an INT8 ONNX model packed as a sparse file (export.py --format sparse_int8), not float weights; "
                f"evaluate it with evaluate.py, and start from the float {sparse_file.SUFFIX} or the checkpoint instead"
            )
        return Source(path, kind, arrays, metadata.get("spec", {}), metadata.get("targets", {}))
    manifest = export_manifest(os.path.dirname(path)) or {"spec": {}, "targets": {}}  # a state dict of export.py's
    return Source(path, kind, read_state_dict(path), manifest["spec"], manifest["targets"])


def export_manifest(folder):
    """The export.json in FOLDER ({spec, targets, structure, ...}), or None when there is none."""
    path = os.path.join(folder, EXPORT_MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        if not all(isinstance(manifest.get(key), dict) for key in ("spec", "targets", "structure")):
            raise ValueError("spec, targets or structure missing")
        return manifest
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); export the model again") from exc


def read_state_dict(path):
    """{structural name: array} from a `paddle.save(layer.state_dict())` file, read without running code from it.

    Pruning masks a dygraph pruner kept in the state dict are left out: a run starts with masks of its own.
    """
    return {key: value for key, value in safe_pickle.load_arrays(path).items() if not static.is_mask_name(key)}


@dataclass
class Match:
    """What a Source gives a program: {variable name: array} to write, and what was skipped and why."""

    values: dict
    skipped: list

    def describe(self, source):
        line = f"loaded {len(self.values)} tensors from {source.path}"
        if self.skipped:
            line += f", skipped {len(self.skipped)} of the classifier head (another class count, re-initialised): " + ", ".join(self.skipped)
        return line


def match(source, structure, shapes, head_prefixes=()):
    """Map a Source onto a program's parameters by structural name.

    `structure` maps each structural name of the model to its variable name, `shapes` each variable
    name to its shape. Keys under `head_prefixes` whose shape differs (or that are absent) are skipped;
    any other missing, extra or mis-shaped key is a CheckpointError naming it.
    """
    def is_head(key):
        return any(key.startswith(prefix) for prefix in head_prefixes)

    arrays = source.arrays
    by_variable = {var: key for key, var in structure.items()}
    if not set(arrays) & set(structure) and set(arrays) & set(by_variable):
        # a paddle.static.save .pdparams is keyed by variable names: take them where this program has the same ones
        arrays = {by_variable.get(name, name): value for name, value in arrays.items()}
    values, skipped = {}, []
    for key, var in structure.items():
        want = tuple(shapes[var])
        if key not in arrays:
            if is_head(key):
                skipped.append(key)
                continue
            raise CheckpointError(
                f"{source.path} does not match this model: it has no {key} (shape {list(want)}); check --model and --scale"
            )
        got = tuple(arrays[key].shape)
        if got != want:
            if is_head(key):
                skipped.append(f"{key} {list(got)}->{list(want)}")
                continue
            raise CheckpointError(
                f"{source.path} does not match this model: {key} has shape {list(got)}, the model needs {list(want)}; check --model, --scale and --data"
            )
        values[var] = arrays[key]
    extra = sorted(set(arrays) - set(structure))
    if extra:
        shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
        raise CheckpointError(f"{source.path} does not match this model: {len(extra)} tensor(s) it does not have ({shown}); check --model and --scale")
    return Match(values, skipped)

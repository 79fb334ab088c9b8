"""Every way weights come in: a checkpoint folder of ours, a Paddle state-dict file (the model zoo's and
PaddleClas's `.pdparams`), or a compressed sparse file written by export.py.

All three are read into the same shape, a `Source`: arrays keyed by the layers' structural names
(`conv1.0.weight`, the keys of `layer.state_dict()`), so weights are matched to a program by what the
layers are, not by the variable names a program happens to generate.
"""
import os
from dataclasses import dataclass, field

from sparsity import static
from suite.artefacts import checkpoint, safe_pickle, sparse_file, staging, untrusted
from suite.artefacts.untrusted import integer, map_of, optional, ratio, record, text
from suite.errors import CheckpointError

STATE_DICT_SUFFIXES = (".pdparams",)
EXPORT_MANIFEST = "export.json"  # written by export.py beside its artefacts: the model and data they are for
MODEL_DTYPE = "float32"  # of every parameter and statistic of the suite's programs
EXPORT_FIX = "export the model again"
TARGETS_FIELDS = map_of(optional(ratio))
EXPORT_FIELDS = record({"spec": checkpoint.SPEC_FIELDS, "targets": TARGETS_FIELDS, "structure": map_of(text), "files": map_of(integer(0))},
                       {"sha256": map_of(untrusted.sha256)})
SPARSE_METADATA_FIELDS = record({}, {"spec": checkpoint.SPEC_FIELDS, "targets": TARGETS_FIELDS})


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
    staging.refuse_staged(path)
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
        return _source(folder, kind, arrays, checkpoint.model_spec(state), targets)
    if kind == "sparse":
        arrays, metadata = sparse_file.read(path)
        if metadata.get("onnx"):
            raise CheckpointError(
                f"{path} is an INT8 ONNX model packed as a sparse file (export.py --format sparse_int8), not float weights; "
                f"evaluate it with evaluate.py, and start from the float {sparse_file.SUFFIX} or the checkpoint instead"
            )
        untrusted.check(metadata, SPARSE_METADATA_FIELDS, f"{path} header", sparse_file.FIX, "metadata")
        return _source(path, kind, arrays, metadata.get("spec", {}), metadata.get("targets", {}))
    folder = os.path.dirname(path)
    manifest = export_manifest(folder)  # a state dict of export.py's has one beside it
    if manifest is None:
        return Source(path, kind, read_state_dict(path))
    verify_export_files(folder, manifest, [os.path.basename(path)])
    return _source(path, kind, read_state_dict(path), manifest["spec"], manifest["targets"])


def _source(path, kind, arrays, spec, targets):
    """A Source whose targets name only tensors it holds."""
    unknown = sorted(set(targets) - set(arrays))
    if unknown:
        raise CheckpointError(f"{path} gives a target ratio for {unknown[0]}, a tensor it does not hold; the file is corrupt or was altered")
    return Source(path, kind, arrays, spec, targets)


def export_manifest(folder):
    """The export.json in FOLDER ({spec, targets, structure, files, ...}, its fields checked), or None when there is none."""
    path = os.path.join(folder, EXPORT_MANIFEST)
    if not os.path.isfile(path):
        return None
    manifest = untrusted.read_json(path, "an export manifest", EXPORT_FIX, EXPORT_FIELDS)
    unknown = sorted(set(manifest["targets"]) - set(manifest["structure"]))
    if unknown:
        raise CheckpointError(f"{path}: targets name {unknown[0]}, which its structure does not list; {EXPORT_FIX}")
    return manifest


def verify_export_files(folder, manifest, names):
    """Check the files NAMES of an export against its export.json (inside FOLDER, size, and SHA-256 where recorded)."""
    source = os.path.join(folder, EXPORT_MANIFEST)
    for name in names:
        path = untrusted.inside(folder, name, source)
        if name not in manifest["files"]:
            continue  # not written by the export (added later): read as it is
        if os.path.getsize(path) != manifest["files"][name]:
            raise CheckpointError(f"{path} is {os.path.getsize(path)} bytes, {source} says {manifest['files'][name]}: truncated or altered; {EXPORT_FIX}")
        if name in manifest.get("sha256", {}) and checkpoint.sha256_of(path) != manifest["sha256"][name]:
            raise CheckpointError(f"{path} fails its SHA-256 check against {source}: the file is corrupt; {EXPORT_FIX}")


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
        if arrays[key].dtype != MODEL_DTYPE:
            raise CheckpointError(f"{source.path}: {key} holds {arrays[key].dtype} values, the model's are {MODEL_DTYPE}; "
                                  f"save the weights as {MODEL_DTYPE}")
        values[var] = arrays[key]
    extra = sorted(set(arrays) - set(structure))
    if extra:
        shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
        raise CheckpointError(f"{source.path} does not match this model: {len(extra)} tensor(s) it does not have ({shown}); check --model and --scale")
    return Match(values, skipped)

"""Every file a user can hand the suite, crafted or broken, is refused with one error line naming it and exit 2.

Crafted pickles: a real checkpoint is copied and one of its files replaced by a malicious pickle (or an .npz
holding a pickled object); its manifest is rewritten with matching checksums, so the checksum check cannot be
what stops it. The payload would create a marker file: it must not exist afterwards.
Broken files: every JSON file, the sparse file's header, the .npz entries, the inference model and ONNX files,
truncated, of the wrong shape, out of range, or naming files outside their folder; arrays declaring more than
their file holds are refused before anything is allocated.
"""
import importlib.util
import io
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import paddle
import pytest
from numpy.lib import format as npy

import evaluate
import train
from suite.artefacts import checkpoint, sparse_file, weights
from suite.deploy import runtimes
from suite.errors import CheckpointError, run_cli
from tests.scripts import GMP, QUICK, check, error_lines, run, tree_snapshot
from tests.test_safe_pickle import PAYLOADS, assert_never_ran, weights_with

RUN = [*QUICK, *GMP, "--num_epochs", "3"]
HAS_ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("paddle2onnx") is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    check(run("train.py", *RUN, "--model_path", root / "run"))
    formats = ["paddle", "sparse", "state_dict"] + (["onnx"] if HAS_ONNX else [])
    check(run("export.py", "--pruned_model", root / "run", "--output", root / "export", "--format", *formats))
    return root


def refresh_manifest(folder):
    """Rewrite manifest.json so every file's size and SHA-256 match what is there now."""
    path = os.path.join(folder, checkpoint.MANIFEST)
    manifest = json.load(open(path))
    for name in manifest["files"]:
        file = os.path.join(folder, name)
        manifest["files"][name] = {"size": os.path.getsize(file), "sha256": checkpoint.sha256_of(file)}
    json.dump(manifest, open(path, "w"))


def refresh_export_manifest(folder):
    """Rewrite export.json so every file's size and SHA-256 match what is there now."""
    path = os.path.join(folder, "export.json")
    manifest = json.load(open(path))
    for name in manifest["files"]:
        file = os.path.join(folder, name)
        manifest["files"][name], manifest["sha256"][name] = os.path.getsize(file), checkpoint.sha256_of(file)
    json.dump(manifest, open(path, "w"))


def poison_checkpoint(trained, tmp_path, file, payload):
    """A copy of the run whose epoch_2/FILE is replaced by `payload` (pickle or object .npz), manifest refreshed."""
    run_copy = tmp_path / "run"
    shutil.copytree(trained / "run", run_copy, symlinks=True)
    target = run_copy / "epoch_2" / file
    if file.endswith(".npz"):  # the real masks, the first one replaced by a pickled object
        entries = dict(np.load(target))
        first = next(name for name in entries if not name.startswith("__"))
        np.savez(target, **{**entries, first: np.array([payload], dtype=object)}, allow_pickle=True)
    else:
        with open(target, "wb") as f:
            pickle.dump(weights_with(payload), f, protocol=2)
    refresh_manifest(run_copy / "epoch_2")
    return run_copy


def assert_refused(result, marker, words):
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert all(w in errors[0] for w in words), errors[0]
    assert "Traceback" not in result.stderr
    assert_never_ran(marker)


# (the checkpoint file replaced, the command using it)
CHECKPOINT_PATHS = [
    ("model.pdparams", lambda ckpt, out: ("train.py", *RUN, "--checkpoint", ckpt / "epoch_2", "--model_path", out)),
    ("model.pdopt", lambda ckpt, out: ("train.py", *RUN, "--model_path", ckpt, "--resume")),
    ("model.pdparams", lambda ckpt, out: ("train.py", *RUN, "--pretrained_model", ckpt, "--model_path", out)),
    ("model.pdparams", lambda ckpt, out: ("evaluate.py", "--pruned_model", ckpt)),
    ("model.pdparams", lambda ckpt, out: ("export.py", "--pruned_model", ckpt, "--output", out)),
    ("masks.npz", lambda ckpt, out: ("evaluate.py", "--pruned_model", ckpt)),
]


# each load path with one of the payloads (every payload against the loader itself: test_safe_pickle.py)
@pytest.mark.parametrize(
    "file,command,kind",
    [(*path, kind) for path, kind in zip(CHECKPOINT_PATHS, ["os.system", "subprocess.Popen", "builtins.exec", "nested", "os.system", "os.system"])],
    ids=["checkpoint", "resume-pdopt", "pretrained-folder", "evaluate", "export", "masks-npz"],
)
def test_crafted_checkpoint_file_is_refused(trained, tmp_path, file, command, kind):
    refused_global, make = PAYLOADS[kind]
    marker = tmp_path / "ran"
    ckpt = poison_checkpoint(trained, tmp_path, file, make(marker))
    before = tree_snapshot(ckpt)
    result = run(*command(ckpt, tmp_path / "out"))
    if file.endswith(".npz"):  # an .npz is read with allow_pickle=False: the object array is never unpickled
        assert_refused(result, marker, [file, "pickle"])
    else:
        assert_refused(result, marker, [file, refused_global, "malicious"])
    assert tree_snapshot(ckpt) == before and not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("script,kind", [("train.py", "nested"), ("evaluate.py", "subprocess.Popen"), ("export.py", "os.system")])
def test_crafted_state_dict_is_refused(tmp_path, script, kind):
    refused_global, make = PAYLOADS[kind]
    marker = tmp_path / "ran"
    path = tmp_path / "resnet50_pretrained.pdparams"
    with open(path, "wb") as f:
        pickle.dump(weights_with(make(marker)), f, protocol=4)
    args = {
        "train.py": [*RUN, "--pretrained_model", path, "--model_path", tmp_path / "out"],
        "evaluate.py": ["--pruned_model", path, "--model", "LeNet", "--data", "fashion_mnist"],
        "export.py": ["--pruned_model", path, "--model", "LeNet", "--data", "fashion_mnist", "--output", tmp_path / "out"],
    }[script]
    assert_refused(run(script, *args), marker, [str(path), refused_global])
    assert not os.path.exists(tmp_path / "out")


def test_sparse_file_with_a_pickled_object_is_refused(trained, tmp_path):
    marker = tmp_path / "ran"
    good = dict(np.load(trained / "export" / "model.sparse.npz"))
    path = tmp_path / "model.sparse.npz"
    np.savez(path, **good, evil=np.array([PAYLOADS["os.system"][1](marker)], dtype=object), allow_pickle=True)
    for script in ("evaluate.py", "train.py"):
        args = ["--pruned_model", path] if script == "evaluate.py" else [*RUN, "--pretrained_model", path, "--model_path", tmp_path / "out"]
        assert_refused(run(script, *args), marker, [str(path), "pickle"])


def test_exported_state_dict_with_a_payload_next_to_export_json_is_refused(trained, tmp_path):
    """The state dict export.py writes is read through the same allow-list as a downloaded one."""
    shutil.copytree(trained / "export", tmp_path / "export")
    marker = tmp_path / "ran"
    with open(tmp_path / "export" / "model.pdparams", "wb") as f:
        pickle.dump(weights_with(PAYLOADS["builtins.exec"][1](marker)), f, protocol=4)
    refresh_export_manifest(tmp_path / "export")  # so the checksum is not what stops it
    assert_refused(run("evaluate.py", "--pruned_model", tmp_path / "export" / "model.pdparams"), marker, ["builtins.exec"])


def refused_in_process(main, args, capsys, *words):
    """main(args) in this process exits 2 with one error line holding every word, and no traceback."""
    try:
        status = run_cli(main, [str(a) for a in args])
    finally:
        paddle.disable_static()
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert all(str(w) in errors[0] for w in words), errors[0]
    return errors[0]


# what a broken JSON file may hold: cut short, the wrong kind of value, bad UTF-8, a number Python will not
# parse, nesting deeper than any parser's stack
BROKEN_JSON = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "a list": lambda raw: b"[1, 2]",
    "bad utf-8": lambda raw: b'{"format_version": "\xff"}',
    "huge integer": lambda raw: b'{"format_version": ' + b"9" * 5000 + b"}",
    "deep nesting": lambda raw: b"[" * 100_000 + b"]" * 100_000,
}
# one field per file with the wrong type or range, as a crafted file might have it
BAD_FIELD = {
    "manifest.json": lambda d: d["files"]["model.pdparams"].update(size=-1),
    "state.json": lambda d: d.update(epoch=-3),
    "export.json": lambda d: d["spec"].update(num_classes="ten"),
}


@pytest.mark.parametrize("how", [*BROKEN_JSON, "bad field"])
@pytest.mark.parametrize("name", ["manifest.json", "state.json", "export.json"])
def test_broken_json_file_is_one_line_naming_it(trained, tmp_path, capsys, name, how):
    folder = tmp_path / "copy"
    shutil.copytree(trained / ("export" if name == "export.json" else "run/epoch_2"), folder)
    path = folder / name
    if how == "bad field":
        content = json.loads(path.read_text())
        BAD_FIELD[name](content)
        path.write_text(json.dumps(content))
    else:
        path.write_bytes(BROKEN_JSON[how](path.read_bytes()))
    if name == "state.json":
        refresh_manifest(folder)  # so the checksum is not what stops it
    refused_in_process(evaluate.main, ["--pruned_model", folder], capsys, path)


def rewrite_npz(path, change):
    """Rewrite an .npz: `change(entries)` edits its {name: array} (the header decoded to a dict as 'header')."""
    entries = dict(np.load(path, allow_pickle=False))
    if "header" in entries:
        entries["header"] = json.loads(entries["header"].tobytes())
    change(entries)
    if "header" in entries:
        entries["header"] = np.frombuffer(json.dumps(entries["header"]).encode(), np.uint8)
    np.savez(path, **entries)


def first_row(entries, encoding="bitmask"):
    return next(row for row in entries["header"]["tensors"] if row["encoding"] == encoding)


CRAFTED_HEADERS = {
    "a list": lambda e: e.update(header=[e["header"]]),
    "tensors nested in an object": lambda e: e["header"].update(tensors={"t": e["header"]["tensors"][0]}),
    "negative offset": lambda e: first_row(e).update(offset=-1),
    "negative dimension": lambda e: first_row(e).update(shape=[-4, 2]),
    "unknown dtype": lambda e: first_row(e).update(dtype="|O"),
    "unknown encoding": lambda e: first_row(e).update(encoding="rle"),
    "unknown entry": lambda e: e.update({"values.|O": np.zeros((1, 3), np.uint8)}),
    "2^40 elements": lambda e: first_row(e).update(shape=[2**40]),
    "2^40 dense elements": lambda e: first_row(e, "dense").update(shape=[2**20, 2**20]),
    "values past the end": lambda e: first_row(e).update(nonzeros=10**9),
}


@pytest.mark.parametrize("how", CRAFTED_HEADERS)
def test_crafted_sparse_header_is_refused_before_decoding(trained, tmp_path, how):
    path = tmp_path / "model.sparse.npz"
    shutil.copy(trained / "export" / "model.sparse.npz", path)
    rewrite_npz(path, CRAFTED_HEADERS[how])
    with pytest.raises(CheckpointError) as refused:
        sparse_file.read(str(path))
    assert str(path) in str(refused.value)


def npy_bomb(elements):
    """A .npy entry whose header declares `elements` float32 values and which holds 16 bytes."""
    entry = io.BytesIO()
    npy.write_array_header_1_0(entry, {"descr": "<f4", "fortran_order": False, "shape": (elements,)})
    return entry.getvalue() + bytes(16)


@pytest.mark.parametrize("file", ["masks.npz", "model.sparse.npz"])
def test_array_declaring_more_than_its_file_holds_is_refused_before_allocating(trained, tmp_path, capsys, file):
    """An entry declaring 2^40 elements (4 TiB) was a MemoryError; a masks layout declaring them, too."""
    if file == "masks.npz":
        shutil.copytree(trained / "run", tmp_path / "run", symlinks=True)
        path, target = tmp_path / "run" / "epoch_2" / file, tmp_path / "run"
    else:
        shutil.copytree(trained / "export", tmp_path / "export")
        path = target = tmp_path / "export" / file
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("bomb.npy", npy_bomb(2**40))
    if file == "masks.npz":
        refresh_manifest(path.parent)
    refused_in_process(evaluate.main, ["--pruned_model", target], capsys, path, "declares shape [1099511627776]")
    if file == "masks.npz":  # the layout of the real masks, one of them said to be 2^40 weights
        shutil.copy(trained / "run" / "epoch_2" / file, path)
        rewrite_npz(path, lambda e: e.update(__layout__=np.frombuffer(json.dumps(
            {k: {"shape": [2**40] if i == 0 else v["shape"], "dtype": v["dtype"]} for i, (k, v) in enumerate(
                json.loads(e["__layout__"].tobytes()).items())}).encode(), np.uint8)))
        refresh_manifest(path.parent)
        refused_in_process(evaluate.main, ["--pruned_model", target], capsys, path, "needs 137438953472 packed bytes")


def model_files(trained):
    folder = trained / "export"
    return [os.path.basename(f) for f in runtimes.inference_model_files(str(folder))] + (["model.onnx"] if HAS_ONNX else [])


@pytest.mark.parametrize("checksums", ["kept", "refreshed"])
def test_truncated_or_crafted_model_files_are_one_line_naming_them(trained, tmp_path, capsys, checksums):
    """Cut in half: export.json's sizes catch it; with export.json rewritten to match, what Paddle or ONNX Runtime
    raise while reading it becomes the one line."""
    for name in model_files(trained):
        folder = tmp_path / f"{name}-{checksums}"
        shutil.copytree(trained / "export", folder)
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if checksums == "refreshed":
            refresh_export_manifest(folder)
        target = folder / name if name.endswith(".onnx") else folder
        refused_in_process(evaluate.main, ["--pruned_model", target], capsys, name, folder)


def test_files_named_outside_their_folder_are_refused(trained, tmp_path, capsys):
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(1024))
    shutil.copytree(trained / "run" / "epoch_2", tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    manifest["files"]["../secret"] = {"size": 1024, "sha256": checkpoint.sha256_of(secret)}
    (tmp_path / "ckpt" / "manifest.json").write_text(json.dumps(manifest))
    refused_in_process(evaluate.main, ["--pruned_model", tmp_path / "ckpt"], capsys, "names '../secret', which is not a file inside")
    shutil.copytree(trained / "export", tmp_path / "export")
    (tmp_path / "export" / "model.pdparams").unlink()
    (tmp_path / "export" / "model.pdparams").symlink_to(secret)  # the state dict export.json lists, now a link out
    refused_in_process(evaluate.main, ["--pruned_model", tmp_path / "export" / "model.pdparams"], capsys,
                       "names 'model.pdparams', which is not a file inside")


@pytest.mark.skipif(not HAS_ONNX, reason="paddle2onnx and onnxruntime are not installed in this environment")
@pytest.mark.parametrize("location", ["../secret.bin", "/abs/secret.bin", "link.bin"])
def test_onnx_external_data_outside_its_folder_is_refused(trained, tmp_path, capsys, location):
    import onnx

    (tmp_path / "secret.bin").write_bytes(np.arange(4096, dtype=np.float32).tobytes())
    shutil.copytree(trained / "export", tmp_path / "export")
    path = tmp_path / "export" / "model.onnx"
    (tmp_path / "export" / "link.bin").symlink_to(tmp_path / "secret.bin")
    model = onnx.load(path)
    tensor = max((a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"),
                 key=lambda t: len(t.raw_data))
    del tensor.external_data[:]
    for key, value in (("location", location.replace("/abs", str(tmp_path))), ("offset", "0"), ("length", str(len(tensor.raw_data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(model, path)
    refresh_export_manifest(tmp_path / "export")
    refused_in_process(evaluate.main, ["--pruned_model", path], capsys, path, "which is not a file inside")


def test_state_dict_of_another_dtype_is_one_line_naming_the_tensor(trained, tmp_path, capsys):
    """A zoo-style file saved as float64 matched every shape and ended in a traceback inside Paddle."""
    path = tmp_path / "float64.pdparams"
    arrays = weights.read_state_dict(str(trained / "export" / "model.pdparams"))
    paddle.save({key: value.astype("float64") for key, value in arrays.items()}, str(path))
    refused_in_process(evaluate.main, ["--pruned_model", path, "--model", "LeNet", "--data", "fashion_mnist"], capsys,
                       path, "holds float64 values, the model's are float32")


BROKEN_CONFIGS = {
    "deep.json": b"[" * 100_000 + b"]" * 100_000,
    "deep.yaml": b"conv1.0.weight: " + b"[" * 100_000 + b"]" * 100_000,
    "utf8.json": b'{"conv1.0.weight": "\xff"}',
    "huge.json": b'{"conv1.0.weight": ' + b"9" * 5000 + b"}",
    "huge.yaml": b"conv1.0.weight: " + b"9" * 5000,
}


@pytest.mark.parametrize("name", BROKEN_CONFIGS)
def test_broken_sparsity_config_is_one_line_naming_it(tmp_path, capsys, name):
    if name.endswith(".yaml") and importlib.util.find_spec("yaml") is None:
        pytest.skip("pyyaml is not installed here")
    path = tmp_path / name
    path.write_bytes(BROKEN_CONFIGS[name])
    refused_in_process(train.main, [*RUN, "--sparsity_config", path, "--model_path", tmp_path / "out"], capsys, path)
    assert not os.path.exists(tmp_path / "out")

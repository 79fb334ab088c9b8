"""Every command-line path that reads weights refuses a crafted file before it runs, with one error line and exit 2.

A real checkpoint is copied and one of its files replaced by a malicious pickle (or an .npz holding a
pickled object); its manifest is rewritten with matching checksums, so the checksum check cannot be what
stops it. The payload would create a marker file: it must not exist afterwards.
"""
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from suite.artefacts import checkpoint
from tests.scripts import GMP, QUICK, check, run, tree_snapshot
from tests.test_safe_pickle import PAYLOADS, assert_never_ran, weights_with

RUN = [*QUICK, *GMP, "--num_epochs", "3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    check(run("train.py", *RUN, "--model_path", root / "run"))
    check(run("export.py", "--pruned_model", root / "run", "--output", root / "export", "--format", "sparse", "state_dict"))
    return root


def refresh_manifest(folder):
    """Rewrite manifest.json so every file's size and SHA-256 match what is there now."""
    path = os.path.join(folder, checkpoint.MANIFEST)
    manifest = json.load(open(path))
    for name in manifest["files"]:
        file = os.path.join(folder, name)
        manifest["files"][name] = {"size": os.path.getsize(file), "sha256": checkpoint._sha256(file)}
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
    assert_refused(run("evaluate.py", "--pruned_model", tmp_path / "export" / "model.pdparams"), marker, ["builtins.exec"])

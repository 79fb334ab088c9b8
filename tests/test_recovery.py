"""Reliability: bad input refused before any work, kill -9 at any point resumes exactly, faults keep the last good checkpoint."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

import train
from sparsity.ops import pir_enabled
from suite.artefacts import checkpoint
from suite.errors import CheckpointError, run_cli
from tests.scripts import (
    GMP,
    QUICK,
    ROOT,
    check,
    error_lines,
    run,
    saved_arrays,
    start,
    tree_snapshot,
)

RUN = [*QUICK, *GMP, "--num_epochs", "3", "--log_period", "5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch GMP run, keeping only the newest 2 checkpoints."""
    path = tmp_path_factory.mktemp("reference") / "out"
    check(run("train.py", *RUN, "--model_path", path, "--keep_checkpoints", "2"))
    return path


def assert_same_final_state(a, b, epoch=2):
    x, y = saved_arrays(os.path.join(a, f"epoch_{epoch}")), saved_arrays(os.path.join(b, f"epoch_{epoch}"))
    assert x.keys() == y.keys()
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_keep_checkpoints_and_latest(reference):
    assert sorted(n for n in os.listdir(reference) if n.startswith("epoch_")) == ["epoch_1", "epoch_2"]
    assert os.readlink(reference / "latest") == "epoch_2"
    assert checkpoint.verify(reference / "latest")["epoch"] == 2
    assert not [n for n in os.listdir(reference) if n.startswith(".tmp-")]


def kill_when(proc, text):
    """Read a started run's output until a line holds `text`, then kill -9 it."""
    for line in proc.stdout:
        if text in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before printing {text!r}"


def test_kill_resume_kill_resume_matches_uninterrupted_run(reference, tmp_path):
    """A checkpoint written by a resumed run resumes too (its LR kept its shape), any number of times, bit for bit."""
    out = tmp_path / "out"
    kill_when(start("train.py", *RUN, "--model_path", out), "epoch 1 batch 25/50")  # after epoch 0's checkpoint
    assert os.readlink(out / "latest") == "epoch_0"
    kill_when(start("train.py", *RUN, "--model_path", out, "--resume"), "epoch 2 batch 25/50")
    assert os.readlink(out / "latest") == "epoch_1"  # written by the resumed run
    resumed = check(run("train.py", *RUN, "--model_path", out, "--resume"))
    assert "resumed from" in resumed.stdout and "epoch 1 done" in resumed.stdout
    assert_same_final_state(reference, out)


PAUSE_BEFORE_TRAINING = """
import time
import suite.training.loop as loop
def train_epoch(*args, **kwargs):  # the run holds its folder, has written nothing yet, and waits to be killed
    print("paused", flush=True)
    time.sleep(600)
loop.train_epoch = train_epoch
"""


def test_second_run_on_a_model_path_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(reference, tmp_path):
    """Two runs started on one --model_path: the second (fresh or --resume) is refused, naming the first's pid;
    once the first is killed, its lock is taken over by the next run."""
    out = tmp_path / "out"
    first = start("train.py", *RUN, "--model_path", out, wrapper=PAUSE_BEFORE_TRAINING)
    try:
        for line in first.stdout:
            if "paused" in line:
                break
        before = tree_snapshot(out)
        for extra in ([], ["--resume"]):
            second = run("train.py", *RUN, "--model_path", out, *extra)
            errors = error_lines(second.stderr)
            assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
            assert f"--model_path {out} is in use by another run (pid {first.pid}" in errors[0]
        assert tree_snapshot(out) == before
    finally:
        first.kill()
        first.wait(timeout=60)
    assert (out / ".lock").read_text().strip() == str(first.pid)  # the killed run's lock file is left behind
    resumed = check(run("train.py", *RUN, "--model_path", out, "--resume"))
    assert "starting from scratch" in resumed.stdout and not os.path.exists(out / ".lock")
    assert_same_final_state(reference, out)


KILL_DURING_SAVE = """
import os, signal
import suite.artefacts.checkpoint as ckpt
real_rename = os.rename
def rename(src, dst, *a, **k):
    if ".tmp-epoch_1" in str(src):  # epoch 1's files are written, the rename never happens
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(src, dst, *a, **k)
ckpt.os.rename = rename
"""


def test_kill_during_checkpoint_save_keeps_previous_checkpoint(reference, tmp_path):
    out = tmp_path / "out"
    proc = start("train.py", *RUN, "--model_path", out, wrapper=KILL_DURING_SAVE)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert os.readlink(out / "latest") == "epoch_0" and not os.path.exists(out / "epoch_1")
    (staged,) = [n for n in os.listdir(out) if n.startswith(".tmp-epoch_1")]  # the save, written but never renamed
    assert checkpoint.verify(out)["epoch"] == 0  # latest still loads
    with pytest.raises(CheckpointError, match="a staging folder a write that did not finish left behind"):
        checkpoint.verify(out / staged)  # complete as it may look, it is never read as a checkpoint
    check(run("train.py", *RUN, "--model_path", out, "--resume"))
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    assert_same_final_state(reference, out)


DISK_FULL_AT_EPOCH_1 = """
import errno, pickle
import suite.artefacts.checkpoint as ckpt
def dump(value, file, *a, **k):  # the disk fills up while epoch 1's files are written
    if ".tmp-epoch_1" in file.name:
        raise OSError(errno.ENOSPC, "No space left on device")
    return pickle.dump(value, file, *a, **k)
ckpt.pickle = type("pickle", (), {"dump": staticmethod(dump)})
"""


def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path):
    out = tmp_path / "out"
    proc = start("train.py", *RUN, "--model_path", out, wrapper=DISK_FULL_AT_EPOCH_1)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 4, output[-2000:]
    assert "error: could not write the checkpoint of epoch 1" in output and "No space left on device" in output
    assert os.readlink(out / "latest") == "epoch_0" and checkpoint.verify(out)["epoch"] == 0
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


DISK_FULL_WHEN_PLOTTING = """
import suite.analysis.plots as plots
from tests.scripts import limit_file_size
real_training_curves = plots.training_curves
def training_curves(*args, **kwargs):
    limit_file_size(2048)  # from here on no file may grow past 2 KB: curves.png cannot be written
    return real_training_curves(*args, **kwargs)
plots.training_curves = training_curves
"""


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed here")
def test_full_disk_at_the_plotting_step_is_one_line_and_leaves_no_partial_png(tmp_path):
    out = tmp_path / "out"
    proc = start("train.py", *QUICK, "--train_subset", "640", "--pruning_strategy", "none", "--num_epochs", "1",
                 "--model_path", out, wrapper=DISK_FULL_WHEN_PLOTTING)
    output, _ = proc.communicate(timeout=300)
    errors = error_lines(output)
    assert proc.returncode == 4 and len(errors) == 1 and "Traceback" not in output, output[-2000:]
    assert f"could not write the plot {out / 'curves.png'} (File too large)" in errors[0]
    assert sorted(os.listdir(out)) == ["epoch_0", "latest"] and checkpoint.verify(out)["epoch"] == 0


NAN_DATA_IN_EPOCH_1 = """
import numpy as np
import suite.data as data
real_batches = data.batches
def batches(dataset, batch_size, shuffle, seed=0, epoch=0, *a, **k):
    for images, labels in real_batches(dataset, batch_size, shuffle, seed, epoch, *a, **k):
        yield (images * np.nan if shuffle and epoch == 1 else images), labels
data.batches = batches
"""


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "out"
    proc = start("train.py", *RUN, "--model_path", out, wrapper=NAN_DATA_IN_EPOCH_1)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, output[-2000:]
    # ReLU hides NaN inputs from the loss here, so it is the weights check that stops the run
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not finite" in errors[0] and "epoch 1" in errors[0] and "last good checkpoint is kept" in errors[0]
    assert os.readlink(out / "latest") == "epoch_0" and checkpoint.verify(out)["epoch"] == 0
    assert not os.path.exists(out / "epoch_1")


def corrupt(folder, how):
    path = os.path.join(folder, "model.pdparams")
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


BAD_INPUTS = [
    (["--ratio", "1.5"], "--ratio must be a number in [0, 1), got 1.5"),
    (["--pruning_strategy", "base", "--pruning_mode", "threshold", "--threshold", "-1"], "--threshold must be a number >= 0, got -1.0"),
    (["--pruning_strategy", "base", "--pruning_mode", "threshold", "--local_sparsity", "1"], "--local_sparsity"),
    (["--sparse_block", "2", "0"], "--sparse_block must be two positive integers [m, n] such as [1, 1] or [2, 1], got [2, 0]"),
    (["--sparse_block", "2"], "--sparse_block must be two positive integers [m, n]"),
    (["--granularity", "channel", "--sparse_block", "2", "1"], "--sparse_block 2 1 prunes blocks; it does not go with --granularity channel"),
    (["--pruning_strategy", "base", "--granularity", "random", "--pruning_mode", "threshold"], "scores are not magnitudes"),
    (["--sparsity_config", "{missing}"], "missing"),
    (["--pruning_steps", "0"], "--pruning_steps 0 must be >= 1"),
    (["--pruning_steps", "500"], "--pruning_steps 500 exceeds the 100 iterations of --pruning_epochs 2"),
    (["--pruning_mode", "threshold"], "--pruning_mode threshold cannot be used with --pruning_strategy gmp"),
    (["--stable_epochs", "-1"], "--stable_epochs -1 must be >= 0"),
    (["--pruning_strategy", "base", "--pruning_mode", "nm", "--nm_pattern", "4", "4"], "--nm_pattern must be two integers [n, m] with 1 <= n < m (keep n of every m), such as [2, 4]; got [4, 4]"),
    (["--pruning_strategy", "base", "--pruning_mode", "nm", "--sparse_block", "2", "1"], "leave --sparse_block at 1 1"),
    (["--pruning_mode", "nm"], "--pruning_mode nm cannot be used with --pruning_strategy gmp"),
    (["--initial_ratio", "0.9"], "--initial_ratio 0.9 must be in [0, --ratio 0.75]"),
    (["--model", "VGG99"], "--model 'VGG99' is not a known model"),
    (["--data", "svhn"], "--data 'svhn' is not a known dataset"),
    (["--data", "mnist", "--data_dir", "{empty}"], "MNIST files not found in"),
    (["--data", "cifar10", "--data_dir", "{empty}"], "CIFAR-10 archive not found"),
    (["--last_epoch", "3"], "--last_epoch needs --checkpoint"),
    (["--checkpoint", "{missing}"], "is not a folder"),
    (["--model_path", "{file}"], "exists and is not a folder"),
    (["--use_gpu", "True"], "--use_gpu True but this Paddle has no CUDA device"),
    (["--checkpoint", "{ckpt}", "--model", "MLP"], "is for --model lenet, this run has --model mlp"),
    (["--checkpoint", "{ckpt}", "--last_epoch", "0"], "--last_epoch 0 but"),
    (["--checkpoint", "{truncated}"], "manifest says"),
    (["--checkpoint", "{flipped}"], "fails its SHA-256 check"),
    (["--pretrained_model", "{flipped}"], "fails its SHA-256 check"),
    ([], "already holds a run"),  # a fresh run into an existing run's folder
    (["--batch_size_for_validation", "0"], "--batch_size_for_validation 0 must be >= 1"),
    (["--step_epochs", "60", "30"], "--step_epochs 60 30 must be positive and ascending"),
    (["--num_epochs", "1"], "exceed --num_epochs 1"),
    (["--model", "ResNet18", "--scale", "0.5", "--model_path", "{new}"], "does not support a width multiplier"),
    (["--prune_params_type", "conv1x1_only", "--model_path", "{new}"], "no parameter to prune"),
    (["--pretrained_model", "{ckpt}", "--model", "MLP", "--model_path", "{new}"], "does not match this model"),
    (["--resume", "--model_path", "{broken}"], "no checkpoint at"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[m.split(" ")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_before_any_work(reference, tmp_path, capsys, args, message):
    if "--use_gpu" in args and paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder")
    for name, how in (("truncated", "truncate"), ("flipped", "flip")):
        shutil.copytree(reference / "epoch_1", tmp_path / name)
        corrupt(tmp_path / name, how)
    (tmp_path / "broken").mkdir()
    os.symlink("epoch_7", tmp_path / "broken" / "latest")  # names a checkpoint that is gone
    places = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "file": tmp_path / "file",
              "ckpt": reference / "epoch_1", "truncated": tmp_path / "truncated", "flipped": tmp_path / "flipped",
              "new": tmp_path / "new", "broken": tmp_path / "broken"}
    args = [a.format(**places) if a.startswith("{") else a for a in args]
    model_path = tmp_path / "out"
    shutil.copytree(reference, model_path, symlinks=True)  # an existing run that must stay untouched
    if "--model_path" not in args:
        args += ["--model_path", str(model_path)]
    before = tree_snapshot(model_path)
    try:
        assert run_cli(train.main, [*RUN, *args]) == 2
    finally:
        paddle.disable_static()  # some refusals come after the program is being built
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert tree_snapshot(model_path) == before
    assert not os.path.exists(tmp_path / "new")


def test_malformed_flag_value_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main([*RUN, "--batch_size", "abc"])
    assert stop.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: argument --batch_size: invalid int value")


def test_checkpoint_of_the_other_ir_is_refused(reference, tmp_path):
    other = {"FLAGS_enable_pir_api": "1" if not pir_enabled() else "0"}
    result = run("train.py", *RUN, "--checkpoint", reference / "epoch_1", "--model_path", tmp_path / "out", env=other)
    assert result.returncode == 2 and "IR" in result.stderr and "FLAGS_enable_pir_api" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def make_imagenet_folder(root, bad_line=None):
    """Six real 40x30 JPEGs in two classes, listed for train and val; optionally one bad line in train."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        path = root / f"class{i % 2}" / f"img{i}.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
        lines.append(f"class{i % 2}/img{i}.jpeg {i % 2}")
    (root / "val_list.txt").write_text("\n".join(lines) + "\n")
    train_lines = lines[:2] + ([bad_line] if bad_line else []) + lines[2:]
    (root / "train_list.txt").write_text("\n".join(train_lines) + "\n")


def test_imagenet_bad_sample_is_named_or_skipped_and_counted(tmp_path):
    make_imagenet_folder(tmp_path / "data", bad_line="class0/gone.jpeg 0")
    args = ["--data", "imagenet", "--data_dir", tmp_path / "data", "--model", "LeNet", "--image_size", "32",
            "--batch_size", "2", "--num_epochs", "1", "--num_workers", "0", "--pruning_strategy", "none", "--model_path", tmp_path / "out"]
    refused = run("train.py", *args)
    assert refused.returncode == 2
    assert "train_list.txt:3" in refused.stderr and "gone.jpeg" in refused.stderr
    assert not os.path.exists(tmp_path / "out")
    skipped = check(run("train.py", *args, "--skip_bad_samples"))
    assert "skipped 1 bad sample" in skipped.stdout


def test_resume_state_records_what_it_needs(reference):
    state = json.load(open(reference / "epoch_2" / "state.json"))
    assert state["pruner"]["iteration"] == 150 and state["pruner"]["mask_ratio"] == pytest.approx(0.75)
    assert state["lr"]["last_epoch"] == 150 and state["flags"]["model"] == "lenet"
    assert state["ir"] == ("pir" if pir_enabled() else "legacy")


def test_nan_loss_from_a_runaway_learning_rate(tmp_path):
    result = run("train.py", *[a if a != "0.05" else "1e30" for a in RUN], "--model_path", tmp_path / "out")
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss is nan at epoch 0" in errors[0] and "lower --lr" in errors[0]
    assert not os.path.exists(tmp_path / "out")


def test_resume_with_dropout_equals_uninterrupted_run(tmp_path):
    """MobileNetV2 has dropout: its masks must come out the same in a resumed epoch as in an uninterrupted one."""
    args = ["--data", "fashion_mnist", "--model", "mobilenet_v2", "--scale", "0.25", "--train_subset", "640", "--test_subset", "200",
            "--batch_size", "64", "--lr", "0.05", "--num_workers", "0", "--log_period", "100", "--num_epochs", "2", *GMP[:4],
            "--pruning_epochs", "1", "--tunning_epochs", "1", "--pruning_steps", "2"]
    check(run("train.py", *args, "--model_path", tmp_path / "straight"))
    check(run("train.py", *args, "--checkpoint", tmp_path / "straight" / "epoch_0", "--last_epoch", "0", "--model_path", tmp_path / "resumed"))
    assert_same_final_state(tmp_path / "straight", tmp_path / "resumed", epoch=1)


BROKEN_PIPE_CLI = """
import os, sys
from suite.errors import run_cli

def talk(argv):  # a report far longer than a pipe holds
    for i in range(200000):
        print("layer", i)

def other_pipe(argv):  # a pipe that is not stdout breaks: a real error, reported as one
    read, write = os.pipe()
    os.close(read)
    os.write(write, b"x")

sys.exit(run_cli(talk if sys.argv[1] == "stdout" else other_pipe))
"""


def test_output_cut_short_by_its_reader_ends_quietly():
    """`evaluate.py ... | head`: when the reader of stdout goes away, the command stops with 141 and no traceback."""
    child = subprocess.Popen([sys.executable, "-c", BROKEN_PIPE_CLI, "stdout"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.read(100)
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141 and stderr == ""
    other = subprocess.run([sys.executable, "-c", BROKEN_PIPE_CLI, "other"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert other.returncode == 1 and "BrokenPipeError" in other.stderr

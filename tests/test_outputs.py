"""Every file a command line writes is staged (written beside its place, flushed, renamed): a full disk, a kill or a
second writer leaves the previous file or nothing, never an empty or truncated one; what a killed writer left
staged is removed by the next writer and never read as a result.

A full disk is the kernel's own refusal: RLIMIT_FSIZE makes every write past a few KB fail (EFBIG), whatever
writes it (Python, NumPy, matplotlib, Paddle's C++)."""
import importlib.util
import os
import signal

import paddle
import pytest

from suite.artefacts import lock, staging
from suite.errors import ConfigError, WriteError, run_cli
from tests.scripts import QUICK, check, error_lines, run, start

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed here")


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(staging.PREFIX)]


def refused_for_disk(result, path):
    """Exit 4 and one error line naming PATH and the write failure, no traceback."""
    errors = error_lines(result.stderr)
    assert result.returncode == 4 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert str(path) in errors[0] and "File too large" in errors[0], errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    check(run("train.py", *QUICK, "--train_subset", "640", "--pruning_strategy", "base", "--ratio", "0.5", "--num_epochs", "1",
              "--model_path", root / "run"))
    return root / "run"


def test_evaluate_json_on_a_full_disk_keeps_the_previous_file(trained, tmp_path):
    report = tmp_path / "eval.json"
    check(run("evaluate.py", "--pruned_model", trained, "--test_subset", "200", "--json", report))
    before = report.read_bytes()
    full = run("evaluate.py", "--pruned_model", trained, "--test_subset", "200", "--json", report, max_file_bytes=1024)
    assert report.read_bytes() == before and len(before) > 1024 and not leftovers(tmp_path)
    refused_for_disk(full, report)
    assert "the previous version is kept" in full.stderr


@needs_matplotlib
def test_evaluate_plots_on_a_full_disk_keep_the_previous_pngs(trained, tmp_path):
    plots = tmp_path / "plots"
    check(run("evaluate.py", "--pruned_model", trained, "--test_subset", "200", "--plots", plots))
    before = {name: (plots / name).read_bytes() for name in os.listdir(plots)}
    full = run("evaluate.py", "--pruned_model", trained, "--test_subset", "200", "--plots", plots, max_file_bytes=4096)
    assert {name: (plots / name).read_bytes() for name in os.listdir(plots)} == before and len(before) == 2
    refused_for_disk(full, plots / "layer_sparsity.png")


def test_export_to_a_full_or_unwritable_place_is_one_line_and_leaves_nothing(trained, tmp_path):
    full = run("export.py", "--pruned_model", trained, "--output", tmp_path / "out", "--format", "sparse", "state_dict",
               max_file_bytes=4096)
    refused_for_disk(full, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    unwritable = run("export.py", "--pruned_model", trained, "--output", tmp_path / "a_file" / "out", "--format", "sparse")
    errors = error_lines(unwritable.stderr)
    assert unwritable.returncode == 4 and len(errors) == 1 and "Traceback" not in unwritable.stderr, unwritable.stderr[-2000:]
    assert f"could not write the export to {tmp_path / 'a_file' / 'out'}" in errors[0]


@pytest.mark.skipif(importlib.util.find_spec("visualdl") is None, reason="visualdl is not installed here")
def test_unwritable_log_dir_is_one_line_and_leaves_no_model_path(tmp_path, capsys):
    import train

    (tmp_path / "a_file").write_text("not a folder")
    try:
        status = run_cli(train.main, [*QUICK, "--train_subset", "640", "--pruning_strategy", "none", "--num_epochs", "1",
                                      "--model_path", str(tmp_path / "run"), "--log_dir", str(tmp_path / "a_file" / "vdl")])
    finally:
        paddle.disable_static()
    errors = error_lines(capsys.readouterr().err)
    assert status == 4 and errors == [f"error: could not make --log_dir {tmp_path / 'a_file' / 'vdl'} (Not a directory); "
                                      "pass a folder that can be written"]
    assert not os.path.exists(tmp_path / "run")  # made for the run under its lock, removed with it


KILL_WHEN_WRITING = """
import os, signal
import {module} as target
def killed(*args, **kwargs):  # killed halfway through, while its files are staged
    os.kill(os.getpid(), signal.SIGKILL)
target.{function} = killed
"""


@pytest.mark.parametrize("script,args,module,function", [
    ("export.py", ["--format", "paddle", "sparse"], "suite.artefacts.sparse_file", "encode"),
    ("sensitivity.py", ["--ratios", "0.5", "--val_subset", "100"], "suite.analysis.plots", "sensitivity_curves"),
], ids=["export", "sensitivity"])
def test_what_a_killed_run_left_staged_is_never_read_and_the_next_run_removes_it(trained, tmp_path, script, args, module, function):
    source = "--pruned_model" if script == "export.py" else "--pretrained_model"
    command = [source, trained, "--output", tmp_path / "out", *args]
    killed = start(script, *command, wrapper=KILL_WHEN_WRITING.format(module=module, function=function))
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    (left,) = leftovers(tmp_path)
    assert left == f"{staging.PREFIX}out-{killed.pid}" and not os.path.exists(tmp_path / "out")
    refused = run("evaluate.py", "--pruned_model", tmp_path / left)
    assert refused.returncode == 2 and "a staging folder a write that did not finish left behind" in refused.stderr
    check(run(script, *command))
    assert os.listdir(tmp_path) == ["out"]


def test_a_failed_write_keeps_the_previous_file_and_the_staged_one_goes(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("the previous report")
    with pytest.raises(WriteError, match=f"could not write --json {path} .No space left on device.; the previous version is kept"):
        with staging.staged_file(path, "--json") as staged:
            open(staged, "w").write("half a rep")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "the previous report" and os.listdir(tmp_path) == ["report.json"]


def test_leftovers_of_live_writers_are_kept_and_a_replace_cut_short_is_undone(tmp_path):
    live, dead = os.getppid(), 2**22 + 7  # pid_max is at most 2**22: no process has the second
    for name in (f"{staging.PREFIX}a-{live}", f"{staging.PREFIX}a-{dead}", f"{staging.PREFIX}b-{dead}.old"):
        (tmp_path / name).mkdir()
    (tmp_path / f"{staging.PREFIX}b-{dead}.old" / "checkpoint").write_text("the only copy")
    staging.remove_leftovers(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [f"{staging.PREFIX}a-{live}", "b"]  # b was moved aside, never replaced
    assert (tmp_path / "b" / "checkpoint").read_text() == "the only copy"


def test_a_second_writer_of_one_folder_fails_instead_of_replacing_the_first(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(WriteError, match="could not write the export to"):
        with staging.staged_folder(out, "the export to") as first:
            (tmp_path / "out").mkdir()  # another export got there first
            (tmp_path / "out" / "model.sparse.npz").write_text("the other export")
            open(os.path.join(first, "model.sparse.npz"), "w").write("this export")
    assert (out / "model.sparse.npz").read_text() == "the other export" and os.listdir(tmp_path) == ["out"]


def test_a_folder_lock_names_its_holder_and_goes_with_it(tmp_path):
    folder = tmp_path / "run"
    held = lock.acquire(folder, "--model_path run")
    with pytest.raises(ConfigError, match=rf"--model_path run is in use by another run \(pid {os.getpid()}, holding"):
        lock.acquire(folder, "--model_path run")  # flock conflicts between two opens, even in one process
    held.release()
    assert not os.path.exists(folder)  # made for the run, which wrote nothing there
    folder.mkdir()
    (folder / lock.LOCK_FILE).write_text(f"{2**22 + 7}\n")  # left by a killed run: no process holds it
    with lock.acquire(folder, "--model_path run"):
        assert (folder / lock.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert os.listdir(folder) == []

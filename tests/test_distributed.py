"""Data-parallel training with paddle.distributed.launch: 2 CPU processes (gloo), as on 2 GPUs."""
import os
import re
import subprocess
import sys

import numpy as np

from tests.scripts import GMP, QUICK, ROOT, check, error_lines, run, saved_arrays

SMALL = [*QUICK, "--train_subset", "1280", "--batch_size", "32", "--log_period", "10"]
GMP_SHORT = [*GMP[:4], "--stable_epochs", "0", "--pruning_epochs", "1", "--tunning_epochs", "1", "--pruning_steps", "5", "--initial_ratio", "0.2"]


def launch(log_dir, *args, env=None):
    """python -m paddle.distributed.launch --nproc_per_node 2 train.py ARGS; returns the two worker logs."""
    result = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir), "train.py", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )
    logs = [open(os.path.join(log_dir, f"workerlog.{r}")).read() for r in range(2) if os.path.exists(os.path.join(log_dir, f"workerlog.{r}"))]
    assert result.returncode == 0, f"launch exit {result.returncode}\n{result.stdout[-2000:]}\n" + "\n".join(log[-3000:] for log in logs)
    return logs


def digests(log):
    return re.findall(r"epoch (\d+) weights\+masks sha256 ([0-9a-f]+)", log)


def test_ranks_hold_identical_weights_and_masks_and_differ_without_all_reduce(tmp_path):
    args = [*SMALL, *GMP_SHORT, "--num_epochs", "2"]
    logs = launch(tmp_path / "log", *args, "--model_path", tmp_path / "out")
    assert len(digests(logs[0])) == 2 and digests(logs[0]) == digests(logs[1])
    assert "2 card(s)" in logs[0] and "[rank 1]" in logs[1]
    # every rank ended at the target sparsity with the same masks; only rank 0 wrote checkpoints
    assert "pruned 0.7500" in logs[0] and "saved" in logs[0] and "saved" not in logs[1]
    apart = launch(tmp_path / "log_apart", *args, "--model_path", tmp_path / "apart", env={"SUITE_SKIP_GRAD_ALLREDUCE": "1"})
    assert digests(apart[0]) != digests(apart[1])  # the check above can fail


def test_two_ranks_match_one_rank_on_the_combined_batch(tmp_path):
    """No BatchNorm (MLP): 2 ranks x batch 32 take the same optimizer steps as 1 rank x batch 64."""
    common = [*QUICK, "--model", "MLP", "--train_subset", "1280", "--pruning_strategy", "none", "--num_epochs", "2"]
    launch(tmp_path / "log", *common, "--batch_size", "32", "--model_path", tmp_path / "two")
    check(run("train.py", *common, "--batch_size", "64", "--model_path", tmp_path / "one"))
    two, one = saved_arrays(tmp_path / "two" / "latest"), saved_arrays(tmp_path / "one" / "latest")
    assert two.keys() == one.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert any(not np.array_equal(one[n], saved_arrays(tmp_path / "one" / "epoch_0")[n]) for n in one)


def test_rank0_checkpoint_resumes_a_two_rank_run(tmp_path):
    args = [*SMALL, *GMP_SHORT, "--num_epochs", "2"]
    straight = launch(tmp_path / "log", *args, "--model_path", tmp_path / "straight")
    resumed = launch(tmp_path / "log2", *args, "--checkpoint", tmp_path / "straight" / "epoch_0", "--last_epoch", "0", "--model_path", tmp_path / "resumed")
    assert digests(resumed[0])[-1] == digests(straight[0])[-1] == digests(resumed[1])[-1]
    a, b = saved_arrays(tmp_path / "straight" / "epoch_1"), saved_arrays(tmp_path / "resumed" / "epoch_1")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # a different number of cards is refused before anything is written
    single = run("train.py", *args, "--checkpoint", tmp_path / "straight" / "epoch_0", "--model_path", tmp_path / "single")
    assert single.returncode == 2 and "resume with the same number of cards" in single.stderr
    assert not os.path.exists(tmp_path / "single")


HOLD_LOCK = """
import sys, time
from suite.artefacts import lock
held = lock.acquire(sys.argv[1], "the folder")
print("held", flush=True)
time.sleep(600)
"""


def test_every_rank_stops_when_rank_0_cannot_take_the_model_path(tmp_path):
    """Only rank 0 writes, so only it takes --model_path's lock; refused, it tells every rank, and all stop at once."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run(
            [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"), "train.py",
             *SMALL, *GMP_SHORT, "--num_epochs", "2", "--model_path", str(tmp_path / "out")],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    errors = [error_lines(open(tmp_path / "log" / f"workerlog.{rank}").read()) for rank in range(2)]
    assert result.returncode != 0 and [len(e) for e in errors] == [1, 1], errors
    assert f"is in use by another run (pid {holder.pid}" in errors[0][0]
    assert "rank 0 could not take --model_path" in errors[1][0]
    assert os.listdir(tmp_path / "out") == [".lock"]  # the holder's; nothing written


def test_ranks_together_see_the_single_process_batches():
    from suite import data

    dataset = data.load_dataset("fashion_mnist", "train", subset=256)
    shards = [list(data.batches(dataset, 32, True, seed=3, epoch=1, rank=r, nranks=2)) for r in range(2)]
    whole = list(data.batches(dataset, 64, True, seed=3, epoch=1))
    assert len(whole) == len(shards[0]) == len(shards[1]) == 4
    for step, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[step][0] for s in shards]), images)
        np.testing.assert_array_equal(np.concatenate([s[step][1] for s in shards]), labels)

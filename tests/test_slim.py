"""Channel slimming end to end: train.py --granularity channel, slim.py, then evaluate.py, export.py and
train.py --pretrained_model on the slim model; every refusal is one line and writes nothing."""
import json
import os

import numpy as np
import pytest

from suite.artefacts import checkpoint, safe_pickle
from tests.scripts import GMP, QUICK, check, run, tree_snapshot

CHANNELS = ["--granularity", "channel", "--target_flops", "0.5", "--channel_multiple", "4"]
GMP_PHASES = [flag for i, flag in enumerate(GMP) if "--ratio" not in GMP[max(i - 1, 0): i + 1]]  # the ramp; the budget is CHANNELS'



@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    """LeNet pruned by channel groups to half its FLOPs (GMP over 2 epochs, 1 more at the target), and its slim model."""
    root = tmp_path_factory.mktemp("channels")
    trained = check(run("train.py", *QUICK, *GMP_PHASES, *CHANNELS, "--num_epochs", "3", "--model_path", root / "run"))
    slimmed = check(run("slim.py", "--pruned_model", root / "run", "--output", root / "slim"))
    return root, trained, slimmed


def evaluate(path, *extra):
    result = check(run("evaluate.py", "--pruned_model", path, "--test_subset", "1000", "--json", str(path).rstrip("/") + ".eval.json", *extra))
    return result, json.load(open(str(path).rstrip("/") + ".eval.json"))


def test_training_reaches_the_flops_budget_and_slim_removes_the_masked_channels(channel_run):
    root, trained, slimmed = channel_run
    assert "channel groups" in trained.stdout and "x of dense" in trained.stdout
    assert 0.4 < json.load(open(root / "run" / "latest" / "state.json"))["history"][-1]["flops"] <= 0.5
    assert "outputs equal the masked model's" in slimmed.stdout
    flops_line = next(line for line in slimmed.stdout.splitlines() if line.startswith("FLOPs"))
    assert 0.4 < float(flops_line.split("(")[1].split("x")[0]) <= 0.5
    state = checkpoint.verify(root / "slim")
    assert state["kind"] == "slim" and state["spec"]["widths"]
    arrays = safe_pickle.load_arrays(os.path.join(root, "slim", "model.pdparams"))
    names = {var: key for key, var in state["structure"].items()}
    shapes = {names[k]: v.shape for k, v in arrays.items() if k in names}
    for key, shape in state["spec"]["widths"].items():
        assert list(shapes[key]) == shape
    assert all(np.any(a != 0) for a in arrays.values() if a.ndim > 1)


def test_the_slim_model_evaluates_exports_and_fine_tunes_like_the_masked_one(channel_run, tmp_path):
    root, _, _ = channel_run
    _, masked = evaluate(root / "run")
    report, slim = evaluate(root / "slim")
    assert slim["top1"] == masked["top1"] and slim["top5"] == masked["top5"]
    assert slim["dense_flops"] == masked["flops"] and slim["flops"] < 0.5 * masked["flops"] * 1.001
    assert "the FLOPs of the model before slimming" in report.stdout
    exported = check(run("export.py", "--pruned_model", root / "slim", "--output", tmp_path / "export"))
    assert "check paddle: max |difference|" in exported.stdout
    for artefact in (tmp_path / "export", tmp_path / "export" / "model.onnx"):
        _, deployed = evaluate(artefact)
        assert deployed["top1"] == slim["top1"] and deployed["flops"] == slim["flops"]
    fine_tuned = check(run("train.py", *QUICK, "--pruning_strategy", "none", "--num_epochs", "1", "--lr", "0.01",
                           "--pretrained_model", root / "slim", "--model_path", tmp_path / "tuned"))
    assert "loaded" in fine_tuned.stdout
    _, tuned = evaluate(tmp_path / "tuned")
    assert tuned["flops"] == slim["flops"] and tuned["top1"] > 0.5
    resumed = check(run("train.py", *QUICK, "--pruning_strategy", "none", "--num_epochs", "1", "--lr", "0.01",
                        "--pretrained_model", root / "slim", "--model_path", tmp_path / "tuned", "--resume"))
    assert "resumed from" in resumed.stdout  # the slim widths came back from the checkpoint: its shapes matched


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "run"
    check(run("train.py", *QUICK, "--pruning_strategy", "none", "--num_epochs", "1", "--model_path", path))
    return path


def refused(args, output, message):
    before = tree_snapshot(output)
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert tree_snapshot(output) == before
    return result


def test_slim_refuses_nothing_to_remove_broken_groups_and_an_existing_output(dense_run, channel_run, tmp_path):
    refused(["slim.py", "--pruned_model", dense_run, "--output", tmp_path / "out"], tmp_path, "nothing to remove")
    # filters zeroed one by one, but their BatchNorm and consumers left alone: not whole groups
    sliced = tmp_path / "sliced"
    check(run("export.py", "--pruned_model", dense_run, "--output", sliced, "--format", "state_dict"))
    state = safe_pickle.load_arrays(sliced / "model.pdparams")
    state["features.0.weight"][:3] = 0.0
    import paddle

    paddle.save(state, str(tmp_path / "zeroed.pdparams"))  # an altered file of its own: no export.json vouches for it
    refused(["slim.py", "--pruned_model", tmp_path / "zeroed.pdparams", "--model", "lenet", "--data", "fashion_mnist",
             "--output", tmp_path / "out"], tmp_path,
            "the zeros do not form whole channel groups: channel 0 of group features.0.weight has zero filters but features.1.weight")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("earlier results")
    refused(["slim.py", "--pruned_model", channel_run[0] / "run", "--output", tmp_path / "taken"], tmp_path, "already exists and is not empty")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target_flops", "0.5"], "--target_flops needs --granularity channel"),
        (["--granularity", "channel", "--target_flops", "0.5", "--ratio", "0.3"], "both set the budget; pass one"),
        (["--granularity", "channel", "--target_flops", "1.5"], "--target_flops 1.5 must be in (0, 1)"),
        (["--bn_l1", "1e-4"], "--bn_l1 (an L1 term on the BatchNorm scales of prunable channel groups) needs --granularity channel"),
        (["--granularity", "channel", "--prune_params_type", "conv1x1_only"], "does not go with --granularity channel"),
        (["--granularity", "channel", "--pruning_mode", "threshold"], "does not go with --pruning_mode threshold"),
        (["--granularity", "channel", "--target_flops", "0.02", "--min_channels", "4"], "target_flops 0.02 cannot be reached"),
        (["--granularity", "channel", "--min_channels", "0"], "--min_channels 0 must be >= 1"),
    ],
    ids=["flops-without-channel", "ratio-and-flops", "flops-range", "bn-l1-without-channel", "conv1x1", "threshold", "unreachable", "min-channels"],
)
def test_channel_flags_are_checked_before_anything_is_written(tmp_path, args, message):
    refused(["train.py", *QUICK, "--num_epochs", "1", *args, "--model_path", tmp_path / "run"], tmp_path, message)


def test_bn_l1_pulls_the_prunable_batchnorm_scales_down(tmp_path):
    def scales(folder):
        state = checkpoint.verify(folder)
        arrays = checkpoint.read_persistables(folder)
        return sum(float(np.abs(arrays[var]).sum()) for key, var in state["structure"].items() if key in ("features.1.weight", "features.5.weight"))

    common = [*QUICK, "--pruning_strategy", "none", "--granularity", "channel", "--num_epochs", "1"]
    check(run("train.py", *common, "--model_path", tmp_path / "plain"))
    check(run("train.py", *common, "--bn_l1", "0.1", "--model_path", tmp_path / "l1"))
    assert scales(tmp_path / "l1") < 0.8 * scales(tmp_path / "plain")


def test_sensitivity_per_group_proposes_widths_for_a_flops_budget_that_training_reaches(dense_run, tmp_path):
    out = tmp_path / "sens"
    result = check(run("sensitivity.py", "--pretrained_model", dense_run, "--output", out, "--granularity", "channel",
                       "--ratios", "0.25", "0.5", "0.75", "--val_subset", "300", "--target_flops", "0.6", "--max_drop", "0.5",
                       "--channel_multiple", "4"))
    assert "group 4/4" in result.stdout and "predicted FLOPs" in result.stdout
    proposed = json.load(open(out / "sparsity_config.json"))
    assert set(proposed) <= {"features.0.weight", "features.4.weight", "head.0.weight", "head.2.weight"}
    predicted = float(result.stdout.split("predicted FLOPs ")[1].split()[0])
    assert predicted <= 0.6
    trained = check(run("train.py", *QUICK, "--pretrained_model", dense_run, "--pruning_strategy", "base", "--granularity", "channel",
                        "--channel_multiple", "4", "--sparsity_config", out / "sparsity_config.json", "--num_epochs", "1",
                        "--model_path", tmp_path / "run"))
    history = json.load(open(tmp_path / "run" / "latest" / "state.json"))["history"]
    assert history[-1]["flops"] == pytest.approx(predicted, abs=1e-4)
    assert "FLOPs" in trained.stdout


def test_a_graph_the_analysis_does_not_follow_is_refused_naming_the_op():
    import paddle
    from paddle.utils import unique_name

    from suite.deploy import slim
    from suite.errors import ConfigError
    from suite.training.program import TestGraph

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), unique_name.guard():
            images = paddle.static.data("image", [None, 3, 8, 8], "float32")
            left, right = paddle.nn.Conv2D(3, 4, 3), paddle.nn.Conv2D(3, 4, 3)
            head = paddle.nn.Conv2D(8, 2, 3)
            logits = head(paddle.concat([left(images), right(images)], axis=1))
        structure = {f"{name}.{key}": value.name for name, layer in (("left", left), ("right", right), ("head", head))
                     for key, value in layer.state_dict().items()}
        scope = paddle.static.Scope()
        paddle.static.Executor(paddle.CPUPlace()).run(startup, scope=scope)
        graph = TestGraph(startup, main, images, logits, structure)
        with pytest.raises(ConfigError, match="cannot be slimmed: concat op .*does not know this op"):
            slim.slim(graph, scope, {"model": "concat_net"}, paddle.CPUPlace())
    finally:
        paddle.disable_static()

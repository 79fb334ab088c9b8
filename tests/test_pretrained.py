"""Starting from pretrained weights: zoo-style state dicts matched by structural name, heads skipped, bad keys refused."""
import json
import os

import numpy as np
import paddle
import pytest

import models
from sparsity import static
from suite.artefacts import weights
from suite.errors import CheckpointError
from suite.training import program
from suite.training.program import load_test_graph
from tests.scripts import GMP, QUICK, check, run, tree_snapshot


def save_state_dict(path, name, num_classes=10, in_channels=1, seed=3, **kwargs):
    """A dygraph model's state dict saved as the model zoo saves it; returns (model, path)."""
    paddle.disable_static()
    paddle.seed(seed)
    net = models.create(name, num_classes=num_classes, in_channels=in_channels, image_size=28, **kwargs)
    net.eval()
    paddle.save(net.state_dict(), str(path))
    return net, str(path)


@pytest.mark.parametrize("name,kwargs", [("LeNet", {}), ("MobileNet", {"scale": 0.25})])
def test_state_dict_in_a_static_program_gives_the_dygraph_outputs(tmp_path, name, kwargs):
    net, path = save_state_dict(tmp_path / "zoo.pdparams", name, **kwargs)
    images = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype("float32")
    with paddle.no_grad():
        expected = net(paddle.to_tensor(images)).numpy()
    spec = {"model": name, "scale": kwargs.get("scale", 1.0), "image_size": 28, "in_channels": 1, "num_classes": 10}
    try:
        graph, exe, _ = load_test_graph(weights.read(path), spec, paddle.CPUPlace())
        got = exe.run(graph.test, feed={"image": images}, fetch_list=[graph.logits])[0]
    finally:
        paddle.disable_static()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def structure_of(name, num_classes=10):
    """{structural name: variable name} and {variable name: shape} of a model in a static program."""
    paddle.enable_static()
    try:
        graph = program.build_test(name, 1.0, 28, 1, num_classes)
        return graph.structure, {p.name: p.shape for p in static.parameters(graph.test)}
    finally:
        paddle.disable_static()


def test_classifier_head_of_another_class_count_is_skipped(tmp_path):
    _, path = save_state_dict(tmp_path / "imagenet.pdparams", "LeNet", num_classes=1000)
    structure, shapes = structure_of("LeNet")
    source = weights.read(path)
    match = weights.match(source, structure, shapes, models.spec("LeNet").head_prefixes)
    head = [k for k in structure if k.startswith(models.spec("LeNet").head_prefixes)]
    assert head and len(match.skipped) == len(head) and all("->" in s for s in match.skipped)
    assert len(match.values) == len(structure) - len(head)
    for key, var in structure.items():
        if key not in head:
            np.testing.assert_array_equal(match.values[var], source.arrays[key])
    assert "skipped 2 of the classifier head" in match.describe(source)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda sd: sd.pop("features.0.weight"), "it has no features.0.weight (shape [6, 1, 5, 5])"),
        (lambda sd: sd.__setitem__("features.0.weight", np.zeros((6, 1, 3, 3), "float32")), "features.0.weight has shape [6, 1, 3, 3], the model needs [6, 1, 5, 5]"),
        (lambda sd: sd.__setitem__("extra.weight", np.zeros((2,), "float32")), "1 tensor(s) it does not have (extra.weight)"),
    ],
    ids=["missing", "misshaped", "extra"],
)
def test_key_errors_name_the_key_and_shapes(tmp_path, change, message):
    _, path = save_state_dict(tmp_path / "zoo.pdparams", "LeNet")
    state = {k: v.numpy() for k, v in paddle.load(path).items()}
    change(state)
    paddle.save(state, path)
    structure, shapes = structure_of("LeNet")
    with pytest.raises(CheckpointError) as err:
        weights.match(weights.read(path), structure, shapes, models.spec("LeNet").head_prefixes)
    assert message in str(err.value) and path in str(err.value)


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pdparams"
    paddle.save([np.zeros(3, "float32")], str(path))
    with pytest.raises(CheckpointError, match="not a dict of arrays"):
        weights.read(str(path))
    with pytest.raises(CheckpointError, match="is not a weights source"):
        weights.read(str(tmp_path / "model.h5"))


def test_recipe_dense_state_dict_prune_evaluate_export(tmp_path):
    """The README recipe: train dense, save its state dict, prune from it with GMP, evaluate, export."""
    dense = [*QUICK, "--pruning_strategy", "none", "--num_epochs", "2"]
    check(run("train.py", *dense, "--model_path", tmp_path / "dense"))
    check(run("export.py", "--pruned_model", tmp_path / "dense", "--output", tmp_path / "dense_export", "--format", "state_dict"))
    state_dict = tmp_path / "dense_export" / "model.pdparams"
    dense_eval = tmp_path / "dense.json"
    check(run("evaluate.py", "--pruned_model", state_dict, "--test_subset", "1000", "--json", dense_eval))

    pruned = check(run("train.py", *QUICK, *GMP, "--num_epochs", "3", "--pretrained_model", state_dict, "--model_path", tmp_path / "pruned"))
    tensors = len(weights.read(str(state_dict)).arrays)
    assert f"loaded {tensors} tensors from {state_dict}" in pruned.stdout and "skipped" not in pruned.stdout
    history = json.load(open(tmp_path / "pruned" / "latest" / "state.json"))["history"]
    dense_top1 = json.load(open(dense_eval))["top1"]
    # pruned to 75% from the dense weights, the model keeps the dense model's accuracy
    assert history[-1]["top1"] > dense_top1 - 0.02 and history[-1]["pruned_sparsity"] == pytest.approx(0.75, abs=1e-4)

    check(run("export.py", "--pruned_model", tmp_path / "pruned", "--output", tmp_path / "ship", "--format", "paddle", "sparse"))
    report = tmp_path / "ship.json"
    check(run("evaluate.py", "--pruned_model", tmp_path / "ship", "--test_subset", "1000", "--json", report))
    assert json.load(open(report))["top1"] == history[-1]["top1"]


def test_zoo_file_of_1000_classes_starts_a_10_class_run(tmp_path):
    _, path = save_state_dict(tmp_path / "imagenet.pdparams", "LeNet", num_classes=1000)
    result = check(run("train.py", *QUICK, "--pruning_strategy", "none", "--num_epochs", "1", "--pretrained_model", path, "--model_path", tmp_path / "run"))
    tensors = len(weights.read(path).arrays)
    line = next(line for line in result.stdout.splitlines() if "loaded " in line)
    assert f"loaded {tensors - 2} tensors" in line and "skipped 2 of the classifier head" in line
    assert "classifier.weight [84, 1000]->[84, 10]" in line and "classifier.bias [1000]->[10]" in line


def test_mismatched_state_dict_stops_train_before_writing(tmp_path):
    _, path = save_state_dict(tmp_path / "other.pdparams", "MobileNet", scale=0.25)
    result = run("train.py", *QUICK, "--num_epochs", "1", "--pretrained_model", path, "--model_path", tmp_path / "run")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "does not match this model" in errors[0]
    assert not os.path.exists(tmp_path / "run") and tree_snapshot(tmp_path / "run") == {}


def test_static_save_pdparams_keyed_by_variable_names_loads(tmp_path):
    """A `paddle.static.save` file of the same model (keys: variable names, masks beside) starts a run too."""
    paddle.enable_static()
    try:
        graph = program.build_test("lenet", 1.0, 28, 1, 10)
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        exe.run(graph.startup, scope=scope)
        with paddle.static.scope_guard(scope):
            paddle.static.save(graph.test, str(tmp_path / "static"))
            saved = {p.name: static.read(scope, p.name) for p in static.parameters(graph.test)}
        structure, shapes = graph.structure, {p.name: p.shape for p in static.parameters(graph.test)}
    finally:
        paddle.disable_static()
    match = weights.match(weights.read(str(tmp_path / "static.pdparams")), structure, shapes, models.spec("lenet").head_prefixes)
    assert not match.skipped and match.values.keys() == saved.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(match.values[name], value)

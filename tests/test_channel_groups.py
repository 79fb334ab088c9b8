"""Channel groups read off the model's graph, the FLOPs counter, and slimming: for every model of the registry,
in PIR, the legacy IR and Paddle 2.6."""
import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

import models
from sparsity import flops, graph, groups, static
from suite.training.program import build_test

MODELS = ["lenet", "mlp", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
          "resnet18", "resnet34", "resnet50", "resnet101", "vgg16"]
SIZE = 28  # Fashion-MNIST: grey 28 x 28 images (paddle.vision models repeat the channel in the graph)
# prunable groups per model at 28 x 28 (scale 0.5 for MobileNets): every conv/linear output but the logits,
# less the ones a residual addition ties into one
PRUNABLE = {"lenet": 4, "mlp": 1, "mobilenet_v1": 14, "mobilenet_v2": 25, "mobilenet_v3_small": 26, "mobilenet_v3_large": 30,
            "resnet18": 12, "resnet34": 20, "resnet50": 37, "resnet101": 71, "vgg16": 15}


def scale_of(name):
    return 0.5 if name.startswith("mobilenet") else 1.0


@pytest.fixture
def static_build():
    paddle.enable_static()
    yield lambda name, widths=None: build_test(name, scale_of(name), SIZE, 1, 10, widths)
    paddle.disable_static()


def roles(group, names):
    return {(names[m.param], m.axis, m.role, m.repeat) for m in group.members}


def group_of(channels, names, weight, axis=0):
    return next(g for g in channels.groups if any(names[m.param] == weight and m.axis == axis for m in g.members))


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_in_a_group_of_matching_size(static_build, name):
    test = static_build(name)
    names = {var: key for key, var in test.structure.items()}
    channels = groups.analyze(test.test)
    assert len(channels.prunable) == PRUNABLE[name]
    shapes = {p.name: p.shape for p in static.model_params(test.test)}
    covered = set()
    for g in channels.groups:
        for m in g.members:
            assert shapes[m.param][m.axis] == g.channels * m.repeat, (names[m.param], m, g.channels)
            covered.add(m.param)
    assert covered == set(shapes)
    output = [g for g in channels.groups if g.fixed == groups.OUTPUT]  # the classifier's outputs: never pruned
    assert len(output) == 1 and output[0].channels == 10 and not output[0].prunable


def test_residual_additions_tie_every_block_of_a_resnet_stage(static_build):
    test = static_build("resnet18")
    names = {var: key for key, var in test.structure.items()}
    stem = group_of(groups.analyze(test.test), names, "conv1.weight")
    members = roles(stem, names)
    assert {n for n, _, role, _ in members if role == groups.PRODUCER} == {"conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"}
    assert {n for n, _, role, _ in members if role == groups.CONSUMER} == {
        "layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight"}
    assert {("bn1.weight", 0, groups.NORM_SCALE, 1), ("bn1.bias", 0, groups.NORM_SHIFT, 1), ("bn1._mean", 0, groups.STATISTIC, 1)} <= members


def test_inverted_residuals_tie_projections_and_squeeze_excitation_joins_its_group(static_build):
    test = static_build("mobilenet_v2")
    names = {var: key for key, var in test.structure.items()}
    channels = groups.analyze(test.test)
    tied = group_of(channels, names, "features.2.conv.2.weight")  # the first inverted residual with a shortcut
    assert {"features.2.conv.2.weight", "features.3.conv.2.weight"} <= {n for n, _, r, _ in roles(tied, names) if r == groups.PRODUCER}

    test = static_build("mobilenet_v3_small")
    names = {var: key for key, var in test.structure.items()}
    expanded = group_of(groups.analyze(test.test), names, "blocks.3.expand_conv.0.weight")
    members = roles(expanded, names)
    assert ("blocks.3.mid_se.fc2.weight", 0, groups.PRODUCER, 1) in members  # the SE scale multiplies these channels
    assert ("blocks.3.mid_se.fc2.bias", 0, groups.BIAS, 1) in members
    assert ("blocks.3.mid_se.fc1.weight", 1, groups.CONSUMER, 1) in members
    assert ("blocks.3.bottleneck_conv.0.weight", 0, groups.DEPTHWISE, 1) in members


def test_flatten_maps_a_channel_to_its_inputs_and_the_input_is_fixed(static_build):
    test = static_build("lenet")
    names = {var: key for key, var in test.structure.items()}
    channels = groups.analyze(test.test)
    second = group_of(channels, names, "features.4.weight")
    assert ("head.0.weight", 0, groups.CONSUMER, 25) in roles(second, names)  # 16 channels x 5 x 5 -> 400 inputs
    stem_input = group_of(channels, names, "features.0.weight", axis=1)
    assert stem_input.fixed == "it is the model's input" and not stem_input.prunable


def test_an_op_the_analysis_does_not_know_is_one_error_naming_it():
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), unique_name.guard():
            x = paddle.static.data("image", [None, 3, 8, 8], "float32")
            a, b = paddle.nn.Conv2D(3, 4, 3)(x), paddle.nn.Conv2D(3, 4, 3)(x)
            paddle.nn.Conv2D(8, 2, 3)(paddle.concat([a, b], axis=1))
        with pytest.raises(groups.GroupError, match="concat op.*does not know this op"):
            groups.analyze(main)
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), unique_name.guard():
            x = paddle.static.data("image", [None, 4, 8, 8], "float32")
            paddle.nn.Conv2D(4, 8, 3, groups=2)(x)
        with pytest.raises(groups.GroupError, match="grouped convolution \\(2 groups over 4 input channels"):
            groups.analyze(main)
    finally:
        paddle.disable_static()


def random_keeps(channels, rng):
    keeps = {}
    for g in channels.prunable:
        keep = (rng.random(g.channels) < 0.5).astype("float32")
        keep[rng.integers(g.channels)] = 1.0
        keeps[g.index] = keep
    return keeps


def run_logits(test, arrays, images):
    """The test program's logits with `arrays` as its every parameter (no startup program: all are given)."""
    scope = paddle.static.Scope()
    for var, value in arrays.items():
        static.write(scope, var, value, paddle.CPUPlace())
    return paddle.static.Executor(paddle.CPUPlace()).run(test.test, feed={"image": images}, fetch_list=[test.logits], scope=scope)[0]


@pytest.mark.parametrize("name", MODELS)
def test_masked_outputs_equal_the_slim_models(static_build, name):
    """Half of every group's channels masked in every member; the model built at the kept widths, with the member
    slices cut, computes the same logits (and the FLOPs Terms at the kept widths count the slim program)."""
    rng = np.random.default_rng(0)
    full = static_build(name)
    channels = groups.analyze(full.test)
    names = {var: key for key, var in full.structure.items()}
    arrays = {}
    for p in static.model_params(full.test):  # random weights, BatchNorm statistics and biases away from 0 and 1
        fan_in = int(np.prod(p.shape[1:])) if len(p.shape) == 4 else p.shape[0]
        scale = np.sqrt(2.0 / fan_in) if len(p.shape) > 1 else 0.1
        arrays[p.name] = rng.standard_normal(p.shape, np.float32) * np.float32(scale)
        if names[p.name].endswith("_variance"):
            arrays[p.name] = rng.uniform(0.5, 2.0, p.shape).astype("float32")
    keeps = random_keeps(channels, rng)
    masks = groups.member_masks(channels.prunable, keeps, {n: a.shape for n, a in arrays.items()})
    masked = {n: a * masks.get(n, 1.0) for n, a in arrays.items()}
    thin = groups.slice_arrays(channels.prunable, {i: np.flatnonzero(k) for i, k in keeps.items()}, masked)
    widths = {names[v]: list(a.shape) for v, a in thin.items() if names[v].endswith(".weight") and a.shape != arrays[v].shape}
    slim = static_build(name, widths)
    assert set(slim.structure) == set(full.structure)
    images = rng.standard_normal((4, 1, SIZE, SIZE)).astype("float32")
    expected = run_logits(full, masked, images)
    got = run_logits(slim, {slim.structure[k]: thin[v] for k, v in full.structure.items()}, images)
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    terms = flops.terms(graph.read(full.test), channels.spaces)
    kept = {i: int(k.sum()) for i, k in keeps.items()}
    assert flops.total(terms, kept) == flops.count_program(slim.test).flops


def tiny_program(build):
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), unique_name.guard():
        build(paddle.static.data("image", [None, 3, 8, 8], "float32"))
    paddle.disable_static()
    return main


@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda x: paddle.nn.Conv2D(3, 4, 3, padding=1, bias_attr=False)(x), 8 * 8 * 4 * 3 * 9),
        (lambda x: paddle.nn.Conv2D(3, 4, 3, padding=1)(x), 8 * 8 * 4 * (3 * 9 + 1)),
        (lambda x: paddle.nn.Conv2D(3, 3, 3, padding=1, groups=3, bias_attr=False)(x), 8 * 8 * 3 * 9),
        (lambda x: paddle.nn.Conv2D(3, 6, 1, stride=2, bias_attr=False)(x), 4 * 4 * 6 * 3),
        (lambda x: paddle.nn.BatchNorm2D(3)(x), 2 * 3 * 8 * 8),
        (lambda x: paddle.nn.Linear(3 * 64, 5)(paddle.flatten(x, 1)), 3 * 64 * 5),
        (lambda x: paddle.nn.AvgPool2D(2)(x), 3 * 4 * 4),
        (lambda x: paddle.nn.AdaptiveAvgPool2D(2)(x), 3 * 2 * 2 * (4 * 4 + 1)),
        (lambda x: paddle.nn.MaxPool2D(2)(x), 0),
        (lambda x: paddle.nn.functional.relu(x) + x, 0),
    ],
    ids=["conv", "conv+bias", "depthwise", "strided 1x1", "batch_norm", "linear", "avgpool", "adaptive avgpool", "maxpool", "relu+add"],
)
def test_flops_by_hand(build, expected):
    assert flops.count_program(tiny_program(build)).flops == expected


@pytest.mark.skipif(not hasattr(np, "product"), reason="paddle.flops needs NumPy 1 (on NumPy 2 it raises TypeError); "
                    "this comparison runs in the Paddle 2.6 environment")
@pytest.mark.parametrize("name", ["lenet", "mobilenet_v1", "mobilenet_v3_small", "resnet18", "vgg16"])
def test_flops_and_parameters_equal_paddle_flops(name, capsys):
    layer = models.create(name, num_classes=10, in_channels=1, scale=scale_of(name), image_size=SIZE)
    expected_flops = paddle.flops(layer, [1, 1, SIZE, SIZE])
    expected_params = int(capsys.readouterr().out.split("Total Params:")[-1].split()[0])
    paddle.enable_static()
    try:
        counted = flops.count_program(build_test(name, scale_of(name), SIZE, 1, 10).test)
    finally:
        paddle.disable_static()
    assert (counted.flops, counted.params) == (expected_flops, expected_params)

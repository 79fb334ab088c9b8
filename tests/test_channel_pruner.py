"""ChannelPruner: whole channel groups masked in every member, budgets by channels or FLOPs, widths the runtimes like,
scores, per-group configs, GMP and resume, the same masks in static programs and dygraph."""
import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

import models
from sparsity import channels, groups, static
from sparsity.channel_pruner import ChannelPruner, GMPChannelPruner

SHAPE = [1, 28, 28]


def build(name="mobilenet_v1", scale=0.5, train=False):
    """(program, startup, structural names, layer) of a registry model in static mode (with a training step if asked)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), unique_name.guard():
        images = paddle.static.data("image", [None, *SHAPE], "float32")
        net = models.create(name, num_classes=10, in_channels=1, scale=scale, image_size=28)
        logits = net(images)
        if train:
            labels = paddle.static.data("label", [None, 1], "int64")
            paddle.optimizer.SGD(0.05).minimize(paddle.nn.functional.cross_entropy(logits, labels).mean())
    return main, startup, static.structural_names(net), net


@pytest.fixture
def static_scope():
    paddle.enable_static()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        yield scope
    paddle.disable_static()


def make(static_scope, train=False, name="mobilenet_v1", **options):
    main, startup, names, _ = build(name, train=train)
    paddle.static.Executor(paddle.CPUPlace()).run(startup)
    with paddle.static.program_guard(main, startup):
        pruner = ChannelPruner(main, structural_names=names, place=paddle.CPUPlace(), startup_program=startup, **options)
    return pruner, main, names


def removed_everywhere(pruner):
    """For every pruned group: its removed channels are zero in every member, its kept ones are not all zero."""
    for g in pruner.groups:
        dead = None
        for m in g.masked_members():
            rows = np.moveaxis(pruner.binding.read(m.param), m.axis, 0).reshape(g.channels, -1)
            zero = ~np.any(rows != 0, axis=1)
            dead = zero if dead is None else dead & zero
            assert zero.sum() >= g.channels - pruner.kept[g.index]
        assert int((~dead).sum()) == pruner.kept[g.index]


def test_a_ratio_removes_that_share_of_channels_from_every_member(static_scope):
    pruner, _, _ = make(static_scope, ratio=0.4, channel_multiple=1)
    pruner.step()
    total = sum(g.channels for g in pruner.groups)
    assert total - sum(pruner.kept.values()) == round(0.4 * total)
    removed_everywhere(pruner)


def test_a_flops_budget_is_met_within_one_step_and_widths_are_aligned(static_scope):
    pruner, _, _ = make(static_scope, target_flops=0.5)
    pruner.step()
    kept, dense = pruner.flops()
    assert 0.45 < kept / dense <= 0.5
    for g in pruner.groups:
        width = pruner.kept[g.index]
        assert width >= 1 and (g.channels < 16 or width % 8 == 0 or width == g.channels)
    removed_everywhere(pruner)


def test_masks_stay_applied_after_an_optimizer_update(static_scope):
    pruner, main, _ = make(static_scope, train=True, target_flops=0.6)
    exe = paddle.static.Executor(paddle.CPUPlace())
    rng = np.random.default_rng(0)
    for _ in range(2):
        exe.run(main, feed={"image": rng.standard_normal((8, *SHAPE)).astype("float32"), "label": rng.integers(0, 10, (8, 1))})
        pruner.step()
    removed_everywhere(pruner)


def test_scores_choose_the_weak_channels(static_scope):
    pruner, _, names = make(static_scope, ratio=0.5, channel_multiple=1, score="bn_scale")
    group = next(g for g in pruner.groups if names[g.name] == "conv5_6._pointwise_conv.0.weight")
    scale = next(m.param for m in group.members if m.role == groups.NORM_SCALE)
    gamma = np.linspace(1.0, 2.0, group.channels).astype("float32")
    gamma[::3] = 0.01  # every third channel's BatchNorm scale is near zero: Network Slimming removes those first
    static.write(static_scope, scale, gamma, paddle.CPUPlace())
    arrays = {m.param: pruner.binding.read(m.param) for m in group.members}
    assert set(np.argsort(channels.scores(group, arrays, "bn_scale"))[: (group.channels + 2) // 3]) == set(range(0, group.channels, 3))
    producer = group.producers[0].param
    arrays[producer][5] = arrays[producer].mean(axis=0)  # the filter at the centre of the others: FPGM's most replaceable
    arrays[producer][7] *= 10.0  # the largest filter, the farthest from the others
    for method in ("l1", "l2", "fpgm"):
        assert np.argmax(channels.scores(group, arrays, method)) == 7
    assert np.argmin(channels.scores(group, arrays, "fpgm")) == 5
    keep = np.ones(group.channels, np.float32)
    keep[9] = 0.0  # channel 9 already zero in every member stays the weakest for every score
    masks = groups.member_masks([group], {group.index: keep}, {n: a.shape for n, a in arrays.items()})
    arrays = {n: a * masks.get(n, 1.0) for n, a in arrays.items()}
    for method in channels.SCORES:
        assert channels.scores(group, arrays, method)[9] == 0.0


def test_per_group_config_uniform_and_refusals(static_scope):
    pruner, _, names = make(static_scope, ratio=0.3, channel_multiple=1,
                            ratios={"conv5_1._pointwise_conv.0.weight": 0.75, "conv2_*": "skip"})
    pruner.step()
    by_name = {names[g.name]: g for g in pruner.channels.prunable}
    assert pruner.kept[by_name["conv5_1._pointwise_conv.0.weight"].index] == by_name["conv5_1._pointwise_conv.0.weight"].channels // 4
    assert by_name["conv2_1._pointwise_conv.0.weight"].index not in pruner.kept
    assert not any(names[g.name].startswith("conv2_") for g in pruner.groups)

    uniform, _, _ = make(static_scope, ratio=0.5, channel_multiple=1, local_sparsity=True)
    uniform.step()
    assert {round(1 - uniform.kept[g.index] / g.channels, 2) for g in uniform.groups if g.channels >= 8} == {0.5}

    with pytest.raises(ValueError, match="channel config entry 'nothing.weight' names no prunable channel group"):
        make(static_scope, ratios={"nothing.weight": 0.5})
    with pytest.raises(ValueError, match="target_flops 0.01 cannot be reached"):
        make(static_scope, target_flops=0.01, min_channels=8)
    with pytest.raises(ValueError, match="pass ratio .* or target_flops .*, not both"):
        make(static_scope, ratio=0.5, target_flops=0.5)


def test_gmp_ramps_the_budget_and_resumes_without_reselecting(static_scope, monkeypatch):
    configs = {"stable_iterations": 0, "pruning_iterations": 4, "tunning_iterations": 2, "pruning_steps": 4, "initial_ratio": 0.1}
    main, startup, names, _ = build()
    paddle.static.Executor(paddle.CPUPlace()).run(startup)
    options = dict(configs=configs, target_flops=0.5, channel_multiple=1, structural_names=names, place=paddle.CPUPlace(), startup_program=startup)
    pruner = GMPChannelPruner(main, **options)
    ratios = []
    for _ in range(6):
        pruner.step()
        kept, dense = pruner.flops()
        ratios.append(kept / dense)
    assert ratios[0] > ratios[2] > ratios[-1] and ratios[-1] <= 0.5 and ratios[0] <= 0.9
    state = pruner.state_dict()
    resumed = GMPChannelPruner(main, **options)
    resumed.set_state_dict(state)
    calls = []
    monkeypatch.setattr(resumed, "_recompute", lambda *a: calls.append(a))
    resumed.step()
    assert not calls and resumed.flops() == pruner.flops()


def test_dygraph_gives_the_masks_the_static_program_gives(static_scope):
    main, startup, names, _ = build(scale=0.25)
    paddle.static.Executor(paddle.CPUPlace()).run(startup)
    weights = {names[p.name]: static.read(static_scope, p.name) for p in static.model_params(main)}
    pruner = ChannelPruner(main, target_flops=0.5, score="l1", structural_names=names, place=paddle.CPUPlace(), startup_program=startup)
    pruner.step()
    static_kept = {names[g.name]: pruner.kept[g.index] for g in pruner.groups}
    static_weights = {names[p.name]: static.read(static_scope, p.name) for p in static.model_params(main)}
    paddle.disable_static()
    try:
        net = models.create("mobilenet_v1", num_classes=10, in_channels=1, scale=0.25, image_size=28)
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
        eager = ChannelPruner(net, target_flops=0.5, score="l1", input_shape=SHAPE)
        eager.step()
        assert {eager.group_names[g.index]: eager.kept[g.index] for g in eager.groups} == static_kept
        for key, value in net.state_dict().items():
            if key in static_weights:
                np.testing.assert_array_equal(value.numpy(), static_weights[key])
    finally:
        paddle.enable_static()

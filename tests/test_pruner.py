"""The pruner bound to a real static program: selection, in-graph masking, save/load, resume, errors."""
import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

from sparsity import GMPUnstructuredPruner, UnstructuredPruner, static
from tests import reference
from tests.conftest import build_small_program, small_batches


def weights_of(scope, params):
    return [static.read(scope, p.name) for p in params]


def make(static_mode, pruner_first=False, optimizer=paddle.optimizer.Momentum, **kwargs):
    """Build SmallNet + optimizer + pruner in either order; run startup; return (net, loss, pruner, exe)."""
    main, startup, scope = static_mode
    net, loss = build_small_program()
    opt = optimizer(learning_rate=0.05)
    cls = kwargs.pop("cls", UnstructuredPruner)
    if pruner_first:
        pruner = cls(main, scope=scope, **kwargs)
        opt.minimize(loss, no_grad_set=pruner.no_grad_set)
    else:
        opt.minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    if not pruner_first:
        pruner = cls(main, scope=scope, **kwargs)
    return net, loss, pruner, exe


def test_default_selection_skips_norm_and_biases(static_mode):
    net, _, pruner, _ = make(static_mode, mode="ratio", ratio=0.5)
    names = {p.name for p in pruner.params}
    assert names == {net.conv.weight.name, net.conv1x1.weight.name, net.fc.weight.name}


def test_conv1x1_only_and_custom_skip(static_mode):
    main = static_mode[0]
    net, _, pruner, _ = make(static_mode, mode="ratio", prune_params_type="conv1x1_only")
    assert [p.name for p in pruner.params] == [net.conv1x1.weight.name]
    custom = UnstructuredPruner(main, "ratio", scope=static_mode[2], skip_params_func=lambda prog: {net.fc.weight.name})
    # a user's skip rule replaces the default one: biases and BN parameters are pruned too, masks never
    chosen = {p.name for p in custom.params}
    assert net.fc.weight.name not in chosen and net.bn.weight.name in chosen and net.conv.bias.name in chosen
    assert not any(static.is_mask_name(n) for n in chosen)


@pytest.mark.parametrize("pruner_first", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_training_keeps_pruned_weights_exactly_zero(static_mode, pruner_first, local):
    main, _, scope = static_mode
    net, loss, pruner, exe = make(static_mode, pruner_first, mode="ratio", ratio=0.6, local_sparsity=local)
    untouched = [net.bn.weight.name, net.bn.bias.name, net.conv.bias.name, net.fc.bias.name]
    before = {n: static.read(scope, n) for n in untouched}
    pruner.step()
    masks_after_first = None
    for i, feed in enumerate(small_batches(6)):
        exe.run(main, feed=feed, fetch_list=[loss])
        # in-graph masking: the weights are already sparse right after exe.run, before step()
        for p, m in zip(pruner.params, pruner.masks):
            w, mask = static.read(scope, p.name), static.read(scope, m.name)
            if i > 0 or not pruner_first:
                assert np.all(w[mask == 0] == 0)
        pruner.step()
        current = weights_of(scope, pruner.masks)
        masks_after_first = masks_after_first or current
        for a, b in zip(current, masks_after_first):
            np.testing.assert_array_equal(a, b)  # constant ratio: masks never change
    sizes = [m.size for m in current]
    zeros = [int((m == 0).sum()) for m in current]
    if local:
        for z, n in zip(zeros, sizes):
            assert abs(z - 0.6 * n) <= 0.5
    else:
        assert abs(sum(zeros) - 0.6 * sum(sizes)) <= 0.5
    for n in untouched:  # BN and biases trained but never masked
        assert np.count_nonzero(static.read(scope, n)) == static.read(scope, n).size
    assert any(not np.array_equal(before[n], static.read(scope, n)) for n in untouched)
    report = pruner.sparsity()
    assert report["pruned"] == pytest.approx(sum(zeros) / sum(sizes))
    assert 0 < report["model"] < report["pruned"]


def test_first_step_masks_match_numpy_reference(static_mode):
    _, _, scope = static_mode
    _, _, pruner, _ = make(static_mode, mode="ratio", ratio=0.7, sparse_block=[2, 1])
    dense = weights_of(scope, pruner.params)
    pruner.step()
    want = reference.ratio_masks(dense, 0.7, (2, 1))
    for got, w in zip(weights_of(scope, pruner.masks), want):
        np.testing.assert_array_equal(got, w)
    for w, d, m in zip(weights_of(scope, pruner.params), dense, want):
        np.testing.assert_array_equal(w, d * m)


def test_threshold_mode(static_mode):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="threshold", threshold=0.05)
    dense = weights_of(scope, pruner.params)
    pruner.step()
    for got, w in zip(weights_of(scope, pruner.masks), reference.threshold_masks(dense, 0.05)):
        np.testing.assert_array_equal(got, w)
    for feed in small_batches(3):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    for w in weights_of(scope, pruner.params):
        assert np.all((w == 0) | (np.abs(w) >= 0.05))


def test_steady_state_step_does_not_recompute(static_mode, monkeypatch):
    _, _, pruner, _ = make(static_mode, mode="ratio", ratio=0.5)
    pruner.step()
    calls = []
    monkeypatch.setattr(pruner, "update_masks", lambda: calls.append(1))
    for _ in range(5):
        pruner.step()
    assert calls == []
    pruner.mask_update_period = 2
    for _ in range(4):
        pruner.step()
    assert len(calls) == 2


def test_masks_saved_and_loaded_with_the_program(static_mode, tmp_path):
    main, startup, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="ratio", ratio=0.8)
    for feed in small_batches(2):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    saved = weights_of(scope, pruner.masks) + weights_of(scope, pruner.params)
    paddle.static.save(main, str(tmp_path / "model"))
    fresh = paddle.static.Scope()
    with paddle.static.scope_guard(fresh):
        exe.run(startup)
        assert np.all(static.read(fresh, pruner.masks[0].name) == 1)
        paddle.static.load(main, str(tmp_path / "model"), exe)
        loaded = weights_of(fresh, pruner.masks) + weights_of(fresh, pruner.params)
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a, b)


GMP = dict(stable_iterations=2, pruning_iterations=8, tunning_iterations=4, pruning_steps=4, initial_ratio=0.2)


def train_gmp(static_mode, iterations, resume_iteration=0, state=None):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(
        static_mode, cls=GMPUnstructuredPruner, ratio=0.8, configs={**GMP, "resume_iteration": resume_iteration}
    )
    if state:
        for name, value in state.items():
            static.write(scope, name, value, paddle.CPUPlace())
    ratios = []
    for feed in list(small_batches(14))[resume_iteration : resume_iteration + iterations]:
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
        ratios.append(pruner.sparsity()["pruned"])
    names = [p.name for p in static.parameters(main)]
    return ratios, {n: static.read(scope, n) for n in names}, pruner


def test_gmp_ramps_monotonically_to_the_target(static_mode):
    ratios, _, pruner = train_gmp(static_mode, 14)
    assert ratios[0] == 0.0 and ratios[-1] == pytest.approx(0.8, abs=1e-4)
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    assert pruner.iteration == 14


def test_gmp_resume_from_any_iteration_matches_uninterrupted_run():
    def fresh():
        paddle.enable_static()
        main, startup, scope = paddle.static.Program(), paddle.static.Program(), paddle.static.Scope()
        return main, startup, scope

    def run(iterations, resume_iteration=0, state=None):
        main, startup, scope = fresh()
        with paddle.static.scope_guard(scope), paddle.static.program_guard(main, startup), unique_name.guard():
            paddle.seed(1)
            _, _, pruner = train_gmp((main, startup, scope), iterations, resume_iteration, state)
            # every persistable: weights, masks, BN statistics, momentum velocities, learning rate
            names = scope.local_var_names() if hasattr(scope, "local_var_names") else [v.name for v in main.list_vars()]
            every = {n: static.read(scope, n) for n in names if static.is_initialized(scope, n)}
            return every, pruner

    full, full_pruner = run(14)
    for cut in (1, 5, 9):
        first, _ = run(cut)
        second, resumed = run(14 - cut, resume_iteration=cut, state=first)
        assert resumed.iteration == 14 and resumed.target_ratio() == full_pruner.target_ratio()
        common = full.keys() & second.keys()
        assert {p.name for p in resumed.params} | {m.name for m in resumed.masks} <= common
        assert any("velocity" in n for n in common)
        for name in common:
            np.testing.assert_array_equal(second[name], full[name], err_msg=f"{name} after resume at {cut}")
    paddle.disable_static()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "magnitude"}, "mode must be .ratio., .threshold. or .nm."),
        ({"mode": "ratio", "ratio": 1.0}, r"ratio must be a number in \[0, 1\)"),
        ({"mode": "threshold", "threshold": -1}, "threshold must be a number >= 0"),
        ({"mode": "ratio", "sparse_block": [2, 0]}, "sparse_block must be two positive integers"),
        ({"mode": "ratio", "prune_params_type": "conv3x3"}, "prune_params_type must be None or 'conv1x1_only'"),
        ({"mode": "ratio", "skip_params_func": lambda p: {x.name for x in static.parameters(p)}}, "no parameter to prune"),
        ({"mode": "ratio", "local_sparsity": "yes"}, "local_sparsity must be True or False"),
    ],
)
def test_bad_arguments_raise_clear_errors(static_mode, kwargs, message):
    main = static_mode[0]
    build_small_program()
    with pytest.raises(ValueError, match=message):
        UnstructuredPruner(main, scope=static_mode[2], **kwargs)


def test_gmp_bad_configs(static_mode):
    main = static_mode[0]
    build_small_program()
    with pytest.raises(ValueError, match="must not exceed pruning_iterations"):
        GMPUnstructuredPruner(main, 0.5, configs={**GMP, "pruning_steps": 9})


def test_nm_mode_keeps_two_of_four_through_training(static_mode):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="nm", nm_pattern=[2, 4], prune_params_type="conv1x1_only")
    dense = weights_of(scope, pruner.params)
    pruner.step()
    np.testing.assert_array_equal(weights_of(scope, pruner.masks)[0], reference.nm_masks(dense, 2, 4)[0])
    for feed in small_batches(3):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    (w,) = weights_of(scope, pruner.params)  # conv1x1 [8, 8, 1, 1]: groups of 4 input channels
    assert ((w != 0).reshape(8, 2, 4).sum(axis=2) == 2).all()
    assert pruner.sparsity()["pruned"] == 0.5 and pruner.thresholds == []


def test_nm_mode_refuses_blocks(static_mode):
    build_small_program()
    with pytest.raises(ValueError, match="sparse_block must stay"):
        UnstructuredPruner(static_mode[0], "nm", scope=static_mode[2], sparse_block=[2, 1])

"""The pruner bound to a real static program: selection, in-graph masking, save/load, resume, errors,
every granularity, per-layer ratios and PaddleSlim's details."""
import json
import pickle

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

from sparsity import (
    GMPUnstructuredPruner,
    UnstructuredPruner,
    read_ratios_file,
    rules,
    static,
)
from tests import reference
from tests.conftest import build_small_program, small_batches
from tests.sparsity_fixtures import RULES, static_small_layer


def weights_of(scope, params):
    return [static.read(scope, p.name) for p in params]


def mask_values(scope, pruner):
    return [static.read(scope, pruner.masks[p.name]) for p in pruner.params]


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
        for p in pruner.params:
            w, mask = static.read(scope, p.name), static.read(scope, pruner.masks[p.name])
            if i > 0 or not pruner_first:
                assert np.all(w[mask == 0] == 0)
        pruner.step()
        current = mask_values(scope, pruner)
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
    want = reference.ratio_masks(dense, reference.UNITS["block2x1"], 0.7)
    for got, w in zip(mask_values(scope, pruner), want):
        np.testing.assert_array_equal(got, w)
    for w, d, m in zip(weights_of(scope, pruner.params), dense, want):
        np.testing.assert_array_equal(w, d * m)


def test_threshold_mode(static_mode):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="threshold", threshold=0.05)
    dense = weights_of(scope, pruner.params)
    pruner.step()
    for got, w in zip(mask_values(scope, pruner), reference.threshold_masks(dense, reference.UNITS["element"], 0.05)):
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
    monkeypatch.setattr(pruner, "_recompute", lambda *args: calls.append(1))
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
    saved = mask_values(scope, pruner) + weights_of(scope, pruner.params)
    paddle.static.save(main, str(tmp_path / "model"))
    fresh = paddle.static.Scope()
    with paddle.static.scope_guard(fresh):
        exe.run(startup)
        assert np.all(static.read(fresh, pruner.masks[pruner.params[0].name]) == 1)
        paddle.static.load(main, str(tmp_path / "model"), exe)
        loaded = mask_values(fresh, pruner) + weights_of(fresh, pruner.params)
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
        assert resumed.iteration == 14 and resumed.ratio == full_pruner.ratio == 0.8
        common = full.keys() & second.keys()
        assert {p.name for p in resumed.params} | set(resumed.masks.values()) <= common
        assert any("velocity" in n for n in common)
        for name in common:
            np.testing.assert_array_equal(second[name], full[name], err_msg=f"{name} after resume at {cut}")
    paddle.disable_static()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "magnitude"}, "mode must be one of 'ratio', 'threshold', 'nm'"),
        ({"mode": "ratio", "ratio": 1.0}, r"ratio must be a number in \[0, 1\)"),
        ({"mode": "threshold", "threshold": -1}, "threshold must be a number >= 0"),
        ({"mode": "ratio", "sparse_block": [2, 0]}, "sparse_block must be two positive integers"),
        ({"mode": "ratio", "prune_params_type": "conv3x3"}, "prune_params_type must be one of None, 'conv1x1_only'"),
        ({"mode": "ratio", "skip_params_func": lambda p: {x.name for x in static.parameters(p)}}, "no parameter to prune"),
        ({"mode": "ratio", "local_sparsity": "yes"}, "local_sparsity must be True or False"),
        ({"mode": "ratio", "local_sparsity": 2}, "local_sparsity must be True or False"),
        ({"mode": "threshold", "local_sparsity": True}, "local_sparsity True needs mode 'ratio', got mode 'threshold'"),
        ({"mode": "threshold", "local_sparsity": 1}, "local_sparsity True needs mode 'ratio'"),
        ({"mode": "nm", "local_sparsity": True}, "local_sparsity True needs mode 'ratio', got mode 'nm'"),
        ({"mode": "threshold", "rule": rules.Random(0)}, "scores are not magnitudes"),
        ({"mode": "ratio", "rule": rules.NM(2, 4)}, "mode 'nm' goes with the N:M rule"),
        ({"mode": "ratio", "rule": "channel"}, "rule must be a sparsity.rules rule"),
        ({"mode": "ratio", "rule": rules.Block(2, 1), "prune_params_type": None, "skip_params_func": lambda p: set()}, "needs weights with at least 2 dimensions"),
        ({"mode": "threshold", "ratios": {"linear*": 0.5}}, "per-layer ratios need mode 'ratio'"),
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
    np.testing.assert_array_equal(mask_values(scope, pruner)[0], reference.nm_masks(dense, 2, 4)[0])
    for feed in small_batches(3):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    (w,) = weights_of(scope, pruner.params)  # conv1x1 [8, 8, 1, 1]: groups of 4 input channels
    assert ((w != 0).reshape(8, 2, 4).sum(axis=2) == 2).all()
    assert pruner.sparsity()["pruned"] == 0.5 and pruner.thresholds == {} and pruner.ratio == 0.5


def test_nm_mode_refuses_blocks(static_mode):
    build_small_program()
    with pytest.raises(ValueError, match="sparse_block must stay"):
        UnstructuredPruner(static_mode[0], "nm", scope=static_mode[2], sparse_block=[2, 1])


# ---- every granularity in a real program ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("local", [False, True])
def test_every_rule_in_a_program_matches_reference(static_mode, name, local):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="ratio", ratio=0.6, rule=RULES[name], local_sparsity=local)
    dense = weights_of(scope, pruner.params)
    pruner.step()
    want = reference.ratio_masks(dense, reference.UNITS[name], 0.6, local)
    for got, w in zip(mask_values(scope, pruner), want):
        np.testing.assert_array_equal(got, w)
    exe.run(main, feed=next(small_batches(1)), fetch_list=[loss])
    for w, m in zip(weights_of(scope, pruner.params), want):
        assert np.all(w[m == 0] == 0)  # the in-graph masking keeps the pattern through an update


# ---- per-layer ratios ------------------------------------------------------------------------------
def test_per_layer_ratios_by_name_glob_and_skip(static_mode):
    main, _, scope = static_mode
    net, _, _, _ = make(static_mode, mode="ratio", ratio=0.5)
    conv, conv1x1, fc = net.conv.weight.name, net.conv1x1.weight.name, net.fc.weight.name
    prefix = conv.split("_")[0]  # 'conv2d'
    pruner = UnstructuredPruner(main, "ratio", ratio=0.5, scope=scope, ratios={conv1x1: 0.9, f"{prefix}*": 0.25, fc: "skip"})
    assert pruner.targets() == {conv: 0.25, conv1x1: 0.9}  # the exact name beats the glob
    assert fc in pruner.skip_params and net.bn.weight.name in pruner.skip_params
    pruner.step()
    layers = pruner.sparse_by_layer()
    assert layers[conv] == pytest.approx(0.25, abs=1 / 72) and layers[conv1x1] == pytest.approx(0.9, abs=1 / 64)
    assert np.count_nonzero(static.read(scope, fc)) == static.read(scope, fc).size
    rows = {r["name"]: r for r in pruner.sparsity()["layers"]}
    assert rows[conv1x1]["target"] == 0.9 and rows[fc]["target"] is None and not rows[fc]["pruned"]


def test_layer_targets_only_where_a_layer_has_its_own(static_mode):
    """A report shows a target beside a layer only when that layer is held to it (local, per-layer, N:M)."""
    main, _, scope = static_mode
    net, _, _, _ = make(static_mode, mode="ratio", ratio=0.5)
    conv, conv1x1, fc = net.conv.weight.name, net.conv1x1.weight.name, net.fc.weight.name
    shared = UnstructuredPruner(main, "ratio", ratio=0.5, scope=scope)
    assert shared.layer_targets() == {conv: None, conv1x1: None, fc: None}
    mixed = UnstructuredPruner(main, "ratio", ratio=0.5, scope=scope, ratios={conv1x1: 0.9})
    assert mixed.layer_targets() == {conv: None, conv1x1: 0.9, fc: None}
    local = UnstructuredPruner(main, "ratio", ratio=0.5, scope=scope, local_sparsity=True)
    assert local.layer_targets() == {conv: 0.5, conv1x1: 0.5, fc: 0.5}
    assert set(UnstructuredPruner(main, "threshold", scope=scope).layer_targets().values()) == {None}


def test_per_layer_ratios_by_structural_name(static_mode):
    main, _, scope = static_mode
    layer, main, startup, _ = static_small_layer()
    with paddle.static.program_guard(main, startup):
        names = static.structural_names(layer)
        assert names[layer.fc.weight.name] == "fc.weight"
        pruner = UnstructuredPruner(main, "ratio", ratio=0.5, scope=scope, startup_program=startup, structural_names=names, ratios={"conv*.weight": 0.8, "fc.weight": "skip"})
    assert pruner.targets() == {layer.conv.weight.name: 0.8, layer.conv1x1.weight.name: 0.8}


def test_unknown_pattern_is_an_error_naming_it(static_mode):
    main = static_mode[0]
    build_small_program()
    with pytest.raises(ValueError, match=r"entry 'features\.\*' matches no prunable parameter; prunable: conv2d_0\.w_0"):
        UnstructuredPruner(main, "ratio", scope=static_mode[2], ratios={"features.*": 0.5})
    with pytest.raises(ValueError, match=r"entry 'fc\*' must be a number in \[0, 1\), got 1.2 or 'skip'"):
        UnstructuredPruner(main, "ratio", scope=static_mode[2], ratios={"fc*": 1.2})


def test_gmp_ramps_every_layer_to_its_own_target(static_mode):
    main = static_mode[0]
    net, loss, pruner, exe = make(static_mode, cls=GMPUnstructuredPruner, ratio=0.8, configs=GMP, ratios={"linear*": 0.4})
    seen = []
    for feed in small_batches(14):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
        seen.append(pruner.sparse_by_layer())
    fc = net.fc.weight.name
    assert seen[-1][fc] == pytest.approx(0.4, abs=1e-3) and seen[-1][net.conv.weight.name] == pytest.approx(0.8, abs=0.02)
    fc_ramp = [s[fc] for s in seen]
    assert fc_ramp[1] == 0 and 0 < fc_ramp[2] < fc_ramp[6] < fc_ramp[-1]  # stable 2 iterations, then its own ramp


def test_config_file_reader(tmp_path):
    (tmp_path / "c.json").write_text('{"conv2d_0.w_0": 0.9, "fc*": "skip"}')
    assert read_ratios_file(str(tmp_path / "c.json")) == {"conv2d_0.w_0": 0.9, "fc*": "skip"}
    (tmp_path / "bad.json").write_text('{"fc*": "half"}')
    with pytest.raises(ValueError, match=r"sparsity config .*bad.json: entry 'fc\*' must be a number in \[0, 1\), got 'half' or 'skip'"):
        read_ratios_file(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[0.5]")
    with pytest.raises(ValueError, match="list.json must map parameter names"):
        read_ratios_file(str(tmp_path / "list.json"))
    with pytest.raises(ValueError, match=r"c\.txt: expected a \.json, \.yaml or \.yml file"):
        read_ratios_file(str(tmp_path / "c.txt"))
    with pytest.raises(ValueError, match="cannot be read"):
        read_ratios_file(str(tmp_path / "missing.json"))


def test_config_file_reader_yaml(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("features.0.weight: 0.75\n'conv*': skip\n")
    assert read_ratios_file(str(tmp_path / "c.yaml")) == {"features.0.weight": 0.75, "conv*": "skip"}
    (tmp_path / "bad.yml").write_text("a: [1\n")
    with pytest.raises(ValueError, match="bad.yml is not valid YAML"):
        read_ratios_file(str(tmp_path / "bad.yml"))


# ---- PaddleSlim drop-in details ---------------------------------------------------------------------
def test_strtobool_ints_and_numpy_numbers_are_accepted(static_mode):
    main, _, scope = static_mode
    build_small_program()
    pruner = UnstructuredPruner(main, "ratio", ratio=np.float32(0.5), scope=scope, local_sparsity=1, sparse_block=[np.int64(1), 1])
    assert pruner.local_sparsity is True and pruner.target == 0.5
    configs = {k: np.int64(v) if isinstance(v, int) else np.float64(v) for k, v in GMP.items()}
    gmp = GMPUnstructuredPruner(main, np.float64(0.8), scope=scope, local_sparsity=0, configs={**configs, "resume_iteration": np.int64(3)})
    assert gmp.iteration == 3 and gmp.local_sparsity is False


def test_ratio_follows_gmp_and_threshold_follows_recomputes(static_mode):
    main = static_mode[0]
    _, loss, pruner, exe = make(static_mode, cls=GMPUnstructuredPruner, ratio=0.8, configs=GMP)
    assert pruner.ratio == 0.0  # as PaddleSlim's, before the first step
    ratios, thresholds = [], []
    for feed in small_batches(14):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
        ratios.append(pruner.ratio)
        thresholds.append(pruner.threshold)
    assert ratios[:2] == [0.0, 0.0] and ratios[2] == pytest.approx(0.2) and ratios[-1] == 0.8
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    # the threshold of the last recompute: it moves exactly when the ratio does
    assert [b != a for a, b in zip(thresholds[2:], thresholds[3:])] == [b != a for a, b in zip(ratios[2:], ratios[3:])]
    assert 0 < thresholds[2] < thresholds[-1]


def test_masks_are_named_like_paddleslims_and_are_not_parameters(static_mode, tmp_path):
    main = static_mode[0]
    _, _, pruner, _ = make(static_mode, mode="ratio", ratio=0.5)
    every = {p.name for p in static.model_params(main)}
    assert set(pruner.masks) == every  # like PaddleSlim, a mask beside every parameter; only pruned ones apply
    assert all(pruner.masks[n] == n + "_mask" for n in every)
    assert not any(p.name.endswith("_mask") for p in static.parameters(main))
    if not static.pir_enabled():
        assert not any(p.name.endswith("_mask") for p in main.all_parameters())
    pruner.step()
    paddle.static.save(main, str(tmp_path / "m"))
    opt, params = (pickle.loads((tmp_path / f"m.{ext}").read_bytes()) for ext in ("pdopt", "pdparams"))
    assert {n + "_mask" for n in every} <= set(opt) and not any(k.endswith("_mask") for k in params)
    assert pruner.skip_params == every - {p.name for p in pruner.params}


def test_set_static_masks_holds_the_zeros_through_further_training(static_mode):
    main, _, scope = static_mode
    _, loss, pruner, exe = make(static_mode, mode="threshold", threshold=0.05)
    pruner.step()
    w = static.read(scope, pruner.params[0].name)
    w[: w.shape[0] // 2] = 0.0  # zeros the pruner did not choose, e.g. from loading another model
    static.write(scope, pruner.params[0].name, w, paddle.CPUPlace())
    pruner.set_static_masks()
    zeros = [x == 0 for x in weights_of(scope, pruner.params)]
    for feed in small_batches(4):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    after = weights_of(scope, pruner.params)
    for z, a in zip(zeros, after):
        np.testing.assert_array_equal(a == 0, z)  # exactly the same zeros: none regrew, none added
    assert pruner.state_dict()["frozen"] is True


def test_state_dict_is_json_and_resumes_without_recompute(static_mode, monkeypatch):
    _, _, pruner, _ = make(static_mode, mode="ratio", ratio=0.5)
    pruner.step()
    state = json.loads(json.dumps(pruner.state_dict()))
    assert state["mask_ratio"] == 0.5 and state["targets"] == pruner.targets()
    other = UnstructuredPruner(static_mode[0], "ratio", ratio=0.5, scope=static_mode[2])
    other.set_state_dict(state)
    calls = []
    monkeypatch.setattr(other, "_recompute", lambda *a: calls.append(a))
    other.step()
    assert calls == [] and other.iteration == 2

"""PaddleSlim users' code, one import changed (issue 18, "Drop-in"): each binding's argument order, an assignable
`ratio` (and `threshold`), PaddleSlim's GMP attributes and `ratios_stack`, static `masks` by variable name, the
dygraph helpers and skip sets naming layers, and masks that user code writes as bool tensors.

The signatures and the GMP attributes are also compared with PaddleSlim itself in tests/test_paddleslim.py.
"""
import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

from sparsity import GMPUnstructuredPruner, UnstructuredPruner, static
from tests.conftest import build_small_program, small_batches
from tests.sparsity_fixtures import SmallLayer

GMP = dict(stable_iterations=2, pruning_iterations=8, tunning_iterations=4, pruning_steps=4, initial_ratio=0.2)


def dygraph_model(seed=3):
    paddle.seed(seed)
    return SmallLayer()


def train_step(model, optimizer, feed):
    loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(feed["x"])), paddle.to_tensor(feed["y"])).mean()
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()


def pruned_sparsity(pruner):
    return pruner.sparsity()["pruned"]


def static_pruner(static_mode, cls=UnstructuredPruner, *args, **kwargs):
    """SmallNet with its optimizer, startup run, then the pruner: (net, loss, pruner, exe)."""
    main, startup, scope = static_mode
    net, loss = build_small_program()
    paddle.optimizer.Momentum(learning_rate=0.05).minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    kwargs.setdefault("scope", scope)
    return net, loss, cls(main, *args, **kwargs), exe


def mask_sparsity(pruner):
    """Zeros in the masks of the pruned parameters (static: read through their names) over their size."""
    masks = [pruner.masks[p.name] for p in pruner.params]
    arrays = [static.read(pruner.scope, m) if isinstance(m, str) else m.numpy() for m in masks]
    return sum(int((a == 0).sum()) for a in arrays) / sum(a.size for a in arrays)


# ---- argument order -----------------------------------------------------------------------------------
def test_dygraph_takes_threshold_before_ratio_as_paddleslim():
    pruner = UnstructuredPruner(dygraph_model(), "ratio", 0.01, 0.7)  # paddleslim.UnstructuredPruner's order
    assert pruner.ratio == 0.7 and pruner.threshold == 0.01
    pruner.step()
    assert pruned_sparsity(pruner) == pytest.approx(0.7, abs=1e-3)
    by_threshold = UnstructuredPruner(dygraph_model(), "threshold", 0.3)
    by_threshold.step()
    for p in by_threshold.params:
        w = p.handle.numpy()
        assert np.all((w == 0) | (np.abs(w) >= 0.3)) and (w == 0).any()


def observed(pruner):
    return {
        "mode": pruner.mode,
        "ratio": pruner.target,
        "threshold": pruner.threshold if pruner.mode == "threshold" else None,
        "params": sorted(p.name for p in pruner.params),
        "local_sparsity": pruner.local_sparsity,
        "sparse_block": pruner.sparse_block,
        "scope": getattr(pruner, "scope", None),
        "place": str(getattr(pruner, "place", None)),
    }


@pytest.mark.parametrize("cls", [UnstructuredPruner, GMPUnstructuredPruner])
@pytest.mark.parametrize("kind", ["static", "dygraph"])
def test_every_positional_argument_lands_where_paddleslims_does(kind, cls):
    """Every argument of the binding's PaddleSlim signature, given by position in that order, means what it
    means by keyword: the pruner built positionally is the pruner built by keyword."""
    if kind == "static":
        paddle.enable_static()
    try:
        main, startup, scope = paddle.static.Program(), paddle.static.Program(), paddle.static.Scope()
        with paddle.static.scope_guard(scope), paddle.static.program_guard(main, startup), unique_name.guard():
            if kind == "static":
                build_small_program()
                paddle.static.Executor(paddle.CPUPlace()).run(startup)
                model = main
            else:
                model = dygraph_model()
            seen = []
            values = {
                "program": model, "model": model, "mode": "threshold", "ratio": 0.35, "threshold": 0.07, "scope": scope,
                "place": paddle.CPUPlace(), "prune_params_type": "conv1x1_only", "skip_params_func": lambda m: seen.append(m) or set(),
                "local_sparsity": cls is GMPUnstructuredPruner, "sparse_block": [2, 1], "configs": {**GMP, "pruning_iterations": 8},
            }
            names = [p.name for p in cls.SIGNATURES[kind].parameters.values() if p.kind != p.KEYWORD_ONLY]
            positional = cls(*[values[n] for n in names])
            by_keyword = cls(**{n: values[n] for n in names})
            assert observed(positional) == observed(by_keyword)
            assert seen == [model, model]
            got = observed(positional)
            assert got["ratio"] == 0.35 and got["sparse_block"] == [2, 1] and len(got["params"]) == 1  # the 1x1 conv's weight
            assert got["mode"] == ("ratio" if cls is GMPUnstructuredPruner else "threshold")
            assert got["local_sparsity"] is (cls is GMPUnstructuredPruner)
            if kind == "static":
                assert got["scope"] is scope and got["place"] == str(paddle.CPUPlace())
            if cls is UnstructuredPruner:
                assert got["threshold"] == 0.07
            else:
                assert positional.pruning_steps == 4
    finally:
        paddle.disable_static()


def test_arguments_that_do_not_fit_the_binding_name_its_signature():
    model = dygraph_model()
    with pytest.raises(TypeError, match=r"UnstructuredPruner\(model, mode, threshold=0\.01, ratio=0\.55, .*\(dygraph\): .*'scope'"):
        UnstructuredPruner(model, "ratio", scope=None)  # PaddleSlim's dygraph class has no scope either
    with pytest.raises(TypeError, match="too many positional arguments"):
        UnstructuredPruner(model, "ratio", 0.01, 0.5, None, None, False, [1, 1], 0)  # mask_update_period is keyword-only
    with pytest.raises(TypeError, match=r"GMPUnstructuredPruner\(model, ratio=0\.55, prune_params_type=None"):
        GMPUnstructuredPruner(model, 0.5, None, None, None, None, False, [1, 1], GMP)  # the static order on a model


def test_a_paddleslim_style_subclass_passes_its_arguments_by_position():
    class Pruner(UnstructuredPruner):  # as PaddleSlim's dygraph GMPUnstructuredPruner calls its base class
        def __init__(self, model, ratio=0.55, prune_params_type=None, skip_params_func=None, local_sparsity=False, sparse_block=[1, 1]):
            super().__init__(model, "ratio", 0.0, ratio, prune_params_type, skip_params_func, local_sparsity, sparse_block)

    pruner = Pruner(dygraph_model(), 0.6, None, None, True)
    assert pruner.target == 0.6 and pruner.local_sparsity is True and pruner.threshold == 0.0
    pruner.step()
    assert all(v == pytest.approx(0.6, abs=0.02) for v in pruner.sparse_by_layer().values())


# ---- an assignable ratio and threshold --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["static", "dygraph"])
def test_assigned_ratio_is_used_by_the_next_step_and_resumes(kind, request):
    make = pruner_factory(kind, request)
    pruner = make(mode="ratio", ratio=0.3)
    pruner.step()
    assert pruned_sparsity(pruner) == pytest.approx(0.3, abs=1e-3)
    pruner.ratio = 0.7
    assert pruner.ratio == 0.7 and set(pruner.targets().values()) == {0.7}
    pruner.step()
    assert pruned_sparsity(pruner) == pytest.approx(0.7, abs=1e-3) and pruner.mask_ratio == 0.7
    state = pruner.state_dict()
    again = make(mode="ratio", ratio=0.3)
    again.set_state_dict(state)
    assert again.ratio == 0.7 and set(again.targets().values()) == {0.7}


def pruner_factory(kind, request):
    """A factory of pruners over SmallNet: a dygraph model, or a static program in the static_mode fixture."""
    if kind == "dygraph":
        return lambda **kwargs: UnstructuredPruner(dygraph_model(), **kwargs)
    main, startup, scope = request.getfixturevalue("static_mode")
    build_small_program()
    paddle.static.Executor(paddle.CPUPlace()).run(startup)
    return lambda **kwargs: UnstructuredPruner(main, scope=scope, **kwargs)


def test_assigning_a_bad_ratio_is_one_clear_error():
    pruner = UnstructuredPruner(dygraph_model(), "ratio", ratio=0.5)
    for bad in (1.5, -0.1, "0.5", None, True):
        with pytest.raises(ValueError, match=r"pruner\.ratio must be a number in \[0, 1\), got " + repr(bad).replace(".", r"\.")):
            pruner.ratio = bad
    assert pruner.ratio == 0.5
    with pytest.raises(ValueError, match=r"pruner\.ratio applies in mode 'ratio'; this pruner's mode is 'threshold' \(set pruner\.threshold"):
        UnstructuredPruner(dygraph_model(), "threshold").ratio = 0.5
    with pytest.raises(ValueError, match="mode is 'nm' \\(the N:M pattern fixes it\\)"):
        UnstructuredPruner(dygraph_model(), "nm").ratio = 0.5
    with pytest.raises(ValueError, match=r"pruner\.threshold must be a number >= 0, got -1"):
        pruner.threshold = -1


def test_assigned_ratio_keeps_per_layer_ratios():
    pruner = UnstructuredPruner(dygraph_model(), "ratio", ratio=0.3, ratios={"fc.weight": 0.2})
    pruner.ratio = 0.6
    pruner.step()
    names = {key: p.name for key, p in pruner.model.named_parameters()}
    layers = pruner.sparse_by_layer()
    assert layers[names["fc.weight"]] == pytest.approx(0.2, abs=1e-3)
    conv = [names["conv.weight"], names["conv1x1.weight"]]
    assert layers[conv[0]] * 72 + layers[conv[1]] * 64 == pytest.approx(0.6 * (72 + 64), abs=0.5)  # one threshold for both


def test_gmp_assigned_ratio_holds_until_the_next_increment():
    model = dygraph_model()
    pruner = GMPUnstructuredPruner(model, ratio=0.8, configs=GMP)  # increments at iterations 2, 4, 6, 8, then 10, 12
    for _ in range(3):
        pruner.step()
    scheduled = [pruner.schedule.ratio_at(i, 0.8) for i in range(14)]
    pruner.ratio = 0.5
    state = pruner.state_dict()
    pruner.step()  # iteration 3: the assigned ratio
    assert pruner.ratio == 0.5 and mask_sparsity(pruner) == pytest.approx(0.5, abs=1e-3)
    pruner.step()  # iteration 4: the schedule's increment replaces it
    assert pruner.ratio == scheduled[4] and mask_sparsity(pruner) == pytest.approx(scheduled[4], abs=1e-3)
    resumed = GMPUnstructuredPruner(dygraph_model(), ratio=0.8, configs={**GMP, "resume_iteration": 3})
    resumed.set_state_dict(state)
    assert resumed.ratio == 0.5
    resumed.step()
    assert mask_sparsity(resumed) == pytest.approx(0.5, abs=1e-3)
    for _ in range(10):
        pruner.step()
    assert pruner.ratios_stack == [] and pruner.ratio == 0.8
    pruner.ratio = 0.6  # the schedule is over: the new target, for good
    assert pruner.target_ratio == 0.6 and pruner.ratios_stack == []
    for _ in range(3):
        pruner.step()
    assert pruner.ratio == pruner.mask_ratio == 0.6  # (the masks stay at the 80% of weights already zero: ties at 0)


def test_assigned_threshold_is_used_by_the_next_step():
    pruner = UnstructuredPruner(dygraph_model(), "threshold", threshold=0.05)
    pruner.step()
    pruner.threshold = 0.3
    pruner.step()
    for p in pruner.params:
        w = p.handle.numpy()
        assert np.all((w == 0) | (np.abs(w) >= 0.3))


# ---- GMP attributes and ratios_stack -----------------------------------------------------------------------
PADDLESLIM_GMP_TEST = {  # PaddleSlim's own tests/dygraph/test_unstructured_prune_gmp.py
    "stable_iterations": 0, "pruning_iterations": 1000, "tunning_iterations": 1000, "resume_iteration": 500, "pruning_steps": 20, "initial_ratio": 0.05,
}


def test_paddleslims_gmp_test_runs_unchanged_on_a_model():
    pruner = GMPUnstructuredPruner(dygraph_model(), ratio=0.55, configs=PADDLESLIM_GMP_TEST)
    assert pruner.ratio > 0.3
    last_ratio, ratio = 0.0, 0.0
    while len(pruner.ratios_stack) > 0:
        pruner.step()
        last_ratio, ratio = ratio, pruner.ratio
        assert ratio >= last_ratio
    assert ratio == 0.55 and pruner.cur_iteration == 1951


def test_gmp_attributes_and_a_stack_consumed_as_the_schedule_advances(static_mode):
    _, _, pruner, _ = static_pruner(static_mode, GMPUnstructuredPruner, ratio=0.8, configs={**GMP, "stable_iterations": 4})
    assert (pruner.stable_iterations, pruner.pruning_iterations, pruner.tunning_iterations, pruner.pruning_steps) == (4, 8, 4, 4)
    assert (pruner.initial_ratio, pruner.target_ratio, pruner.ratio_increment_period, pruner.cur_iteration) == (0.2, 0.8, 2, 0)
    ramp = [pruner.schedule.ratio_at(4 + 2 * j, 0.8) for j in range(4)]
    assert pruner.ratios_stack == [0.8, 0.8] + ramp[::-1] + [0.0, 0.0]  # the next one last, as PaddleSlim pops it
    lengths = []
    for _ in range(18):
        pruner.step()
        lengths.append(len(pruner.ratios_stack))
    assert lengths == [7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0] and pruner.cur_iteration == 18
    with pytest.raises(AttributeError):
        pruner.pruning_steps = 5  # the schedule is fixed: a resume recomputes the same ratios


# ---- static masks by variable name ------------------------------------------------------------------------
def test_static_masks_are_variable_names_for_the_scope(static_mode):
    main, _, scope = static_mode
    net, loss, pruner, exe = static_pruner(static_mode, mode="ratio", ratio=0.5)
    assert all(isinstance(v, str) and v == k + "_mask" for k, v in pruner.masks.items())
    assert net.fc.weight.name in pruner.masks and net.bn.weight.name in pruner.masks
    pruner.step()
    for param in pruner.masks:  # PaddleSlim's tests/test_unstructured_pruner_quant.py: write every mask
        t_param = pruner.scope.find_var(param).get_tensor()
        t_mask = pruner.scope.find_var(pruner.masks[param]).get_tensor()
        v_param = np.array(t_param)
        t_mask.set((np.abs(v_param) < 0.0).astype(v_param.dtype), pruner.place)
    pruner.update_params()
    assert all(np.count_nonzero(static.read(scope, p.name)) == 0 for p in pruner.params)
    pruner.set_static_masks()
    exe.run(main, feed=next(small_batches(1)), fetch_list=[loss])
    assert all(np.count_nonzero(static.read(scope, p.name)) == 0 for p in pruner.params)


# ---- dygraph helpers and skip sets that name layers ---------------------------------------------------------
NORMS_ALL = [
    "BatchNorm", "GroupNorm", "LayerNorm", "SpectralNorm", "BatchNorm1D", "BatchNorm2D", "BatchNorm3D",
    "InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D", "SyncBatchNorm", "LocalResponseNorm",
]


def docs_skip_params(model):
    """PaddleSlim's docs example of a skip_params_func: normalization layers by full_name(), and biases."""
    skip_params = set()
    for _, sub_layer in model.named_sublayers():
        if type(sub_layer).__name__.split(".")[-1] in NORMS_ALL:
            skip_params.add(sub_layer.full_name())
        for param in sub_layer.parameters(include_sublayers=False):
            if len(param.shape) == 1:
                skip_params.add(param.name)
    return skip_params


def test_a_skip_set_naming_a_layer_skips_its_parameters():
    model = dygraph_model()
    default = UnstructuredPruner(model, "ratio", ratio=0.5)
    docs = UnstructuredPruner(model, "ratio", ratio=0.5, skip_params_func=docs_skip_params)
    weights = {model.conv.weight.name, model.conv1x1.weight.name, model.fc.weight.name}
    assert {p.name for p in docs.params} == {p.name for p in default.params} == weights
    fc_only = UnstructuredPruner(model, "ratio", ratio=0.5, skip_params_func=lambda m: {m.fc.full_name()})
    names = {p.name for p in fc_only.params}
    assert model.fc.weight.name not in names and model.fc.bias.name not in names and model.conv.weight.name in names
    assert not fc_only._should_prune_layer(model.fc) and fc_only._should_prune_layer(model.conv)
    for pruner in (default, docs):
        assert model.bn.full_name() in pruner._get_skip_params(model)
        assert not pruner._should_prune_layer(model.bn) and pruner._should_prune_layer(model.fc)
        assert pruner._should_prune_param(model.fc.weight.name) and not pruner._should_prune_param(model.fc.bias.name)
    conv1x1 = UnstructuredPruner(model, "ratio", ratio=0.5, prune_params_type="conv1x1_only")
    assert len(conv1x1.skip_params) > len(default.skip_params)  # as PaddleSlim's test_unstructured_prune_conv1x1
    assert model.conv.weight.name in conv1x1._get_skip_params_conv1x1(model)


def test_a_container_named_in_a_skip_set_skips_only_its_own_parameters():
    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.body = paddle.nn.Sequential(paddle.nn.Linear(8, 8), paddle.nn.Linear(8, 4))
            self.scale = self.create_parameter([4, 4])

    paddle.seed(0)
    net = Net()
    pruner = UnstructuredPruner(net, "ratio", ratio=0.5, skip_params_func=lambda m: {m.full_name(), m.body.full_name()})
    assert {p.name for p in pruner.params} == {net.body[0].weight.name, net.body[1].weight.name, net.body[0].bias.name, net.body[1].bias.name}
    assert not pruner._should_prune_layer(net) and pruner._should_prune_layer(net.body[0])


def test_paddleslims_dygraph_test_loops_run_unchanged():
    """The loops of PaddleSlim's tests/dygraph/test_unstructured_prune.py over _should_prune_layer, and its helpers."""
    model = dygraph_model()
    pruner = UnstructuredPruner(model, mode="ratio", ratio=0.55)
    ori_threshold = pruner.threshold
    pruner.update_threshold()
    assert pruner.threshold >= ori_threshold and pruned_sparsity(pruner) == pytest.approx(0.55, abs=1e-3)
    pruner._update_masks()
    values = []
    for _, sub_layer in model.named_sublayers():
        if not pruner._should_prune_layer(sub_layer):
            continue
        for param in sub_layer.parameters(include_sublayers=False):
            if pruner._should_prune_param(param.name):
                values.append(np.abs(param.numpy()).ravel())
    assert pruner.summarize_weights(model, 1.0) == pytest.approx(np.concatenate(values).max())


def test_mask_parameters_and_the_forward_pre_hook():
    model = dygraph_model()
    pruner = UnstructuredPruner(model, "ratio", ratio=0.5)
    mask = paddle.zeros(model.fc.weight.shape, "bool")
    pruner.mask_parameters(model.fc.weight, mask)
    assert np.count_nonzero(model.fc.weight.numpy()) == 0
    paddle.assign(paddle.zeros(model.conv.weight.shape, "float32"), output=pruner.masks[model.conv.weight.name])
    hook = model.conv.register_forward_pre_hook(pruner._forward_pre_hook)
    model(paddle.to_tensor(next(small_batches(1))["x"]))
    hook.remove()
    assert np.count_nonzero(model.conv.weight.numpy()) == 0 and np.count_nonzero(model.conv1x1.weight.numpy()) > 0


# ---- masks written as bool tensors --------------------------------------------------------------------------
def write_bool_masks(pruner, t):
    """PaddleSlim's tests/dygraph/test_unstructured_prune_quant.py: every mask assigned a bool tensor."""
    for _, sub_layer in pruner.model.named_sublayers():
        for param in sub_layer.parameters(include_sublayers=False):
            mask = pruner.masks.get(param.name)
            paddle.assign(paddle.abs(param) < t, output=mask)


def test_dygraph_bool_masks_do_not_break_the_next_update():
    model = dygraph_model()
    optimizer = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
    pruner = UnstructuredPruner(model, mode="ratio", ratio=0.55)
    write_bool_masks(pruner, 0.0)
    pruner.update_params()
    assert pruned_sparsity(pruner) == 1.0
    assert all(m.dtype == paddle.float32 for m in pruner.masks.values())  # the state dict keeps float32 masks
    write_bool_masks(pruner, 1.0)
    pruner.set_static_masks()
    frozen = {p.name: pruner.masks[p.name].numpy() != 0 for p in pruner.params}
    for feed in small_batches(3):
        train_step(model, optimizer, feed)
        for name, keep in frozen.items():  # the same pattern, written as a bool mask before every step
            paddle.assign(paddle.to_tensor(keep), output=pruner.masks[name])
        pruner.step()
    assert pruned_sparsity(pruner) == 1.0
    assert all(str(v.dtype) == "paddle.float32" for k, v in model.state_dict().items() if k.endswith("_mask"))


def test_static_bool_masks_do_not_break_the_next_update(static_mode):
    main, _, scope = static_mode
    _, loss, pruner, exe = static_pruner(static_mode, mode="ratio", ratio=0.5)
    feeds = list(small_batches(4))
    pruner.step()
    exe.run(main, feed=feeds[0], fetch_list=[loss])  # the training program's masking ran with float32 masks

    def write_bool(t):
        for p in pruner.params:
            keep = np.abs(static.read(scope, p.name)) > t
            scope.find_var(pruner.masks[p.name]).get_tensor().set(keep, pruner.place)
        return {p.name: static.read(scope, pruner.masks[p.name]) for p in pruner.params}

    masks = write_bool(0.05)
    assert all(m.dtype == np.bool_ for m in masks.values())
    pruner.update_params()
    for name, keep in masks.items():
        assert np.all(static.read(scope, name)[~keep] == 0)
        assert static.read(scope, pruner.masks[name]).dtype == np.float32
    exe.run(main, feed=feeds[1], fetch_list=[loss])
    pruner.step()
    write_bool(0.08)
    pruner.set_static_masks()  # PaddleSlim's quantization flow: masks written, then fixed
    exe.run(main, feed=feeds[2], fetch_list=[loss])
    pruner.step()
    write_bool(0.1)
    pruner.update_masks()
    exe.run(main, feed=feeds[3], fetch_list=[loss])
    assert pruner.mask_ratio == 0.5 and mask_sparsity(pruner) >= 0.5  # the weights the bool masks zeroed tie at 0

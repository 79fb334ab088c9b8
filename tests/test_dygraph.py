"""The dygraph binding: same masks as a static program, GMP to target and exact resume, export, Model.fit."""
import os

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

from sparsity import GMPUnstructuredPruner, PruningCallback, UnstructuredPruner, static
from tests.conftest import small_batches
from tests.sparsity_fixtures import (
    RULES,
    SmallLayer,
    random_state,
    static_small_layer,
    write_structural,
)

GMP = dict(stable_iterations=2, pruning_iterations=8, tunning_iterations=4, pruning_steps=4, initial_ratio=0.2)


def dygraph_model(state=None):
    paddle.seed(3)
    model = SmallLayer()
    if state:
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    return model


def train_step(model, optimizer, feed):
    loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(feed["x"])), paddle.to_tensor(feed["y"])).mean()
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()


def static_masks(state, **kwargs):
    """{structural name: mask} from the static binding, the same weights written through structural names."""
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            layer, main, startup, _ = static_small_layer()
            paddle.static.Executor(paddle.CPUPlace()).run(startup)
            write_structural(scope, layer, state)
            names = static.structural_names(layer)
            pruner = UnstructuredPruner(main, scope=scope, startup_program=startup, **kwargs)
            pruner.step()
            return {names[p.name]: static.read(scope, pruner.masks[p.name]) for p in pruner.params}
    finally:
        paddle.disable_static()


@pytest.mark.parametrize("name", sorted(RULES))
def test_same_weights_give_the_same_masks_as_a_static_program(name):
    state = random_state(SmallLayer())
    model = dygraph_model(state)
    pruner = UnstructuredPruner(model, "ratio", ratio=0.6, rule=RULES[name])
    pruner.step()
    names = {p.name: key for key, p in model.named_parameters()}
    got = {names[p.name]: pruner.masks[p.name].numpy() for p in pruner.params}
    want = static_masks(state, mode="ratio", ratio=0.6, rule=RULES[name])
    assert got.keys() == want.keys() == {"conv.weight", "conv1x1.weight", "fc.weight"}
    for key in got:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert 0 < (got["fc.weight"] == 0).mean() < 1


@pytest.mark.parametrize("kwargs", [dict(mode="threshold", threshold=0.5), dict(mode="nm"), dict(mode="ratio", ratio=0.5, local_sparsity=True)])
def test_other_selections_match_a_static_program(kwargs):
    state = random_state(SmallLayer(), seed=1)
    pruner = UnstructuredPruner(dygraph_model(state), **kwargs)
    pruner.step()
    want = static_masks(state, **kwargs)
    names = {p.name: key for key, p in pruner.model.named_parameters()}
    for p in pruner.params:
        np.testing.assert_array_equal(pruner.masks[p.name].numpy(), want[names[p.name]])


def test_masks_are_buffers_in_the_state_dict_and_skip_norm_and_bias():
    model = dygraph_model()
    pruner = UnstructuredPruner(model, "ratio", ratio=0.5)
    keys = set(model.state_dict())
    assert {"conv.weight_mask", "fc.weight_mask", "bn.weight_mask", "fc.bias_mask"} <= keys
    assert {p.name for p in pruner.params} == {model.conv.weight.name, model.conv1x1.weight.name, model.fc.weight.name}
    assert model.bn.weight.name in pruner.skip_params and model.fc.bias.name in pruner.skip_params
    assert not any(name.endswith("_mask") for name, _ in model.named_parameters())


def run_gmp(iterations, start=0, checkpoint=None):
    """GMP to 0.8 on SmallLayer with momentum; optionally resumed from (model, optimizer, pruner) state dicts."""
    with unique_name.guard():  # the variable names of a fresh process, which the optimizer's state is keyed by
        return gmp_steps(iterations, start, checkpoint)


def gmp_steps(iterations, start, checkpoint):
    model = dygraph_model()
    optimizer = paddle.optimizer.Momentum(0.05, parameters=model.parameters())
    pruner = GMPUnstructuredPruner(model, ratio=0.8, configs={**GMP, "resume_iteration": start})
    if checkpoint:
        model.set_state_dict(checkpoint["model"])
        optimizer.set_state_dict(checkpoint["optimizer"])
        pruner.set_state_dict(checkpoint["pruner"])
    ratios = []
    for feed in list(small_batches(14))[start : start + iterations]:
        train_step(model, optimizer, feed)
        pruner.step()
        ratios.append(pruner.sparsity()["pruned"])
    return model, optimizer, pruner, ratios


def test_gmp_reaches_its_target_and_resumes_exactly(tmp_path):
    model, _, pruner, ratios = run_gmp(14)
    assert ratios[0] == 0.0 and ratios[-1] == pytest.approx(0.8, abs=1e-3)
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    for p in pruner.params:
        assert np.all(p.handle.numpy()[pruner.masks[p.name].numpy() == 0] == 0)
    first_model, first_opt, first_pruner, _ = run_gmp(5)
    paddle.save({"model": first_model.state_dict(), "optimizer": first_opt.state_dict(), "pruner": first_pruner.state_dict()}, str(tmp_path / "ckpt.pdparams"))
    resumed, _, resumed_pruner, _ = run_gmp(9, start=5, checkpoint=paddle.load(str(tmp_path / "ckpt.pdparams")))
    full, part = model.state_dict(), resumed.state_dict()
    assert full.keys() == part.keys() and any(k.endswith("_mask") for k in full)
    for key in full:
        np.testing.assert_array_equal(part[key].numpy(), full[key].numpy(), err_msg=key)
    assert resumed_pruner.state_dict() == pruner.state_dict()


def test_jit_save_exports_no_masks_and_the_same_outputs(tmp_path):
    model = dygraph_model()
    pruner = UnstructuredPruner(model, "ratio", ratio=0.7)
    pruner.step()
    model.eval()
    path = str(tmp_path / "exported")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32")])
    loaded = paddle.jit.load(path)
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype("float32"))
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    exported = {v.name for v in loaded.parameters()} | set(loaded.state_dict())
    assert exported and not any("mask" in name for name in exported)
    assert os.path.getsize(path + ".pdiparams") < sum(int(np.prod(p.shape)) * 4 for p in model.parameters()) + 4096


def test_callback_prunes_during_model_fit():
    model = dygraph_model()
    pruner = UnstructuredPruner(model, "ratio", ratio=0.75)
    batches = list(small_batches(4))
    data = paddle.io.TensorDataset([paddle.to_tensor(np.concatenate([b["x"] for b in batches])), paddle.to_tensor(np.concatenate([b["y"] for b in batches]))])
    trainer = paddle.Model(model)
    trainer.prepare(paddle.optimizer.Momentum(0.05, parameters=model.parameters()), paddle.nn.CrossEntropyLoss())
    trainer.fit(data, batch_size=16, epochs=1, verbose=0, callbacks=[PruningCallback(pruner)])
    assert pruner.iteration == 4 and pruner.sparsity()["pruned"] == pytest.approx(0.75, abs=1e-3)


def test_a_layer_in_static_mode_is_refused():
    paddle.enable_static()
    try:
        with pytest.raises(ValueError, match="a paddle.nn.Layer is pruned in dynamic mode"):
            UnstructuredPruner(SmallLayer(), "ratio")
    finally:
        paddle.disable_static()

"""Against PaddleSlim 2.6.0 itself: checkpoints move both ways through paddle.static.save / load, GMP
ratios change at the same iterations, both bindings' constructors take PaddleSlim's arguments in its
order, and the GMP attributes (ratios_stack included) match after every step.

PaddleSlim runs in its own environment (Paddle 2.6.2, numpy<2, decorator, six, requests), found by
$PADDLESLIM_PYTHON or at .venv-paddleslim/bin/python in the repository; without it these tests skip.
"""
import json
import os
import subprocess

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name

from sparsity import GMPUnstructuredPruner, UnstructuredPruner, static
from sparsity.schedule import GMPSchedule
from tests.scripts import ROOT

PYTHON = os.environ.get("PADDLESLIM_PYTHON", os.path.join(ROOT, ".venv-paddleslim", "bin", "python"))
pytestmark = pytest.mark.skipif(
    not os.path.exists(PYTHON), reason=f"PaddleSlim's environment is absent ({PYTHON}); set PADDLESLIM_PYTHON to its interpreter"
)

# The program both sides build, PaddleSlim's demo order: pruner, then minimize with its no_grad_set.
PROGRAM = '''
def build(make_pruner):
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = 1
    with paddle.static.program_guard(main, startup), unique_name.guard():
        x = paddle.static.data("x", [None, 1, 8, 8], "float32")
        y = paddle.static.data("y", [None, 1], "int64")
        conv, bn, fc = paddle.nn.Conv2D(1, 4, 3, padding=1), paddle.nn.BatchNorm2D(4), paddle.nn.Linear(4 * 8 * 8, 10)
        logits = fc(paddle.flatten(paddle.nn.functional.relu(bn(conv(x))), 1))
        loss = paddle.nn.functional.cross_entropy(logits, y).mean()
        pruner = make_pruner(main)
        paddle.optimizer.Momentum(0.05).minimize(loss, no_grad_set=pruner.no_grad_set)
    return main, startup, loss, pruner


def batches(count):
    rng = np.random.default_rng(0)
    for _ in range(count):
        x = rng.standard_normal((16, 1, 8, 8)).astype("float32")
        yield {"x": x, "y": x.reshape(16, -1)[:, :10].argmax(axis=1).reshape(16, 1).astype("int64")}
'''

# PaddleSlim's side: train and save, or load our checkpoint, check it and train on.
SLIM_SIDE = '''
import zlib  # before Paddle: its bundled zlib otherwise crashes PaddleSlim's import
import json, sys
import numpy as np, paddle
from paddle.utils import unique_name
from paddleslim.prune.unstructured_pruner import GMPUnstructuredPruner, UnstructuredPruner
paddle.enable_static()
''' + PROGRAM + '''
action, prefix = sys.argv[1], sys.argv[2]
if action == "signatures":  # PaddleSlim's constructors: (name, kind, repr(default)) after self
    import inspect
    from paddleslim import dygraph as slim_dygraph
    def described(cls):
        return [[p.name, p.kind.name, repr(p.default)] for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]
    print(json.dumps({
        "static": {"UnstructuredPruner": described(UnstructuredPruner), "GMPUnstructuredPruner": described(GMPUnstructuredPruner)},
        "dygraph": {"UnstructuredPruner": described(slim_dygraph.UnstructuredPruner), "GMPUnstructuredPruner": described(slim_dygraph.GMPUnstructuredPruner)},
    }))
    sys.exit()
if action == "gmp":  # PaddleSlim's GMP attributes at the start and after every step
    out = {}
    for key, cfg in json.loads(prefix).items():
        _, startup, _, pruner = build(lambda main: GMPUnstructuredPruner(main, ratio=0.8, place=paddle.CPUPlace(), configs=cfg))
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        names = ["stable_iterations", "pruning_iterations", "tunning_iterations", "pruning_steps", "initial_ratio",
                 "target_ratio", "ratio_increment_period", "cur_iteration", "ratio", "ratios_stack"]
        seq = [json.loads(json.dumps({n: getattr(pruner, n) for n in names}))]  # a copy: step() pops the stack itself
        while pruner.ratios_stack or len(seq) < 3:
            pruner.step()
            seq.append(json.loads(json.dumps({n: getattr(pruner, n) for n in ("cur_iteration", "ratio", "ratios_stack")})))
        out[key] = seq
    print(json.dumps(out))
    sys.exit()
if action == "ratios":
    out = {}
    for key, cfg in json.loads(prefix).items():
        _, startup, _, pruner = build(lambda main: GMPUnstructuredPruner(main, ratio=0.8, place=paddle.CPUPlace(), configs=cfg))
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        seq = []
        for _ in range(cfg["stable_iterations"] + cfg["pruning_iterations"] + cfg["tunning_iterations"] + 3):
            pruner.step()
            seq.append(pruner.ratio)
        out[key] = seq
    print(json.dumps(out))
    sys.exit()
main, startup, loss, pruner = build(lambda main: UnstructuredPruner(main, "ratio", ratio=0.5, place=paddle.CPUPlace()))
exe = paddle.static.Executor(paddle.CPUPlace())
exe.run(startup)
scope = paddle.static.global_scope()
if action == "save":
    for feed in batches(3):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    paddle.static.save(main, prefix)
    print(json.dumps({"pruned": sorted(n for n in pruner.masks if pruner._should_prune_param(n))}))
else:
    paddle.static.load(main, prefix, exe)
    saved = paddle.static.load_program_state(prefix)
    equal = all(np.array_equal(np.array(scope.find_var(n).get_tensor()), v) for n, v in saved.items() if scope.find_var(n))
    zeros = {n: np.array(scope.find_var(m).get_tensor()) == 0 for n, m in pruner.masks.items()}
    for feed in batches(2):  # PaddleSlim masks the weights at the start of each run (gradients then move them)
        exe.run(main, feed=feed, fetch_list=[loss])
    pruner.update_params()  # what PaddleSlim's docs ask for before saving or evaluating
    held = all(np.all(np.array(scope.find_var(n).get_tensor())[z] == 0) for n, z in zeros.items())
    print(json.dumps({"loaded_equal": bool(equal), "zeros_held": bool(held), "masked": sum(int(z.sum()) for z in zeros.values())}))
'''

namespace = {"paddle": paddle, "np": np, "unique_name": unique_name}
exec(PROGRAM, namespace)  # noqa: S102 - our own program text, shared with PaddleSlim's side


def slim(tmp_path, *args):
    script = tmp_path / "slim_side.py"
    script.write_text(SLIM_SIDE)
    result = subprocess.run([PYTHON, str(script), *map(str, args)], capture_output=True, text=True, timeout=300, env={**os.environ, "FLAGS_enable_pir_api": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def static_run():
    paddle.enable_static()
    with paddle.static.scope_guard(paddle.static.Scope()):
        yield paddle.static.global_scope()
    paddle.disable_static()


def test_paddleslim_checkpoint_resumes_with_ours(tmp_path, static_run):
    prefix = str(tmp_path / "slim")
    slim_pruned = slim(tmp_path, "save", prefix)["pruned"]
    scope = static_run
    main, startup, loss, pruner = namespace["build"](lambda main: UnstructuredPruner(main, "ratio", ratio=0.5, place=paddle.CPUPlace()))
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    paddle.static.load(main, prefix, exe)
    assert sorted(p.name for p in pruner.params) == slim_pruned
    saved = paddle.static.load_program_state(prefix)
    for name in static.persistables(main):
        np.testing.assert_array_equal(static.read(scope, name), saved[name], err_msg=name)
    masks = {p.name: saved[p.name + "_mask"] for p in pruner.params}
    zeros = sum(int((m == 0).sum()) for m in masks.values()) / sum(m.size for m in masks.values())
    assert 0.45 < zeros <= 0.5  # PaddleSlim's ratio 0.5 (it prunes a weight or two fewer than round(ratio * n))
    pruner.update_params()  # PaddleSlim masks at the start of its next run; ours masks after updates: apply once now
    for feed in namespace["batches"](2):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    for name, mask in masks.items():
        assert np.all(static.read(scope, name)[mask == 0] == 0)


def test_our_checkpoint_resumes_with_paddleslim(tmp_path, static_run):
    main, startup, loss, pruner = namespace["build"](lambda main: UnstructuredPruner(main, "ratio", ratio=0.5, place=paddle.CPUPlace()))
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    for feed in namespace["batches"](3):
        exe.run(main, feed=feed, fetch_list=[loss])
        pruner.step()
    prefix = str(tmp_path / "ours")
    paddle.static.save(main, prefix)
    result = slim(tmp_path, "load", prefix)
    assert result["loaded_equal"] and result["zeros_held"]
    assert result["masked"] == sum(int((static.read(static_run, m) == 0).sum()) for m in pruner.masks.values())


def test_gmp_ratios_change_where_paddleslims_do(tmp_path):
    configs = {
        "aligned": dict(stable_iterations=22, pruning_iterations=44, tunning_iterations=10, pruning_steps=4, initial_ratio=0.2, resume_iteration=0),
        "epochs": dict(stable_iterations=120, pruning_iterations=300, tunning_iterations=50, pruning_steps=25, initial_ratio=0.15, resume_iteration=0),
    }
    theirs = slim(tmp_path, "ratios", json.dumps(configs))
    for key, cfg in configs.items():
        schedule = GMPSchedule.from_configs(cfg)
        assert [schedule.ratio_at(i, 0.8) for i in range(len(theirs[key]))] == theirs[key], key


def test_gmp_pruner_ratio_rises_like_paddleslims(tmp_path):
    cfg = dict(stable_iterations=22, pruning_iterations=44, tunning_iterations=10, pruning_steps=4, initial_ratio=0.2, resume_iteration=0)
    theirs = slim(tmp_path, "ratios", json.dumps({"aligned": cfg}))["aligned"]
    paddle.enable_static()
    try:
        with paddle.static.scope_guard(paddle.static.Scope()):
            _, startup, _, pruner = namespace["build"](lambda main: GMPUnstructuredPruner(main, ratio=0.8, place=paddle.CPUPlace(), configs=cfg))
            paddle.static.Executor(paddle.CPUPlace()).run(startup)
            ours = []
            for _ in theirs:
                pruner.step()
                ours.append(pruner.ratio)
    finally:
        paddle.disable_static()
    assert ours == theirs


def ours_described(signature):
    return [[p.name, p.kind.name, repr(p.default)] for p in signature.parameters.values() if p.kind != p.KEYWORD_ONLY]


def test_signatures_are_paddleslims(tmp_path):
    """Both bindings take PaddleSlim's arguments in PaddleSlim's order with its defaults (the dygraph classes put
    threshold before ratio and have no scope or place); the library's own arguments are keyword-only."""
    theirs = slim(tmp_path, "signatures", "-")
    for kind in ("static", "dygraph"):
        for cls in (UnstructuredPruner, GMPUnstructuredPruner):
            signature = cls.SIGNATURES[kind]
            assert ours_described(signature) == theirs[kind][cls.__name__], (kind, cls.__name__)
            extras = [p for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY]
            assert extras and len(extras) + len(theirs[kind][cls.__name__]) == len(signature.parameters)
    assert [p[0] for p in theirs["dygraph"]["UnstructuredPruner"][:4]] == ["model", "mode", "threshold", "ratio"]


GMP_CONFIGS = {
    "aligned": dict(stable_iterations=22, pruning_iterations=44, tunning_iterations=22, pruning_steps=4, initial_ratio=0.2, resume_iteration=0),
    "resumed": dict(stable_iterations=22, pruning_iterations=44, tunning_iterations=22, pruning_steps=4, initial_ratio=0.2, resume_iteration=30),
    "no_stable": dict(stable_iterations=0, pruning_iterations=60, tunning_iterations=35, pruning_steps=5, initial_ratio=0.05, resume_iteration=0),
}


def test_gmp_attributes_and_ratios_stack_like_paddleslims(tmp_path):
    """PaddleSlim's GMP attributes, at the start and after every step until its ratios_stack is empty: the same
    values, the stack consumed at the same steps (phases of whole periods, resumed or not)."""
    theirs = slim(tmp_path, "gmp", json.dumps(GMP_CONFIGS))
    paddle.enable_static()
    try:
        for key, cfg in GMP_CONFIGS.items():
            with paddle.static.scope_guard(paddle.static.Scope()):
                _, startup, _, pruner = namespace["build"](lambda main: GMPUnstructuredPruner(main, ratio=0.8, place=paddle.CPUPlace(), configs=cfg))
                paddle.static.Executor(paddle.CPUPlace()).run(startup)
                expected = theirs[key]
                assert {n: getattr(pruner, n) for n in expected[0]} == expected[0], key
                for i, want in enumerate(expected[1:]):
                    pruner.step()
                    assert {n: getattr(pruner, n) for n in want} == want, f"{key}, step {i + 1}"
                assert pruner.ratios_stack == [] and pruner.ratio == 0.8
    finally:
        paddle.disable_static()

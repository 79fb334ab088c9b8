"""suite.artefacts.safe_pickle: crafted pickles are refused before they run, Paddle's own files load bit for bit as Paddle loads them."""
import codecs
import collections
import io
import os
import pickle
import re
import struct
import subprocess
import tarfile
import time

import numpy as np
import paddle
import pytest

from suite.artefacts import safe_pickle
from suite.data import load_dataset
from suite.errors import CheckpointError, DataError, run_cli
from tests.conftest import build_small_program, small_batches
from tests.scripts import ROOT


class Call:
    """Pickles as a call of `func(*args)`: what a malicious weights file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# name -> (the global the pickle names, a payload that creates `marker` when called)
PAYLOADS = {
    "os.system": ("posix.system", lambda marker: Call(os.system, f"touch {marker}")),
    "builtins.exec": ("builtins.exec", lambda marker: Call(exec, f"open({str(marker)!r}, 'w').close()")),
    "subprocess.Popen": ("subprocess.Popen", lambda marker: Call(subprocess.Popen, ["touch", str(marker)])),
    "nested": ("posix.system", lambda marker: {"blocks": [{"fc.weight": Call(os.system, f"touch {marker}")}]}),
}


def weights_with(payload):
    """A state dict of real arrays with `payload` as one more entry."""
    return {"conv.weight": np.ones((4, 1, 3, 3), np.float32), "evil": payload, "fc.bias": np.zeros(10, np.float32)}


def write_pickle(path, obj, protocol=4):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def assert_never_ran(marker):
    time.sleep(0.05)  # Popen returns once its child has started; `touch` takes a few milliseconds
    assert not os.path.exists(marker)


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_payloads_are_live_under_plain_pickle(tmp_path, kind):
    """The control: plain pickle runs each payload, so the refusals below are refusals of real attacks."""
    marker = tmp_path / "ran"
    result = pickle.loads(pickle.dumps(weights_with(PAYLOADS[kind][1](marker))))
    if isinstance(result["evil"], subprocess.Popen):
        result["evil"].wait()
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.parametrize("place", ["state dict", ".pdparams", ".pdopt"])
def test_crafted_pickle_is_refused_before_it_runs(tmp_path, kind, place, protocol):
    refused_global, make = PAYLOADS[kind]
    marker = tmp_path / "ran"
    evil = weights_with(make(marker))
    if place == "state dict":
        path = tmp_path / "pretrained.pdparams"
        write_pickle(path, evil, protocol)
        load = lambda: safe_pickle.load_arrays(str(path))
    else:
        prefix = tmp_path / "model"
        write_pickle(f"{prefix}.pdparams", {"conv.weight": np.ones(3, np.float32)})
        path = f"{prefix}{place}"
        write_pickle(path, evil, protocol)
        load = lambda: safe_pickle.load_program_state(str(prefix))
    with pytest.raises(safe_pickle.UnsafePickleError) as refusal:
        load()
    assert isinstance(refusal.value, CheckpointError)
    message = str(refusal.value)
    assert str(path) in message and f" {refused_global}," in message and "malicious" in message
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.load(str(path))
    assert_never_ran(marker)


def test_refusal_is_one_error_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "model.pdparams"
    marker = tmp_path / "ran"
    write_pickle(path, weights_with(Call(os.system, f"touch {marker}")))
    assert run_cli(lambda argv: safe_pickle.load_arrays(str(path))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path} is not a weights file Paddle writes: ")
    assert "posix.system" in err
    assert_never_ran(marker)


def test_broken_files_are_named_not_tracebacks(tmp_path):
    good = tmp_path / "good.pdparams"
    write_pickle(good, {"w": np.arange(1000, dtype=np.float32)})
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(good.read_bytes()[:1500])
    text = tmp_path / "notes.pdparams"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    for path in (cut, text, empty):
        with pytest.raises(CheckpointError, match=re.escape(f"{path} is not a weights file Paddle writes: truncated")):
            safe_pickle.load_arrays(str(path))
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read {tmp_path}/missing.pdparams: No such file")):
        safe_pickle.load_arrays(str(tmp_path / "missing.pdparams"))
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path}/nothing.pdparams not found")):
        safe_pickle.load_program_state(str(tmp_path / "nothing"))


class Built:
    """Pickles as an OrderedDict on which BUILD then sets `state` as attributes (no writer of weights does that)."""

    def __init__(self, state, items=()):
        self.state, self.items = state, items

    def __reduce__(self):
        return collections.OrderedDict, (), self.state, None, iter(self.items)


@pytest.mark.parametrize("state", [{"pop": 1}, {"pop": np.dtype}, {"items": 1}, {"keys": tuple}])
@pytest.mark.parametrize("where", ["the file", "an entry"])
def test_build_setting_attributes_on_a_dict_is_the_loaders_refusal(tmp_path, capsys, state, where):
    """Attributes such as `pop` or `items` on the loaded dict would hijack the code reading it (they escaped as
    TypeErrors); every failure inside loading is the loader's one refusal line."""
    path = tmp_path / "model.pdparams"
    crafted = Built(state, [("w", np.ones(3, np.float32))])
    write_pickle(path, crafted if where == "the file" else {"layer": crafted})
    for load in (safe_pickle.load, safe_pickle.load_arrays):
        assert run_cli(lambda argv: load(str(path))) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path} is not a weights file Paddle writes: ")


@pytest.mark.parametrize("content, complaint", [
    ([np.ones(3)], "holds a list, not a dict of arrays"),
    ({"w": np.ones(3), "LR_Scheduler": {"last_epoch": 3}}, "entry 'LR_Scheduler' is a dict"),
    ({"w": np.array([1, "a"], dtype=object)}, "entry 'w' is an array of object"),
    ({3: np.ones(3)}, "entry 3 is an array of float64, not an array of numbers named by a string"),
])
def test_files_that_are_not_dicts_of_arrays_are_refused(tmp_path, content, complaint):
    path = tmp_path / "model.pdparams"
    write_pickle(path, content)
    with pytest.raises(CheckpointError, match=complaint):
        safe_pickle.load_arrays(str(path))


def assert_same_arrays(ours, paddles):
    """Same keys in the same order, and each value the same dtype, shape and bytes (Paddle's Tensors as arrays)."""
    assert list(ours) == list(paddles)
    for name, value in paddles.items():
        expected = value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
        assert type(ours[name]) is np.ndarray, name
        assert (ours[name].dtype, ours[name].shape) == (expected.dtype, expected.shape), name
        assert ours[name].tobytes() == expected.tobytes(), name


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_layer_state_dict_loads_as_paddle_load(tmp_path, protocol):
    paddle.seed(protocol)
    path = str(tmp_path / "lenet.pdparams")
    paddle.save(paddle.vision.models.LeNet().state_dict(), path, protocol=protocol)
    ours = safe_pickle.load_arrays(path)
    assert safe_pickle.NAME_TABLE not in ours and "features.0.weight" in ours
    assert_same_arrays(ours, paddle.load(path))


def test_optimizer_state_dict_loads_as_paddle_load(tmp_path):
    model = paddle.vision.models.LeNet()
    optimizer = paddle.optimizer.Momentum(paddle.optimizer.lr.StepDecay(0.1, 1), parameters=model.parameters())
    model(paddle.randn([2, 1, 28, 28])).mean().backward()
    optimizer.step()
    optimizer._learning_rate.step()
    path = str(tmp_path / "lenet.pdopt")
    paddle.save(optimizer.state_dict(), path)
    ours, paddles = safe_pickle.load(path), paddle.load(path)
    assert ours.pop("LR_Scheduler") == paddles.pop("LR_Scheduler")
    assert_same_arrays(ours, paddles)
    assert any("velocity" in name and value.any() for name, value in ours.items())


@pytest.mark.parametrize("protocol", [2, 4])
def test_static_save_loads_as_load_program_state(static_mode, tmp_path, protocol):
    main, startup, _ = static_mode
    _, loss = build_small_program()
    paddle.optimizer.Momentum(0.1, momentum=0.9).minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    for feed in small_batches(2):
        exe.run(main, feed=feed, fetch_list=[loss])
    prefix = str(tmp_path / "model")
    paddle.static.save(main, prefix, protocol=protocol)
    ours = safe_pickle.load_program_state(prefix)
    assert_same_arrays(ours, paddle.static.load_program_state(prefix))
    velocities = [v for name, v in safe_pickle.load_arrays(prefix + ".pdopt").items() if "velocity" in name]
    assert len(velocities) == 8 and all(v.any() for v in velocities)  # SmallNet's 8 trainable parameters, trained
    assert_same_arrays(safe_pickle.load_program_state(prefix + ".pdparams"), ours)


def test_split_large_arrays_are_joined_as_paddle_joins_them(tmp_path):
    """The layout protocol-2/3 saves give arrays over 1 GiB (io_utils._unpack_saved_dict), here on small arrays."""
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = str(tmp_path / "big.pdparams")
    write_pickle(path, {
        "b": np.ones(2, np.float16),
        "w@@.0": w.ravel()[:10], "w@@.1": w.ravel()[10:20], "w@@.2": w.ravel()[20:],
        safe_pickle.SPLIT_INFO: {"w": {"OriginShape": (2, 3, 4), "slices": ["w@@.0", "w@@.1", "w@@.2"]}},
        safe_pickle.NAME_TABLE: {"b": "linear_0.b_0", "w": "linear_0.w_0"},
    }, protocol=3)
    ours = safe_pickle.load_arrays(path)
    assert_same_arrays(ours, paddle.load(path))
    np.testing.assert_array_equal(ours["w"], w)
    write_pickle(path, {"w@@.0": w.ravel(), safe_pickle.SPLIT_INFO: {"w": {"OriginShape": (2, 3, 4), "slices": ["w@@.0", "w@@.1"]}}})
    with pytest.raises(CheckpointError, match=r"UnpackBigParamInfor@@ entry .*KeyError: 'w@@.1'"):
        safe_pickle.load_arrays(path)


OTHER_NUMPY_WRITER = """
import sys, numpy as np, paddle
paddle.seed(7)
net = paddle.nn.Sequential(paddle.nn.Conv2D(1, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Linear(4, 3))
state = net.state_dict()
for protocol in (2, 3, 4):
    paddle.save(state, f"{sys.argv[1]}/p{protocol}.pdparams", protocol=protocol)
np.savez(f"{sys.argv[1]}/expected.npz", **{k: v.numpy() for k, v in state.items()})
print(np.__version__)
"""


NUMPY_MAJOR = int(np.__version__.split(".")[0])


def other_numpy_python():
    """The interpreter of the venv with the other NumPy major version, as run.sh names them (VENV, VENV26)."""
    venv = os.environ.get("VENV", ".venv") if NUMPY_MAJOR < 2 else os.environ.get("VENV26", ".venv-paddle26")
    return os.path.join(ROOT, venv, "bin", "python")


@pytest.fixture(scope="module")
def other_numpy_files(tmp_path_factory):
    """State dicts written by paddle.save under the other NumPy major version (1.x <-> 2.x) in a subprocess."""
    python = other_numpy_python()
    if not os.path.exists(python):
        reason = (f"no {python} to write files with NumPy {'2' if NUMPY_MAJOR < 2 else '1.x'}; "
                  f"set VENV / VENV26 (as for run.sh) to the venv that has it")
        if os.environ.get("CI"):  # run.sh test makes both environments before any test: in CI this is a bug
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("other_numpy")
    result = subprocess.run([python, "-c", OTHER_NUMPY_WRITER, str(folder)], capture_output=True, text=True, timeout=300, check=False,
                            env={k: v for k, v in os.environ.items() if k != "FLAGS_enable_pir_api"})
    assert result.returncode == 0, result.stderr[-3000:]
    written_by = result.stdout.split()[-1]
    assert int(written_by.split(".")[0]) != NUMPY_MAJOR, f"{python} has NumPy {written_by}, as this one does"
    return folder


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_files_from_the_other_numpy_major_version_load(other_numpy_files, protocol):
    path = str(other_numpy_files / f"p{protocol}.pdparams")
    ours = safe_pickle.load_arrays(path)
    with np.load(other_numpy_files / "expected.npz", allow_pickle=False) as expected:
        assert_same_arrays(ours, dict(expected))
    assert_same_arrays(ours, paddle.load(path))


def python2_cifar_batch(rows, labels):
    """A CIFAR-10 batch as the genuine archive holds it: Python 2's cPickle, protocol 2, str data as BINSTRING."""
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    array_header = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
    uint8 = b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|") + \
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    shape = b"M" + struct.pack("<H", len(rows)) + b"M\x00\x0c\x86"
    data = array_header + b"(K\x01" + shape + uint8 + b"\x89" + string(rows.tobytes()) + b"tb"
    return (b"\x80\x02}(" + string(b"data") + data + string(b"labels") + b"](" +
            b"".join(b"K" + bytes([label]) for label in labels) + b"eu.")


def write_cifar(folder, batch_bytes):
    """A cifar-10-python.tar.gz whose six batches are `batch_bytes(k)` (bytes of a pickle)."""
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            payload = batch_bytes(k)
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_batches_in_python2_format_load(tmp_path):
    rows = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    write_cifar(tmp_path, lambda k: python2_cifar_batch(rows + k, [k, 9 - k]))
    test = load_dataset("cifar10", "test", data_dir=str(tmp_path))
    assert list(test.labels) == [5, 4]
    np.testing.assert_array_equal(test.images, (rows + 5).reshape(2, 3, 32, 32))


def test_crafted_cifar10_archive_is_refused(tmp_path):
    marker = tmp_path / "ran"
    rows = np.zeros((1, 3072), np.uint8)
    write_cifar(tmp_path, lambda k: pickle.dumps({b"data": rows, b"labels": [k], b"x": Call(os.system, f"touch {marker}")}))
    with pytest.raises(DataError, match="data_batch_1 is not a CIFAR-10 batch: it asks to call posix.system"):
        load_dataset("cifar10", "train", data_dir=str(tmp_path))
    assert_never_ran(marker)


def test_allow_list_is_arrays_and_plain_containers():
    """Adding a global is a security decision: this list changes only with the module's reasons for it."""
    assert sorted(f"{m}.{n}" for m, n in safe_pickle.ALLOWED_GLOBALS) == [
        "_codecs.encode", "builtins.bytes", "builtins.tuple", "collections.OrderedDict",
        "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray",
    ]
    assert safe_pickle.ALLOWED_GLOBALS[("numpy.core.multiarray", "_reconstruct")] is np.zeros(0).__reduce__()[0]


@pytest.mark.parametrize("call, protocol, complaint", [
    (Call(codecs.encode, "x", "zlib_codec"), 4, "_codecs.encode(str, 'zlib_codec') is not the latin1"),
    (Call(bytes, 10**12), 2, "TypeError: _empty_bytes()"),
])
def test_allowed_helpers_take_only_the_arguments_pickle_writes(tmp_path, call, protocol, complaint):
    path = tmp_path / "model.pdparams"
    write_pickle(path, {"w": call}, protocol)
    with pytest.raises(CheckpointError, match=re.escape(complaint)):
        safe_pickle.load(str(path))

"""Tests for the models registry: zoo-compatible weights, small-input adaptations, errors, static-graph builds."""

import json
import os
import subprocess
import sys
from functools import partial

import numpy as np
import paddle
import pytest
from paddle.vision import models as vision

import models
from models import adapt

# Paddle's legacy IR warns about `A + B` / `A * B` inside paddle.vision's own ResNet and MobileNetV3 code.
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*The behavior of expression A:DeprecationWarning")

ZOO_NAMES = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
             "resnet18", "resnet34", "resnet50", "resnet101", "vgg16"]
OWN_NAMES = ["lenet", "mlp"]
ALIASES = {"MobileNet": "mobilenet_v1", "MobileNetV2": "mobilenet_v2", "ResNet18": "resnet18", "ResNet34": "resnet34",
           "ResNet50": "resnet50", "LeNet": "lenet", "MLP": "mlp"}
# A state-dict file round trip is cheap for these; for the others (ResNet-50/101 share ResNet-18's class,
# VGG-16 holds 553 MB) keys and shapes are compared without allocating weights.
ROUND_TRIP_NAMES = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18"]
BATCH = 2
NUM_CLASSES = 7


def small_scale(name):
    """Thin MobileNets to keep the tests fast; the others accept only 1.0."""
    return 0.25 if models.spec(name).min_scale is not None else 1.0


def shapes(layer):
    """{structural name: shape} of a layer's state dict (parameters and BatchNorm statistics)."""
    return {key: list(value.shape) for key, value in layer.state_dict().items()}


def lazy_shapes(build):
    """shapes() of the layer `build()` makes, without allocating or initialising its weights."""
    with paddle.LazyGuard():
        return shapes(build())


def forward(model, images):
    """Eval-mode forward without gradients."""
    model.eval()
    with paddle.no_grad():
        return model(images)


def test_names_and_aliases():
    assert models.names(include_aliases=False) == sorted(OWN_NAMES) + ZOO_NAMES
    canonical = models.names(include_aliases=False)
    assert models.names()[: len(canonical)] == canonical and sorted(models.names()[len(canonical):]) == sorted(ALIASES)
    for alias, name in ALIASES.items():
        assert models.spec(alias) is models.spec(name)


# The deeper ResNets and VGG-16 are slow to build; their small-input paths are checked in test_final_feature_map_size.
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", *OWN_NAMES])
@pytest.mark.parametrize("image_size, in_channels", [(28, 1), (32, 3)])
def test_output_shape_small_inputs(name, image_size, in_channels):
    model = models.create(name, num_classes=NUM_CLASSES, in_channels=in_channels, scale=small_scale(name), image_size=image_size)
    logits = forward(model, paddle.randn([BATCH, in_channels, image_size, image_size]))
    assert logits.shape == [BATCH, NUM_CLASSES]
    assert np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_small", "resnet18", "lenet"])
def test_output_shape_224(name):
    model = models.create(name, num_classes=NUM_CLASSES, scale=small_scale(name), image_size=224)
    assert forward(model, paddle.randn([BATCH, 3, 224, 224])).shape == [BATCH, NUM_CLASSES]


@pytest.mark.parametrize(
    "name, image_size, in_channels, expected",
    [
        # MobileNets keep their standard strides on small inputs: 28 -> stem 14 -> 7, 4, 2, 1.
        ("mobilenet_v1", 28, 1, 1),
        ("mobilenet_v1", 224, 3, 7),
        ("mobilenet_v2", 32, 3, 1),
        ("mobilenet_v3_small", 28, 1, 1),
        # ResNets up to 64 px: stride-1 stem, no max-pool -> stages 28, 14, 7, 4 (64 -> 8) ...
        ("resnet18", 28, 1, 4),
        ("resnet18", adapt.SMALL_INPUT_MAX_SIZE, 3, 8),
        # ... above it the standard stem: 65 -> 33 -> max-pool 17 -> 17, 9, 5, 3.
        ("resnet18", adapt.SMALL_INPUT_MAX_SIZE + 1, 3, 3),
        ("resnet18", 224, 3, 7),
        # VGG: the fifth max-pool would halve a 1 px map, so it is skipped: 28 -> 14, 7, 3, 1, (1).
        ("vgg16", 28, 1, 1),
    ],
)
def test_final_feature_map_size(name, image_size, in_channels, expected):
    model = models.create(name, num_classes=NUM_CLASSES, in_channels=in_channels, scale=small_scale(name), image_size=image_size)
    (pool,) = [layer for layer in model.children() if isinstance(layer, paddle.nn.AdaptiveAvgPool2D)]
    seen = []
    pool.register_forward_pre_hook(lambda layer, inputs: seen.append(inputs[0].shape[2:]))
    logits = forward(model, paddle.randn([1, in_channels, image_size, image_size]))
    assert list(seen[0]) == [expected, expected]
    assert logits.shape == [1, NUM_CLASSES] and np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("image_size, max_pools", [(8, 3), (28, 4), (32, 5), (65, 5), (224, 5)])
def test_vgg_keeps_the_max_pools_its_input_fits(image_size, max_pools):
    with paddle.LazyGuard():
        model = models.create("vgg16", image_size=image_size)
    assert sum(isinstance(layer, paddle.nn.MaxPool2D) for layer in model.features) == max_pools


@pytest.mark.parametrize("name", ROUND_TRIP_NAMES)
def test_zoo_state_dict_file_loads_as_is(name, tmp_path):
    """A file saved from paddle.vision.models.<name>() (what the zoo ships) loads into the registry's model as it is."""
    zoo_model = getattr(vision, name)()
    path = str(tmp_path / f"{name}.pdparams")
    paddle.save(zoo_model.state_dict(), path)
    loaded = paddle.load(path)
    model = models.create(name, num_classes=1000, in_channels=3, image_size=224)
    assert shapes(model) == {key: list(value.shape) for key, value in loaded.items()}
    model.set_state_dict(loaded)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), loaded[key].numpy(), err_msg=key)
    images = paddle.randn([BATCH, 3, 64, 64])
    np.testing.assert_array_equal(forward(model, images).numpy(), forward(zoo_model, images).numpy())


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("image_size, in_channels", [(224, 3), (28, 1), (32, 3)])
def test_adapted_model_keeps_every_zoo_key_and_shape(name, image_size, in_channels):
    """Grey input and the small-input rules change no parameter: zoo weights fit every configuration."""
    zoo = lazy_shapes(getattr(vision, name))
    ours = lazy_shapes(lambda: models.create(name, num_classes=1000, in_channels=in_channels, image_size=image_size))
    assert ours == zoo


@pytest.mark.parametrize("name", ZOO_NAMES + OWN_NAMES)
def test_head_prefixes_cover_exactly_the_class_dependent_keys(name):
    imagenet = lazy_shapes(lambda: models.create(name, num_classes=1000, scale=small_scale(name), image_size=32))
    ten = lazy_shapes(lambda: models.create(name, num_classes=10, scale=small_scale(name), image_size=32))
    assert imagenet.keys() == ten.keys()
    differing = {key for key in ten if ten[key] != imagenet[key]}
    head = {key for key in ten if key.startswith(models.spec(name).head_prefixes)}
    assert differing and head == differing


@pytest.mark.parametrize("name", ZOO_NAMES + ["lenet"])
def test_stem_channels_is_what_the_stem_weight_holds(name):
    for in_channels in (1, 3):
        built = lazy_shapes(partial(models.create, name, in_channels=in_channels, image_size=28))
        stem = next(shape for shape in built.values() if len(shape) == 4)
        assert stem[1] == (models.spec(name).stem_channels or in_channels)


@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet18", "mobilenet_v3_small"])
def test_grey_input_equals_the_channel_repeated_for_the_plain_model(name):
    grey = models.create(name, in_channels=1, scale=small_scale(name), image_size=28)
    plain = models.create(name, in_channels=3, scale=small_scale(name), image_size=28)
    plain.set_state_dict(grey.state_dict())
    images = paddle.randn([BATCH, 1, 28, 28])
    np.testing.assert_array_equal(
        forward(grey, images).numpy(), forward(plain, paddle.concat([images] * 3, axis=1)).numpy()
    )


@pytest.mark.parametrize(
    "name, expected",
    [("mobilenet_v1", 4_231_976), ("mobilenet_v2", 3_504_872), ("mobilenet_v3_small", 2_542_856),
     ("mobilenet_v3_large", 5_483_032), ("resnet18", 11_689_512), ("resnet50", 25_557_032),
     ("resnet101", 44_549_160), ("vgg16", 138_357_544)],
)
def test_imagenet_parameter_counts_match_published(name, expected):
    with paddle.LazyGuard():
        model = models.create(name, num_classes=1000, image_size=224)
        trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    assert trainable == expected


def test_unknown_name_is_refused_naming_the_accepted_ones():
    with pytest.raises(ValueError) as error:
        models.create("VGG99")
    message = str(error.value)
    assert "'VGG99'" in message and "mobilenet_v3_small" in message and "MobileNet," in message and "\n" not in message


@pytest.mark.parametrize(
    "name, scale, message",
    [
        ("ResNet18", 0.5, "model 'resnet18' does not support a width multiplier; got scale=0.5, expected 1.0"),
        ("lenet", 2.0, "model 'lenet' does not support a width multiplier"),
        ("mobilenet_v1", 0.01, "model 'mobilenet_v1' accepts a finite width multiplier scale >= 0.03125; got scale=0.01"),
        ("mobilenet_v2", 0.0, "scale > 0; got scale=0.0"),
        ("mobilenet_v3_large", -1.0, "scale > 0; got scale=-1.0"),
        ("mobilenet_v3_small", float("nan"), "got scale=nan"),
    ],
)
def test_bad_scale_is_refused_naming_what_is_accepted(name, scale, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        models.create(name, scale=scale)


def test_smallest_accepted_mobilenet_v1_scale_builds():
    model = models.create("mobilenet_v1", scale=models.spec("mobilenet_v1").min_scale, in_channels=1, image_size=28)
    assert forward(model, paddle.randn([1, 1, 28, 28])).shape == [1, 10]


def test_channels_other_than_3_or_grey_are_refused_for_zoo_models():
    with pytest.raises(ValueError, match=r"'resnet18' takes 3-channel images .* got in_channels=4, accepted: 3, or 1"):
        models.create("resnet18", in_channels=4)


# Grey input everywhere; MobileNetV3 for its hardswish, squeeze-excitation and dropout; ResNet for its small-input stem.
STATIC_BUILDS = [("mobilenet_v1", 0.25), ("mobilenet_v3_small", 0.5), ("resnet18", 1.0)]


def run_static_training_steps():
    """Build each STATIC_BUILDS model for 1x28x28 in a static program with loss and Momentum, run two steps.

    Returns {"pir": bool, name: [logits shape, losses finite, loss changed]}.
    """
    paddle.enable_static()
    result = {}
    rng = np.random.default_rng(0)
    feed = {"images": rng.standard_normal((BATCH, 1, 28, 28)).astype("float32"),
            "labels": rng.integers(0, NUM_CLASSES, (BATCH, 1)).astype("int64")}
    try:
        for name, scale in STATIC_BUILDS:
            main_program, startup_program = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main_program, startup_program):
                images = paddle.static.data("images", shape=[None, 1, 28, 28], dtype="float32")
                labels = paddle.static.data("labels", shape=[None, 1], dtype="int64")
                logits = models.create(name, num_classes=NUM_CLASSES, in_channels=1, scale=scale, image_size=28)(images)
                loss = paddle.nn.functional.cross_entropy(logits, labels).mean()
                paddle.optimizer.Momentum(0.01, momentum=0.9).minimize(loss)
                result["pir"] = paddle.framework.in_pir_mode()
            executor = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(paddle.static.Scope()):
                executor.run(startup_program)
                runs = [executor.run(main_program, feed=feed, fetch_list=[logits, loss]) for _ in range(2)]
            losses = [float(run[1]) for run in runs]
            result[name] = [list(runs[0][0].shape), bool(np.isfinite(losses).all()), losses[0] != losses[1]]
        return result
    finally:
        paddle.disable_static()


def check_static_result(result, expect_pir):
    assert result.pop("pir") == expect_pir
    assert result == {name: [[BATCH, NUM_CLASSES], True, True] for name, _ in STATIC_BUILDS}


def test_static_training_default_ir():
    # PIR is the default static IR from Paddle 3.0 on; 2.6 builds the legacy ProgramDesc.
    check_static_result(run_static_training_steps(), expect_pir=paddle.framework.use_pir_api())
    assert paddle.in_dynamic_mode()


def test_static_training_legacy_ir_subprocess():
    tests = os.path.dirname(os.path.abspath(__file__))
    script = (
        f"import json, sys; sys.path[:0] = [{os.path.dirname(tests)!r}, {tests!r}]; import test_models; "
        "print(json.dumps(test_models.run_static_training_steps()))"
    )
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    check_static_result(json.loads(completed.stdout.strip().splitlines()[-1]), expect_pir=False)

"""Tests for the models registry: output shapes, parameter counts, errors, and static-graph builds."""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import models  # noqa: E402

MOBILENET_NAMES = {"MobileNet", "mobilenet_v1", "MobileNetV2", "mobilenet_v2"}
RESNET_NAMES = {"ResNet18", "resnet18", "ResNet34", "resnet34", "ResNet50", "resnet50"}
SMALL_NAMES = {"LeNet", "lenet", "MLP", "mlp"}
BATCH = 2
NUM_CLASSES = 7


def small_scale(name):
    """Thin MobileNets to keep the tests fast; ResNets accept only 1.0."""
    return 0.25 if name in MOBILENET_NAMES else 1.0


def count_parameters(model, trainable_only):
    """Total element count of the model's parameters, optionally skipping stop_gradient ones (BN stats)."""
    return sum(
        int(np.prod(p.shape)) for p in model.parameters() if not (trainable_only and p.stop_gradient)
    )


def forward(model, image_size, in_channels):
    """Run one eval-mode forward on a random batch of square images."""
    model.eval()
    images = paddle.randn([BATCH, in_channels, image_size, image_size])
    with paddle.no_grad():
        return model(images)


def test_registered_names():
    assert set(models.names()) == MOBILENET_NAMES | RESNET_NAMES | SMALL_NAMES


@pytest.mark.parametrize("name", sorted(MOBILENET_NAMES | RESNET_NAMES | SMALL_NAMES))
@pytest.mark.parametrize("image_size, in_channels", [(28, 1), (32, 3)])
def test_dygraph_output_shape_small_inputs(name, image_size, in_channels):
    model = models.create(
        name, num_classes=NUM_CLASSES, in_channels=in_channels, scale=small_scale(name), image_size=image_size
    )
    logits = forward(model, image_size, in_channels)
    assert logits.shape == [BATCH, NUM_CLASSES]
    assert np.isfinite(logits.numpy()).all()


def test_dygraph_output_shape_mobilenet_224():
    model = models.create("MobileNet", num_classes=NUM_CLASSES, scale=0.25, image_size=224)
    assert forward(model, 224, 3).shape == [BATCH, NUM_CLASSES]


@pytest.mark.parametrize(
    "name, image_size, expected_map",
    [
        # MobileNets keep the standard strides: 28 -> stem 14 -> four stride-2 blocks: 7, 4, 2, 1.
        ("MobileNet", 28, 1),
        # 224 -> stride-2 stem 112 -> 56, 28, 14, 7.
        ("MobileNet", 224, 7),
        # 32 -> stride-2 stem 16 -> four stride-2 stages: 8, 4, 2, 1.
        ("MobileNetV2", 32, 1),
        # 32 -> stride-1 stem, no max-pool -> stages 32, 16, 8, 4.
        ("ResNet18", 32, 4),
    ],
)
def test_final_feature_map_size(name, image_size, expected_map):
    model = models.create(name, scale=small_scale(name), image_size=image_size)
    model.eval()
    with paddle.no_grad():
        features = model.features(paddle.randn([1, 3, image_size, image_size]))
    assert features.shape[2:] == [expected_map, expected_map]


def test_mobilenet_v1_parameter_count_matches_published():
    # Published MobileNetV1 1.0-224 size: 4,231,976 trainable parameters, derived as
    #   conv weights (stem 3*3*3*32 + 13 depthwise 3x3 + 13 pointwise 1x1)  3,185,088
    #   BN scale + shift, 2 * 10,944 BN channels                              21,888
    #   Linear(1024, 1000) weight + bias                                   1,025,000
    # Paddle also lists each BN's running mean/variance in parameters() (stop_gradient=True),
    # adding another 2 * 10,944 = 21,888 for a total of 4,253,864.
    model = models.create("MobileNet", num_classes=1000, scale=1.0, image_size=224)
    assert count_parameters(model, trainable_only=True) == 4_231_976
    assert count_parameters(model, trainable_only=False) == 4_253_864


@pytest.mark.parametrize(
    "name, expected",
    [("MobileNetV2", 3_504_872), ("ResNet18", 11_689_512), ("ResNet50", 25_557_032)],
)
def test_imagenet_parameter_counts_match_published(name, expected):
    model = models.create(name, num_classes=1000, image_size=224)
    assert count_parameters(model, trainable_only=True) == expected


def test_aliases_build_the_same_architecture():
    for alias, canonical in [("MobileNet", "mobilenet_v1"), ("MobileNetV2", "mobilenet_v2"), ("ResNet34", "resnet34")]:
        a = models.create(alias, scale=small_scale(alias), image_size=32)
        b = models.create(canonical, scale=small_scale(canonical), image_size=32)
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_convs_feeding_batchnorm_have_no_bias_and_classifier_is_linear():
    model = models.create("ResNet50", image_size=32)
    convs = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    assert convs and all(conv.bias is None for conv in convs)
    assert isinstance(model.classifier, paddle.nn.Linear)


def test_unknown_name_raises_with_name_and_accepted_list():
    with pytest.raises(ValueError) as error:
        models.create("VGG16")
    message = str(error.value)
    assert "VGG16" in message and "MobileNet" in message and "resnet50" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["ResNet18", "resnet50"])
def test_scale_on_resnet_raises(name):
    with pytest.raises(ValueError, match=name):
        models.create(name, scale=0.5)


def run_static_forward():
    """Build MobileNet x0.25 for 1x28x28 in a static Program, run one forward; return logits shape and IR."""
    paddle.enable_static()
    try:
        main_program, startup_program = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main_program, startup_program):
            images = paddle.static.data("images", shape=[None, 1, 28, 28], dtype="float32")
            logits = models.create("MobileNet", num_classes=NUM_CLASSES, in_channels=1, scale=0.25, image_size=28)(
                images
            )
            uses_pir = paddle.framework.in_pir_mode()
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup_program)
        (output,) = executor.run(
            main_program,
            feed={"images": np.random.rand(BATCH, 1, 28, 28).astype("float32")},
            fetch_list=[logits],
        )
        return {"shape": list(output.shape), "finite": bool(np.isfinite(output).all()), "pir": uses_pir}
    finally:
        paddle.disable_static()


def test_static_graph_forward_default_ir():
    result = run_static_forward()
    assert result["shape"] == [BATCH, NUM_CLASSES] and result["finite"]
    # PIR is the default static IR from Paddle 3.0 on; 2.6 builds the legacy ProgramDesc.
    assert result["pir"] == paddle.framework.use_pir_api()
    assert paddle.in_dynamic_mode()


def test_static_graph_forward_legacy_ir_subprocess():
    script = (
        "import json, sys; sys.path.insert(0, {tests!r}); import test_models; "
        "print(json.dumps(test_models.run_static_forward()))"
    ).format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {"shape": [BATCH, NUM_CLASSES], "finite": True, "pir": False}

"""keras-hub's own CNNs (built offline from keras-hub's timm configs, random weights).

keras-hub is installed by .ci/run with --no-deps (its tensorflow-text pin would
replace TensorFlow); in CI a missing keras-hub is a failure, not a skip.
"""
import os
import warnings

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

if os.environ.get("CI"):
    import keras_hub
else:
    keras_hub = pytest.importorskip("keras_hub")

from keras_hub.src.utils.timm import convert_mobilenet, convert_resnet  # noqa: E402

pytestmark = pytest.mark.slow

SMALL = dict(stackwise_num_filters=[64, 32, 32, 32])  # keras-hub requires 64 first


def mobilenet_v3():
    config = convert_mobilenet.convert_backbone_config({"architecture": "mobilenetv3_small_050"})
    return keras_hub.models.MobileNetBackbone(**config)


def resnet(arch):
    config = dict(convert_resnet.convert_backbone_config({"architecture": arch}), **SMALL)
    return keras_hub.models.ResNetBackbone(**config)


def classifier():
    return keras_hub.models.ResNetImageClassifier(backbone=resnet("resnet18"), num_classes=5)


def _exact(model, constants=False, share=0.9):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(model, 0.5, seed=2, constants=constants, input_size=64)
    assert r.difference < 1e-4, r.difference
    assert r.killed > 0
    # coverage: (almost) every killed class really goes
    assert r.plan.removed_channels >= share * r.killed, (r.plan.removed_channels, r.killed)
    return r


def test_mobilenet_v3_is_traced_through_its_custom_blocks():
    m = mobilenet_v3()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = keras_slim.plan(m, 0.3)
    assert not p.barriers, p.barriers
    assert not [w for w in caught if "barrier" in str(w.message)]
    # the prunable share: nearly every BN channel that is not a model output
    assert p.prunable_channels > 1000
    _exact(m)


def test_mobilenet_v3_constant_channels():
    _exact(mobilenet_v3(), constants=True, share=0.5)


@pytest.mark.parametrize("arch", ["resnet18", "resnetv2_50"])
def test_resnet_backbones(arch):
    r = _exact(resnet(arch))
    # v2's stem pads with -inf before its max pool: exact, not a barrier
    assert not r.plan.barriers, r.plan.barriers


def retinanet_backbone():
    """keras-hub's RetinaNet test config: its FeaturePyramid takes a dict {"P3", "P4"}."""
    enc = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[2, 2, 2], stackwise_num_strides=[1, 2, 2],
        block_type="bottleneck_block", use_pre_activation=False)
    return keras_hub.models.RetinaNetBackbone(image_encoder=enc, min_level=3, max_level=4,
                                              use_p5=False, use_fpn_batch_norm=True)


def test_retinanet_feature_pyramid_is_traced_at_the_sizes_it_sees():
    """P3 and P4 have different sizes: a check at one size for every None axis failed."""
    m = retinanet_backbone()
    r = _exact(m)
    assert not r.plan.barriers, r.plan.barriers
    assert any(row.name.startswith("fpn/") for row in r.plan.layers)


def hgnetv2_tiny():
    """keras-hub's D-FINE test encoder: learnable affine blocks, Identity(dtype=policy) layers."""
    return keras_hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False], depths=[1, 1],
        hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=True,
        hidden_act="relu", image_shape=(None, None, 3), out_features=["stage1", "stage2"],
        data_format="channels_last")


def test_hgnetv2_learnable_affine_blocks_are_traced():
    # `self.scale * x + self.bias` (scalar weights on the left of the operator) used to
    # be untraceable on TensorFlow, which made every HGNetV2 block a barrier.
    m = hgnetv2_tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
        small = keras_slim.prune(m, p)  # Identity(dtype=policy) has no config: copied
    assert p.barriers == []
    assert p.removed_channels > 0
    assert any(row.name.endswith("_lab/scale") and row.class_name == "WeightedOp"
               for row in p.layers)
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    assert [tuple(y.shape) for y in keras.tree.flatten(small(x))] == \
        [tuple(y.shape) for y in keras.tree.flatten(m(x))]
    assert small.count_params() < m.count_params()
    for constants in (False, True):
        r = testing.exactness(m, 0.5, seed=0, constants=constants, input_size=32)
        assert r.killed > 0 and r.plan.removed_channels >= r.killed
        assert r.difference < 1e-5, (constants, r.difference)


def test_image_classifier_task_model_saves_and_exports(tmp_path):
    m = classifier()
    r = _exact(m)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    assert testing.fresh_process_difference(r.model, x, tmp_path, ("keras_hub",)) < 1e-5
    pytest.importorskip("ai_edge_litert")
    report = keras_slim.export_tflite(r.model, str(tmp_path / "m.tflite"),
                                      input_shape=(64, 64, 3))
    assert report.verified


def test_mobilenet_v3_prunes_at_a_ratio_with_trained_looking_bn():
    """Regression: depthwise-style grouped convs pass constants on; prune must not raise."""
    m = mobilenet_v3()
    testing.randomize_batchnorm(m, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, 0.5)
    assert small.count_params() < m.count_params()

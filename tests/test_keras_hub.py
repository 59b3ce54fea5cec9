"""keras-hub's own CNNs (built offline from keras-hub's timm configs, random weights).

keras-hub is installed by .ci/run with --no-deps (its tensorflow-text pin would
replace TensorFlow); in CI a missing keras-hub is a failure, not a skip.
"""
import os
import subprocess
import sys
import textwrap
import warnings

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
    _exact(resnet(arch))


def test_image_classifier_task_model_saves_and_exports(tmp_path):
    m = classifier()
    r = _exact(m)
    path = tmp_path / "small.keras"
    r.model.save(path)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(r.model(x)))
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        m = keras.models.load_model({str(path)!r})
        assert "keras_hub" not in sys.modules, "the pruned model needed keras_hub"
        x = np.load({str(tmp_path / 'x.npy')!r}); y = np.load({str(tmp_path / 'y.npy')!r})
        print(float(np.abs(np.asarray(m(x)) - y).max()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5
    pytest.importorskip("ai_edge_litert")
    report = keras_slim.export_tflite(r.model, str(tmp_path / "m.tflite"),
                                      input_shape=(64, 64, 3))
    assert report.verified

"""Pruned models save, reload, train and prune again."""
import keras
import numpy as np

import keras_slim
from keras_slim import testing
from keras_slim.training.cifar import models


def _preact():
    m = models.preact_resnet(20, width=0.5)
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.4)
    return m


def test_pruned_model_with_selection_reloads(tmp_path):
    m = _preact()
    small = keras_slim.prune(m, threshold=1e-12)
    assert any(isinstance(l, keras_slim.ChannelSelection) for l in small.layers)
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    x = testing.random_inputs(m)
    assert testing.max_difference(small, loaded, x) == 0.0
    assert testing.max_difference(m, loaded, x) < 1e-5


def test_second_pass_prunes_a_pruned_model():
    m = _preact()
    once = keras_slim.prune(m, threshold=1e-12)
    testing.kill_channels(once, 0.3, seed=5)
    p = keras_slim.plan(once, threshold=1e-12)
    assert p.removed_channels > 0
    twice = keras_slim.prune(once, p)
    x = testing.random_inputs(m)
    assert testing.max_difference(once, twice, x) < 1e-5
    assert twice.count_params() < once.count_params()


def test_compile_config_is_copied_and_fine_tuning_runs():
    m = models.vgg(11, width=0.125,
                   gamma_regularizer=keras_slim.bn_l1(1e-4))
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    testing.randomize_batchnorm(m)
    small = keras_slim.prune(m, 0.5)
    assert small.compiled
    assert len(small.losses) == 8  # the sparsity penalty travels with the layers
    rng = np.random.default_rng(0)
    hist = small.fit(rng.normal(size=(8, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 8),
                     epochs=1, verbose=0)
    assert "accuracy" in hist.history

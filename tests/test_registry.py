"""Handler lookup: scoped custom_handlers > register_handler > built-ins, whenever registered."""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing
from keras_slim.handlers import registry
from keras_slim.handlers.dense import DenseHandler


class RecordingDense(DenseHandler):
    """The built-in Dense behaviour, counting the calls it describes."""

    def __init__(self):
        self.flows = 0

    def flow(self, ctx, ins):
        self.flows += 1
        return super().flow(ctx, ins)


class FrozenDense(DenseHandler):
    """A Dense whose inputs must all stay: its readers keep every channel."""

    def flow(self, ctx, ins):
        return ctx.barrier(ins, "frozen by the user")


def _mlp():
    inp = keras.Input((6,))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(8, name="d1")(inp)))
    m = keras.Model(inp, layers.Dense(3, name="d2")(x))
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.5, seed=1)
    return m


def test_user_handler_for_builtin_class_wins_even_before_builtins_load(tmp_path):
    """In a fresh process, a registration made before the first plan is not replaced."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import keras, keras_slim
        from keras import layers
        from keras_slim.handlers import registry
        from keras_slim.handlers.dense import DenseHandler
        assert not registry._BUILTIN, "built-ins loaded early: the test proves nothing"
        class Mine(DenseHandler):
            flows = 0
            def flow(self, ctx, ins):
                Mine.flows += 1
                return super().flow(ctx, ins)
        keras_slim.register_handler(keras.layers.Dense, Mine())
        inp = keras.Input((6,))
        x = layers.BatchNormalization()(layers.Dense(8)(inp))
        keras_slim.plan(keras.Model(inp, layers.Dense(3)(x)), 0.5)
        assert registry._BUILTIN and Mine.flows == 2, Mine.flows
        print("ok")
    """)
    env = dict(__import__("os").environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_unregister_restores_builtin():
    mine = RecordingDense()
    keras_slim.register_handler(keras.layers.Dense, mine)
    assert keras_slim.unregister_handler(keras.layers.Dense) is mine
    assert keras_slim.unregister_handler(keras.layers.Dense) is None
    assert type(registry.get_handler(layers.Dense(2))) is DenseHandler
    with pytest.raises(TypeError, match="layer class"):
        keras_slim.unregister_handler("Dense")


def test_custom_handlers_are_scoped_to_one_call():
    m = _mlp()
    removed = keras_slim.plan(m, threshold=1e-12).removed_channels
    assert removed > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_name = keras_slim.plan(m, threshold=1e-12, custom_handlers={"d2": FrozenDense()})
        by_class = keras_slim.prune(m, threshold=1e-12,
                                    custom_handlers={keras.layers.Dense: FrozenDense()})
    assert by_name.removed_channels == 0
    assert ("d2", "frozen by the user") in by_name.barriers
    assert by_class.get_layer("d1").units == 8
    assert keras_slim.plan(m, threshold=1e-12).removed_channels == removed  # nothing leaked


def test_scoped_beats_registered():
    m = _mlp()
    keras_slim.register_handler(keras.layers.Dense, FrozenDense())
    mine = RecordingDense()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert keras_slim.plan(m, threshold=1e-12).removed_channels == 0
        p = keras_slim.plan(m, threshold=1e-12, custom_handlers={keras.layers.Dense: mine})
    assert mine.flows == 2 and p.removed_channels > 0


def test_custom_handlers_errors_name_the_problem():
    m = _mlp()
    with pytest.raises(ValueError, match="not in model.*'nope'"):
        keras_slim.plan(m, 0.5, custom_handlers={"nope": RecordingDense()})
    with pytest.raises(TypeError, match="Handler instance"):
        keras_slim.plan(m, 0.5, custom_handlers={keras.layers.Dense: RecordingDense})
    with pytest.raises(TypeError, match="layer classes or layer names"):
        keras_slim.plan(m, 0.5, custom_handlers={3: RecordingDense()})


def test_saved_plan_with_custom_handlers(tmp_path):
    m = _mlp()
    p = keras_slim.plan(m, threshold=1e-12, custom_handlers={"d1": RecordingDense()})
    saved = keras_slim.Plan.from_json(p.to_json())
    small = keras_slim.prune(m, saved, custom_handlers={"d1": RecordingDense()})
    assert testing.max_difference(m, small, np.ones((2, 6), "float32")) < 1e-5
    with pytest.raises(TypeError, match="cannot be combined"):
        keras_slim.prune(m, p, custom_handlers={"d1": RecordingDense()})


def test_registry_does_not_leak_between_tests_part1():
    keras_slim.register_handler(keras.layers.ReLU, FrozenDense())


def test_registry_does_not_leak_between_tests_part2():
    assert keras.layers.ReLU not in registry._USER


class ConvBNAct(layers.Layer):
    """A user's block: BN hidden inside a custom layer."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(filters, 3, padding="same")
        self.bn = layers.BatchNormalization()

    def call(self, x):
        return keras.ops.relu(self.bn(self.conv(x)))


def test_no_bn_message_names_the_custom_layers_hiding_them():
    inp = keras.Input((8, 8, 3))
    x = ConvBNAct(8, name="block1")(inp)
    x = ConvBNAct(4, name="block2")(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as e:
            keras_slim.plan(m, 0.5, trace=False)
    text = str(e.value)
    assert "all 2 BatchNormalization layers (12 channels)" in text
    assert "block1 (ConvBNAct)" in text and "block2 (ConvBNAct)" in text
    assert "register_handler" in text and "has no BatchNormalization" not in text


class UntraceableBlock(ConvBNAct):
    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (self.conv.filters,)

    def call(self, x):
        y = super().call(x)
        return y if float(keras.ops.convert_to_numpy(keras.ops.max(y))) < 1e9 else -y


def test_no_bn_message_says_why_tracing_failed():
    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(
        UntraceableBlock(8, name="odd")(inp))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as e:
            keras_slim.plan(m, 0.5)
    text = str(e.value)
    assert "odd (UntraceableBlock)" in text and "Tracing was tried" in text
    assert "cannot run on symbolic tensors" in text


def test_no_bn_at_all_message_unchanged():
    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, layers.Dense(2)(layers.Flatten()(layers.Conv2D(4, 3)(inp))))
    with pytest.raises(ValueError, match="has no BatchNormalization with a scaling factor"):
        keras_slim.plan(m, 0.5)

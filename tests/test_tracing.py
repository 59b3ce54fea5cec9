"""Tracing: custom layers and subclassed models are read as the stock layers they call."""
import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_slim
from keras_slim import testing


class ConvBNAct(layers.Layer):
    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.conv = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)
        self.bn = layers.BatchNormalization()

    def call(self, x):
        return ops.relu(self.bn(self.conv(x)))

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size)


class Residual(layers.Layer):
    """Two ConvBNAct (custom inside custom) and an add written with `+`."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.a = ConvBNAct(filters)
        self.b = ConvBNAct(filters, 1)

    def call(self, x):
        return x + self.b(self.a(x))

    def get_config(self):
        return dict(super().get_config(), filters=self.filters)


class SqueezeExcite(layers.Layer):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.reduce = layers.Dense(max(1, channels // 4), activation="relu")
        self.expand = layers.Dense(channels)

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        return x * ops.sigmoid(self.expand(self.reduce(s)))

    def get_config(self):
        return dict(super().get_config(), channels=self.channels)


class ValueBranch(layers.Layer):
    """Python control flow on a tensor value: cannot be traced (its shape is declared)."""

    def compute_output_shape(self, shape):
        return shape

    def call(self, x):
        if float(ops.convert_to_numpy(ops.max(x))) > 100.0:
            return x * 0.5
        return x


class OwnScale(layers.Layer):
    """A per-channel scale created with add_weight and used in keras.ops."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def _model(*blocks, size=12):
    inp = keras.Input((size, size, 3))
    x = inp
    for block in blocks:
        x = block(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(4)(x), name="net")


def _check(model, min_share=0.5, **options):
    """Exact after pruning, and a good share of the killed channels really went."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(model, 0.5, seed=3, **options)
    assert r.difference < 1e-4, r.difference
    assert r.killed > 0
    assert r.plan.removed_channels >= min_share * r.killed, (r.plan.removed_channels, r.killed)
    return r


def _barrier_reason(block, name: str) -> str:
    """Why `block`, between two ConvBNAct blocks, is a barrier (KeyError if it is not)."""
    m = _model(ConvBNAct(8, name="b1"), block, ConvBNAct(6, name="b2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    return dict(p.barriers)[name]


def test_conv_bn_act_layer_is_traced_and_pruned_exactly():
    m = _model(ConvBNAct(8, name="block1"), ConvBNAct(12, name="block2"))
    r = _check(m, min_share=1.0)
    assert not r.plan.barriers
    names = {row.name for row in r.plan.layers}
    assert any(n.startswith("block1/") for n in names)  # rows map to the user's blocks
    assert all(not isinstance(layer, ConvBNAct) for layer in r.model.layers)  # stock layers


def test_residual_block_custom_in_custom():
    m = _model(ConvBNAct(8, name="stem"), Residual(8, name="res1"), Residual(8, name="res2"))
    _check(m)


def test_squeeze_excite_written_with_ops():
    m = _model(ConvBNAct(8, name="stem"), SqueezeExcite(8, name="se"), ConvBNAct(6, name="head"))
    _check(m)


def test_constant_channels_through_traced_blocks():
    m = _model(ConvBNAct(8, name="b1"), ConvBNAct(8, 1, name="b2"))
    r = testing.exactness(m, 0.5, seed=5, constants=True)
    assert r.difference < 1e-4


def test_untraceable_layer_is_a_named_barrier_and_model_stays_exact():
    m = _model(ConvBNAct(8, name="b1"), ValueBranch(name="branchy"), ConvBNAct(6, name="b2"))
    with pytest.warns(UserWarning, match="branchy"):
        p = keras_slim.plan(m, 0.3)
    reason = dict(p.barriers)["branchy"]
    assert "not traced" in reason and "ValueBranch" in reason
    _check(m, min_share=0.0)


class OwnAffine(layers.Layer):
    """Per-channel scale and bias, plus a scalar layer-scale, all from add_weight."""

    def build(self, shape):
        c = shape[-1]
        self.gain = self.add_weight(shape=(c,), initializer="ones", name="gain")
        self.shift = self.add_weight(shape=(1, 1, c), initializer="zeros", name="shift")
        self.gamma = self.add_weight(shape=(), initializer="ones", name="layer_scale")

    def call(self, x):
        return (x * self.gain + self.shift) * self.gamma


class OwnMix(layers.Layer):
    """Its weight mixes channels (a matmul): cannot be lifted."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), initializer="identity", name="mix")

    def call(self, x):
        return ops.matmul(x, self.w)


def test_own_per_channel_weights_are_lifted_sliced_and_trainable(tmp_path):
    m = _model(ConvBNAct(8, name="b1"), OwnAffine(name="affine"), ConvBNAct(6, name="b2"))
    rng = np.random.default_rng(0)
    aff = m.get_layer("affine")
    aff.set_weights([rng.uniform(0.5, 2, 8).astype("float32"),
                     np.zeros((1, 1, 8), "float32"), np.float32(0.7)])
    r = _check(m, min_share=1.0)
    assert not r.plan.barriers
    lifted = {layer.name: layer for layer in r.model._flatten_layers()
              if isinstance(layer, keras_slim.layers.WeightedOp)}
    assert set(lifted) == {"gain", "shift", "layer_scale"}
    kept = r.model.get_layer("b1").layers[1].filters if hasattr(r.model.get_layer("b1"), "layers") \
        else None
    assert lifted["gain"].w.shape[-1] == lifted["shift"].w.shape[-1] == kept
    assert lifted["layer_scale"].w.shape == ()
    assert all(layer.w.trainable for layer in lifted.values())
    assert any(w is lifted["gain"].w for w in r.model.trainable_weights)
    # with beta != 0 the shift breaks zeros, the constants still fold exactly
    testing.randomize_batchnorm(m)
    aff.set_weights([rng.uniform(0.5, 2, 8).astype("float32"),
                     rng.normal(size=(1, 1, 8)).astype("float32"), np.float32(0.7)])
    assert testing.exactness(m, 0.5, seed=1, constants=True).difference < 1e-4


class LeftAffine(layers.Layer):
    """Weights on the left of the operators (keras-hub's HGNetV2 learnable affine block)."""

    def build(self, shape):
        c = shape[-1]
        self.gain = self.add_weight(shape=(c,), initializer="ones", name="gain")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, x):
        return (self.bias + self.scale * (self.gain * x) - self.bias) / self.scale


class FrozenScale(layers.Layer):
    """`x * (1 + self.g)`: the weight reaches the op only as an eagerly computed value."""

    def build(self, shape):
        self.g = self.add_weight(shape=(), initializer="zeros", name="g")

    def call(self, x):
        return x * (1.0 + self.g)


def test_weights_on_the_left_of_an_operator_are_lifted():
    m = _model(ConvBNAct(8, name="b1"), LeftAffine(name="left"), ConvBNAct(6, name="b2"))
    rng = np.random.default_rng(1)
    m.get_layer("left").set_weights([rng.uniform(0.5, 2, 8).astype("float32"),
                                     np.float32(1.3), np.float32(0.0)])
    r = _check(m, min_share=1.0)
    assert not r.plan.barriers
    ops_ = sorted((layer.op, layer.weight_first) for layer in r.model._flatten_layers()
                  if isinstance(layer, keras_slim.layers.WeightedOp))
    assert ops_ == [("add", True), ("multiply", True), ("multiply", True), ("subtract", False),
                    ("true_divide", False)]
    testing.randomize_batchnorm(m)
    m.get_layer("left").bias.assign(0.4)  # dead channels carry constants now: folded or kept
    assert testing.exactness(m, 0.5, seed=1, constants=True).difference < 1e-4
    v = m.get_layer("left").scale
    assert float(v * 2.0) == float(v.numpy()) * 2.0  # the operators are restored afterwards


def test_weight_used_only_through_a_weights_only_expression_is_a_barrier():
    # tracing would compute `1 + g` once and freeze it: exact, but g would stop training
    m = _model(ConvBNAct(8, name="b1"), FrozenScale(name="frozen"), ConvBNAct(6, name="b2"))
    m.get_layer("frozen").g.assign(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    reason = dict(p.barriers)["frozen"]
    assert "'g'" in reason or "g" in reason.split("weights")[1][:20]
    assert "freeze" in reason
    _check(m, min_share=0.0)


def test_weight_used_in_a_non_liftable_op_is_a_barrier_naming_it():
    reason = _barrier_reason(OwnMix(name="mixer"), "mixer")
    assert "mix" in reason and "Matmul" in reason
    _check(_model(ConvBNAct(8, name="b1"), OwnMix(name="mixer"), ConvBNAct(6, name="b2")),
           min_share=0.0)


def test_registered_handler_wins_over_tracing():
    class Frozen(keras_slim.Handler):
        def flow(self, ctx, ins):
            return ctx.barrier(ins, "user says no")

    m = _model(ConvBNAct(8, name="b1"), ConvBNAct(6, name="b2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3, custom_handlers={"b1": Frozen()})
    assert ("b1", "user says no") in p.barriers
    assert any(row.name.startswith("b2/") for row in p.layers)  # b2 still traced


def test_trace_false_keeps_custom_layers_whole():
    m = _model(ConvBNAct(8, name="b1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="inside custom layers"):
            keras_slim.plan(m, 0.3, trace=False)


def test_pruned_model_trains_with_batchnorm_in_training_mode():
    m = _model(ConvBNAct(8, name="b1"), ConvBNAct(6, name="b2"))
    testing.randomize_batchnorm(m)
    small = keras_slim.prune(m, 0.25)
    x = np.random.default_rng(0).normal(size=(8, 12, 12, 3)).astype("float32")
    assert np.abs(np.asarray(small(x, training=True)) - np.asarray(small(x, training=False))).max() > 1e-3
    bn = [layer for layer in small._flatten_layers() if isinstance(layer, layers.BatchNormalization)][0]
    before = bn.moving_mean.numpy().copy()
    small.compile("sgd", "mse")
    small.fit(x, np.zeros((8, 4)), epochs=1, verbose=0)
    assert np.abs(bn.moving_mean.numpy() - before).max() > 0  # BN trained, not frozen


class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = ConvBNAct(8)
        self.res = Residual(8)
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(3)

    def call(self, x):
        return self.head(self.pool(self.res(self.stem(x))))


def test_subclassed_model_traced_to_functional():
    net = Net(name="net")
    net(np.zeros((1, 12, 12, 3), "float32"))  # built by a call
    r = _check(net)
    assert isinstance(r.model, keras.Model) and not isinstance(r.model, Net)
    assert r.model.inputs  # a Functional model


class BatchBound(keras.Model):
    """Its call needs the batch size it was built with (a reshape naming it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = ConvBNAct(8)
        self.head = layers.Dense(3)

    def call(self, x):
        return self.head(keras.ops.reshape(self.block(x), (4, -1)))


def test_a_subclassed_model_built_on_data_prunes_for_any_batch_size():
    net = Net(name="net")
    net(np.zeros((4, 12, 12, 3), "float32"))  # records batch 4
    testing.randomize_batchnorm(net)
    assert testing.kill_channels(net, 0.5, seed=1) > 0
    small = keras_slim.prune(net, threshold=1e-12)
    assert tuple(small.inputs[0].shape) == (None, 12, 12, 3)  # was (4, 12, 12, 3)
    for batch in (1, 4, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 12, 12, 3)).astype("float32")
        assert testing.max_difference(net, small, x) < 1e-4
    bound = BatchBound(name="bound")
    bound(np.zeros((4, 6, 6, 3), "float32"))
    traced = keras_slim.plan(bound, 0.3)._state.graph.model  # falls back to batch 4
    assert tuple(traced.inputs[0].shape) == (4, 6, 6, 3)


def test_subclassed_model_needs_an_input_shape():
    net = Net(name="net")
    with pytest.raises(TypeError, match="input_shape"):
        keras_slim.plan(net, 0.3)
    p = keras_slim.plan(net, 0.3, input_shape=(12, 12, 3))
    assert p.prunable_channels > 0


def test_traced_model_saves_and_loads_without_the_user_classes(tmp_path):
    m = _model(ConvBNAct(8, name="b1"), Residual(8, name="res"), SqueezeExcite(8, name="se"))
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.5, seed=1)
    small = keras_slim.prune(m, threshold=1e-12)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    assert testing.fresh_process_difference(small, x, tmp_path, ("test_tracing",)) < 1e-5


def test_traced_model_exports_to_tflite(tmp_path):
    pytest.importorskip("ai_edge_litert")
    m = _model(ConvBNAct(8, name="b1"), SqueezeExcite(8, name="se"))
    testing.randomize_batchnorm(m)
    small = keras_slim.prune(m, 0.3)
    report = keras_slim.export_tflite(small, str(tmp_path / "m.tflite"))
    assert report.verified


class CSPBlock(layers.Layer):
    """CSP-style: split the channels, transform one part, concatenate back."""

    def __init__(self, filters, use_split_op=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.use_split_op = filters, use_split_op
        self.stem = ConvBNAct(filters, 1)
        self.body = ConvBNAct(filters // 2)
        self.fuse = ConvBNAct(filters, 1)

    def call(self, x):
        x = self.stem(x)
        if self.use_split_op:
            a, b = ops.split(x, 2, axis=-1)
        else:
            half = self.filters // 2
            a, b = x[..., :half], x[..., half:]
        return self.fuse(ops.concatenate([a, self.body(b)], axis=-1))

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, use_split_op=self.use_split_op)


@pytest.mark.parametrize("use_split_op", [False, True])
def test_csp_split_block(use_split_op):
    m = _model(CSPBlock(8, use_split_op, name="csp1"), CSPBlock(12, use_split_op, name="csp2"))
    r = _check(m, min_share=0.9)
    assert not r.plan.barriers, r.plan.barriers
    r = testing.exactness(m, 0.5, seed=7, constants=True)
    assert r.difference < 1e-4


@pytest.mark.parametrize("axis", [1, 2])
def test_a_split_of_another_axis_keeps_its_sections(axis):
    # its sections were rewritten to the kept channel counts: rows split at 6, not 4 (0.5 off)
    inp = keras.Input((8, 8, 3))
    h = layers.ReLU()(layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same")(inp)))
    top, bottom = ops.split(h, 2, axis=axis)
    h = ops.concatenate([ops.mean(top, axis=(1, 2)), ops.max(bottom, axis=(1, 2))], axis=-1)
    m = keras.Model(inp, layers.Dense(3)(h))
    r = testing.exactness(m, 0.5, seed=1)
    assert r.killed and r.plan.removed_channels and r.difference < 1e-5
    split = [op for op in r.model.operations if type(op).__name__ == "Split"][0]
    assert split.get_config()["indices_or_sections"] == 2


@pytest.mark.parametrize("axis", [1, -1])
def test_a_split_into_one_part_still_runs(axis):
    inp = keras.Input((8, 8, 3))
    h = layers.ReLU()(layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same")(inp)))
    (only,) = ops.split(h, 1, axis=axis)
    m = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(only)))
    r = testing.exactness(m, 0.5, seed=1)  # its pruned model crashed ("num_split of 0")
    assert r.plan.removed_channels and r.difference < 1e-5


class RegularizedBlock(ConvBNAct):
    """A traceable block with an activity regularizer, which Layer.__call__ applies."""

    def __init__(self, filters, **kwargs):
        super().__init__(filters, activity_regularizer=keras.regularizers.L2(0.1), **kwargs)


def test_a_custom_layer_with_an_activity_regularizer_is_kept_as_it_is():
    m = _model(ConvBNAct(8, name="b1"), RegularizedBlock(6, name="reg"))
    reason = _barrier_reason(RegularizedBlock(6, name="reg"), "reg")
    assert "activity_regularizer" in reason
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, 0.3)
    m(x), small(x)  # its loss was gone from the pruned model's losses (16.9 -> none)
    assert len(small.losses) == len(m.losses) == 1


def test_a_reduction_over_the_batch_axis_is_a_barrier():
    inp = keras.Input((8, 8, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same")(inp))
    m = keras.Model(inp, layers.Dense(2)(ops.expand_dims(ops.mean(h, axis=(0, 1, 2)), 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.5)  # was a PruneError about 8 channels vs None
    assert any("batch axis" in why for _, why in p.barriers)


def test_split_in_a_plain_functional_graph():
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(10, 3, padding="same")(inp)))
    a, b, c = ops.split(x, [3, 7], axis=-1)
    y = layers.Concatenate()([layers.Conv2D(4, 1)(a), b, layers.Conv2D(2, 1)(c)])
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(y)))
    r = _check(m, min_share=0.9)
    assert not r.plan.barriers


class BranchyNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = ConvBNAct(8)
        self.head = layers.Dense(3)

    def call(self, x):
        y = self.stem(x)
        if float(ops.convert_to_numpy(ops.mean(y))) > 1e9:  # needs a concrete value
            y = -y
        return self.head(ops.mean(y, axis=(1, 2)))


def test_untraceable_subclassed_model_is_a_clear_error():
    net = BranchyNet(name="branchy_net")
    net(np.zeros((1, 12, 12, 3), "float32"))
    with pytest.raises(TypeError) as e:
        keras_slim.plan(net, 0.3, input_shape=(12, 12, 3))
    text = str(e.value)
    assert "branchy_net" in text and "BranchyNet" in text and "symbolic" in text


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_ops_pad_of_spatial_axes(mode):
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
    x = layers.Conv2D(4, 3)(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    r = _check(m, min_share=0.9)
    assert not r.plan.barriers
    assert testing.exactness(m, 0.5, seed=2, constants=True).difference < 1e-4


def test_activation_whose_config_does_not_round_trip():
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp))
    x = layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    _check(m, min_share=0.9)


class PyramidAdd(layers.Layer):
    """FPN-style: takes {"P3", "P4"} (P4 at half the size), adds P4 upsampled onto P3.

    It only runs at consistent sizes (P4 exactly half of P3), as in the model: the
    numeric check must use the shapes the layer sees there, not one size for every
    None axis.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.lateral = layers.Conv2D(filters, 1)
        self.up = layers.UpSampling2D(2)

    def call(self, inputs):
        return self.lateral(inputs["P3"]) + self.up(inputs["P4"])

    def get_config(self):
        return dict(super().get_config(), filters=self.filters)


def test_trace_check_runs_at_the_shapes_the_layer_sees_in_the_model():
    inp = keras.Input((None, None, 3))
    p3 = ConvBNAct(8, name="c3")(inp)
    p4 = layers.MaxPooling2D(2)(ConvBNAct(8, name="c4")(p3))
    p4 = layers.BatchNormalization(name="bn4")(layers.Conv2D(8, 1)(p4))
    x = PyramidAdd(8, name="fpn")({"P3": p3, "P4": p4})
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    assert not p.barriers, p.barriers
    r = _check(m, min_share=0.9)
    x = np.random.default_rng(0).normal(size=(1, 20, 28, 3)).astype("float32")
    assert r.model(x).shape == m(x).shape  # still takes any (even) size


def test_trace_check_runs_at_the_input_shape_given_to_plan(monkeypatch):
    from keras_slim import tracing

    inp = keras.Input((None, None, 3))
    x = ConvBNAct(8, name="c1")(inp)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    seen = []
    original = tracing.sample

    def recorded(inputs, shapes=None):
        out = original(inputs, shapes)
        seen.extend(tuple(a.shape) for a in out)
        return out

    monkeypatch.setattr(tracing, "sample", recorded)
    p = keras_slim.plan(m, 0.3, input_shape=(40, 24, 3))
    assert not p.barriers and seen and set(seen) == {(1, 40, 24, 3)}, seen
    seen.clear()
    keras.backend.clear_session()
    keras_slim.plan(m, 0.3)  # no input_shape: the 224 reference
    assert set(seen) == {(1, 224, 224, 3)}, seen


def _count(monkeypatch, name):
    from keras_slim import trace_check, tracing

    module = trace_check if hasattr(trace_check, name) else tracing
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_repeated_blocks_are_checked_once_and_nested_blocks_with_them(monkeypatch):
    checks = _count(monkeypatch, "mismatch")
    m = _model(ConvBNAct(8, name="stem"), *[Residual(8, name=f"res{i}") for i in range(4)])
    r = _check(m)
    assert not r.plan.barriers
    # plan, plan inside kill_channels, prune's plan: each checks one Residual (composed with
    # its two ConvBNAct) and the stem, nothing more
    checks.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras_slim.plan(m, 0.3)
    assert len(checks) == 2, [t.layer.name for t in checks]


def test_repeated_untraceable_layers_are_tried_once(monkeypatch):
    tries = _count(monkeypatch, "_trace")
    m = _model(ConvBNAct(8, name="b1"), *[ValueBranch(name=f"branchy{i}") for i in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    reasons = dict(p.barriers)
    assert all("branchy" + str(i) in reasons and "not traced" in reasons["branchy" + str(i)]
               and "ValueBranch" in reasons["branchy" + str(i)] for i in range(3))
    assert [layer.name for layer in tries].count("branchy0") == 1
    assert not any(layer.name in ("branchy1", "branchy2") for layer in tries)


class ActsBlock(layers.Layer):
    """keras.activations functions and keras.ops activations inside a custom layer."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.a = layers.Conv2D(filters, 3, padding="same")
        self.bn_a = layers.BatchNormalization()
        self.b = layers.Conv2D(filters, 1)
        self.bn_b = layers.BatchNormalization()

    def call(self, x):
        x = keras.activations.relu(self.bn_a(self.a(x)), negative_slope=0.1, max_value=6.0)
        x = ops.hard_tanh(ops.soft_shrink(x, 0.2))
        return keras.activations.relu(ops.squareplus(self.bn_b(self.b(x)), 2.0))

    def get_config(self):
        return dict(super().get_config(), filters=self.filters)


def test_keras_activation_functions_in_a_traced_layer_pass_channels():
    m = _model(ActsBlock(8, name="acts1"), ActsBlock(6, name="acts2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    assert not p.barriers, p.barriers
    # squareplus(0) != 0: dead channels of acts1's end are constants before acts2's 'same'
    # conv; only exact folds here
    _check(m, min_share=0.7, border_folds=False)
    # constants: relu(beta), squareplus(beta) ... are computed, so they fold exactly
    assert testing.exactness(m, 0.5, seed=4, constants=True).difference < 1e-4


def _group_norm_model(groups):
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same")(inp))
    x = layers.GroupNormalization(groups, name="gn")(layers.ReLU()(x))
    x = layers.BatchNormalization(name="bn2")(layers.Conv2D(6, 1)(x))
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("groups", [4, 1, -1])
def test_group_normalization_prunes_whole_groups_only(groups):
    m = _group_norm_model(groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    assert not p.barriers
    size = {4: 2, 1: 8, -1: 1}[groups]
    for seed in range(3):
        r = testing.exactness(m, 0.5, seed=seed)
        assert r.difference < 1e-4, (seed, r.difference)
        kept = r.model.get_layer("gn")
        width = kept.gamma.shape[0]
        assert width % size == 0 and kept.groups == width // size
        assert testing.exactness(m, 0.5, seed=seed, constants=True).difference < 1e-4
    # whole groups really go: a dead group is removed
    testing.randomize_batchnorm(m)
    bn = m.get_layer("bn1")
    gamma, beta, mean, var = bn.get_weights()
    gamma[:size] = 0.0
    beta[:size] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, threshold=1e-12)
    if groups != 1:  # one group: it is the whole layer (min_channels keeps it)
        assert small.get_layer("gn").gamma.shape[0] == 8 - size
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert testing.max_difference(m, small, x) < 1e-4


def test_group_normalization_part_of_a_group_dead_keeps_the_group():
    m = _group_norm_model(2)  # groups of 4
    testing.randomize_batchnorm(m)
    bn = m.get_layer("bn1")
    gamma, beta, mean, var = bn.get_weights()
    gamma[:2] = 0.0  # half of group 0: its statistics still depend on the live half
    beta[:2] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, threshold=1e-12)
    assert small.get_layer("gn").gamma.shape[0] == 8
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert testing.max_difference(m, small, x) < 1e-4


def _neg_inf_pad_model(pool="layer", pad=1, reader="max"):
    inp = keras.Input((9, 9, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=float("-inf"))
    if reader == "avg":
        x = layers.AveragePooling2D(3, strides=2)(x)
    elif pool == "layer":
        x = layers.MaxPooling2D(3, strides=2)(x)
    else:
        x = ops.max_pool(x, 3, 2)
    x = layers.Conv2D(4, 2)(x)
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("pool", ["layer", "op"])
def test_neg_inf_pad_before_max_pool_keeps_dead_and_constant_channels_exact(pool):
    """keras-hub's ResNet/CSPNet stems: ops.pad(x, ..., constant_values=-inf) -> MaxPooling2D."""
    m = _neg_inf_pad_model(pool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not keras_slim.plan(m, 0.3).barriers
    _check(m, min_share=1.0)
    r = testing.exactness(m, 0.5, seed=2, constants=True)  # border_folds=False: exact only
    assert r.difference < 1e-4
    assert r.killed and r.plan.removed_channels == r.killed


@pytest.mark.parametrize("pad, reader", [(3, "max"), (1, "avg")])
def test_neg_inf_pad_read_otherwise_is_a_barrier(pad, reader):
    m = _neg_inf_pad_model(pad=pad, reader=reader)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    assert any("-inf" in reason for _, reason in p.barriers), p.barriers


class Halve(layers.Layer):
    def call(self, x):
        return x * 0.5


def test_custom_layer_called_at_two_shapes_stays_whole_and_prunes():
    """Regression (keras-hub SegFormer's DropPath): one call traced, the other kept whole,
    gave two layers of one name in the rebuilt model."""
    halve = Halve(name="halve")
    inp = keras.Input((12, 12, 3))
    a = ConvBNAct(8, name="a")(inp)
    b = layers.MaxPooling2D(2)(ConvBNAct(8, name="b")(a))
    c = ConvBNAct(6, name="c")(b)  # prunable: read by the head only
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(halve(a)),
                              layers.GlobalAveragePooling2D()(halve(b)),
                              layers.GlobalAveragePooling2D()(c)])
    m = keras.Model(inp, layers.Dense(2)(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.3)
    assert "several input shapes" in dict(p.barriers)["halve"]
    _check(m, min_share=0.0)


# ---------------------------------------------------------------- training-only behaviour
class HalveInTraining(layers.Layer):
    """Weightless, the identity at inference, different in training (drop-path style)."""

    def call(self, x, training=None):
        if training:
            x = x * 0.5
        return x


class DropPath(layers.Layer):
    """Stochastic depth as usually written with keras.random."""

    def __init__(self, rate=0.5, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = keras.random.SeedGenerator(0)

    def call(self, x, training=None):
        if not training:
            return x
        keep = 1.0 - self.rate
        mask = ops.floor(keep + keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.seed))
        return x / keep * mask

    def get_config(self):
        return dict(super().get_config(), rate=self.rate)


class NoisyBlock(ConvBNAct):
    """A conv block that adds ops of its own in training: its trace would lose them."""

    def call(self, x, training=None):
        y = ops.relu(self.bn(self.conv(x), training=training))
        if training:
            y = y + 0.1 * ops.sign(y)
        return y


def test_a_layer_that_acts_only_in_training_is_kept_and_channels_pass_through_it():
    m = _model(ConvBNAct(8, name="b1"), HalveInTraining(name="half"), ConvBNAct(6, name="b2"))
    r = _check(m, min_share=1.0)  # channels still go through it
    assert isinstance(r.model.get_layer("half"), HalveInTraining)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    small = keras_slim.prune(m, 0.0)
    np.testing.assert_allclose(small(x, training=True), m(x, training=True), atol=1e-5)
    m2 = _model(ConvBNAct(8, name="b1"), DropPath(name="drop"), ConvBNAct(6, name="b2"))
    r = _check(m2, min_share=1.0)
    assert isinstance(r.model.get_layer("drop"), DropPath)
    a, b = (np.asarray(r.model(x, training=True)) for _ in range(2))
    assert np.abs(a - b).max() > 0  # still drops paths in training


def test_a_block_with_its_own_training_branch_is_a_barrier_naming_it():
    reason = _barrier_reason(NoisyBlock(8, name="noisy"), "noisy")
    assert "training=True" in reason and "Sign" in reason
    m = _model(ConvBNAct(8, name="b1"), NoisyBlock(8, name="noisy"), ConvBNAct(6, name="b2"))
    _check(m, min_share=0.0)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    small = keras_slim.prune(m, 0.0)
    np.testing.assert_allclose(small(x, training=True), m(x, training=True), atol=1e-5)


class BranchingNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = ConvBNAct(8)
        self.head = layers.Dense(3)

    def call(self, x, training=None):
        y = self.block(x)
        if training:
            y = y * 0.5
        return self.head(ops.mean(y, axis=(1, 2)))


def test_a_subclassed_model_with_a_training_branch_is_refused():
    net = BranchingNet()
    net(np.zeros((1, 12, 12, 3), "float32"))
    with pytest.raises(keras_slim.errors.SlimError, match="training=True"):
        keras_slim.plan(net, 0.3)


class PositionScale(layers.Layer):
    """A weight per position and channel (a positional embedding): not liftable per channel."""

    def build(self, shape):
        self.pos = self.add_weight(shape=tuple(shape[1:]), initializer="ones", name="pos")

    def call(self, x):
        return x * self.pos


class AbsBlock(layers.Layer):
    def call(self, x):
        return ops.abs(x) + abs(x)


class CondBlock(layers.Layer):
    def call(self, x):
        return ops.cond(ops.max(x) > 100.0, lambda: x * 0.5, lambda: x)


def test_position_dependent_weights_and_cond_are_barriers_not_crashes():
    for block, name in ((PositionScale(name="pos"), "pos"), (CondBlock(name="cond"), "cond")):
        m = _model(ConvBNAct(8, name="b1"), block, ConvBNAct(6, name="b2"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = keras_slim.plan(m, 0.3)
        assert name in dict(p.barriers)
        testing.randomize_batchnorm(m)
        assert testing.exactness(m, 0.5, seed=1, constants=True).difference < 1e-4


def test_abs_passes_channels_through():
    m = _model(ConvBNAct(8, name="b1"), AbsBlock(name="absb"), ConvBNAct(6, name="b2"))
    r = _check(m, min_share=1.0)
    assert not r.plan.barriers


class CenterInTraining(layers.Layer):
    """Weightless, the identity at inference, mixes channels in training: a barrier."""

    def call(self, x, training=None):
        if training:
            return x - ops.mean(x, axis=-1, keepdims=True)
        return x


def test_a_training_only_layer_that_mixes_channels_is_a_barrier():
    reason = _barrier_reason(CenterInTraining(name="center"), "center")
    assert "training=True" in reason and "Mean" in reason
    m = _model(ConvBNAct(8, name="b1"), CenterInTraining(name="center"), ConvBNAct(6, name="b2"))
    small = keras_slim.prune(m, 0.0)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(small(x, training=True), m(x, training=True), atol=1e-5)

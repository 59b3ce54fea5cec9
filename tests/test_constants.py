"""Constant channels (gamma = 0, beta != 0): folded exactly, or kept; never dropped silently."""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing

ACTS = ["relu", "sigmoid", "softplus", "hard_sigmoid"]  # the last three: act(0) != 0


def _reader_model(reader, act, size=10):
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(16, 3, padding="same")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation(act)(x)
    x = reader(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(4)(x))


def _make_constant(model, name="bn", every=2, seed=0):
    """gamma = 0 on every other channel of `name`, beta of +-0.2..0.8 there."""
    rng = np.random.default_rng(seed)
    testing.randomize_batchnorm(model, seed)
    bn = model.get_layer(name)
    g, b, mean, var = bn.get_weights()
    idx = np.arange(0, len(g), every)
    g[idx] = 0.0
    b[idx] = rng.uniform(0.2, 0.8, len(idx)) * rng.choice([-1.0, 1.0], len(idx))
    bn.set_weights([g, b, mean, var])
    return idx


def _relative(a, b, x):
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    return float(np.abs(ya - yb).max() / np.abs(ya).max())


X = np.random.default_rng(1).normal(size=(4, 10, 10, 3)).astype("float32")


@pytest.mark.parametrize("act", ACTS)
def test_separable_valid_reader_folds_constants_exactly(act):
    m = _reader_model(layers.SeparableConv2D(8, 3, padding="valid", depth_multiplier=2), act)
    idx = _make_constant(m)
    small = keras_slim.prune(m, threshold=1e-12)
    assert small.get_layer(index=1).filters == 16 - len(idx)  # the constants did go
    assert _relative(m, small, X) < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("act", ACTS)
def test_transpose_reader_keeps_constant_channels(act, stride):
    m = _reader_model(layers.Conv2DTranspose(8, 3, strides=stride, padding="valid"), act)
    _make_constant(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, threshold=1e-12)
    assert _relative(m, small, X) < 1e-5
    bn = m.get_layer("bn").get_weights()
    consts = keras.activations.get(act)(keras.ops.convert_to_tensor(bn[1][bn[0] == 0]))
    truly_zero = int(np.sum(np.asarray(consts) == 0))
    # Only channels whose act(beta) is exactly 0 (relu of a negative beta) may go.
    assert small.get_layer(index=1).filters == 16 - truly_zero


def test_same_reader_folds_inside_and_says_so():
    """A 'same' conv: the fold is exact away from the borders, reported, and optional."""
    inp = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("sigmoid")(x)
    out = layers.Conv2D(4, 3, padding="same", name="reader")(x)
    m = keras.Model(inp, out)
    idx = _make_constant(m)
    p = keras_slim.plan(m, threshold=1e-12)
    assert p.border_folds == [["reader", len(idx)]]
    assert "exact away from the borders" in str(p)
    small = keras_slim.prune(m, p)
    ya, yb = np.asarray(m(X)), np.asarray(small(X))
    np.testing.assert_allclose(yb[:, 1:-1, 1:-1], ya[:, 1:-1, 1:-1], atol=1e-5)
    border = np.abs(ya - yb).max()
    assert border > 1e-3  # the border really differs: the fold is not exact there...
    # ...and is bounded by what the missing taps would have read: |c| * sum |w|.
    c = np.asarray(keras.activations.sigmoid(m.get_layer("bn").get_weights()[1][idx]))
    w = np.abs(m.get_layer("reader").get_weights()[0][:, :, idx, :]).sum(axis=(0, 1, 2))
    assert border <= float((np.abs(c).max() * w).max()) + 1e-5
    strict = keras_slim.plan(m, threshold=1e-12, border_folds=False)
    assert strict.border_folds == [] and strict.removed_channels == 0
    assert testing.max_difference(m, keras_slim.prune(m, strict), X) < 1e-5


def test_zero_padding_then_valid_conv_counts_as_border_fold():
    inp = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(4, 3, padding="valid", name="reader")(x)
    m = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    _make_constant(m)
    bn = m.get_layer("bn").get_weights()
    positive = int(np.sum((bn[0] == 0) & (bn[1] > 0)))  # relu(beta) != 0: a real constant
    assert keras_slim.plan(m, threshold=1e-12).removed_channels == 4
    strict = keras_slim.plan(m, threshold=1e-12, border_folds=False)
    assert strict.removed_channels == 4 - positive  # only the relu(negative beta) = 0 ones
    assert testing.max_difference(m, keras_slim.prune(m, strict), X) < 1e-5


def test_user_handler_without_constant_keeps_constant_channels():
    """A handler written like the README's ScaleHandler never loses a constant."""

    class Scale(layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    class ScaleHandler(keras_slim.Handler):
        shares_channels = True

        def flow(self, ctx, ins):
            return [ins[0]]

        def rebuild(self, layer, in_keep, out_keep):
            return layer.get_config(), keras_slim.slice_weights(
                layer, {"scale": [(-1, out_keep[0])]})

    keras_slim.register_handler(Scale, ScaleHandler())
    inp = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("sigmoid")(x)
    x = Scale(name="scale")(x)
    x = layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, layers.Dense(3)(x))
    _make_constant(m)
    m.get_layer("scale").set_weights([np.linspace(0.5, 2.0, 8).astype("float32")])
    # sigmoid(beta) is a constant the handler does not describe: nothing may go...
    assert keras_slim.plan(m, threshold=1e-12).removed_channels == 0
    # ...but truly dead channels (gamma = beta = 0, through relu) still go.
    inp = keras.Input((10, 10, 3))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same")(inp))
    x = Scale(name="scale")(layers.ReLU()(x))
    r = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    testing.randomize_batchnorm(r)
    killed = testing.kill_channels(r, 0.5, seed=2)
    small = keras_slim.prune(r, threshold=1e-12)
    assert killed > 0 and small.get_layer("scale").get_weights()[0].shape[0] == 8 - killed
    assert testing.max_difference(r, small, X) < 1e-5


def test_handler_claiming_absorption_without_fold_fails_loudly():
    class LyingDense(keras_slim.Handler):
        shares_channels = True
        absorbs_constants = True

        def flow(self, ctx, ins):
            ctx.use(ins[0])
            out = ctx.fresh(0)
            ctx.produce(out)
            return [out]

        def rebuild(self, layer, in_keep, out_keep):
            from keras_slim.handlers.dense import DenseHandler
            return DenseHandler().rebuild(layer, in_keep, out_keep)

    inp = keras.Input((6,))
    x = layers.BatchNormalization(name="bn")(layers.Dense(8)(inp))
    m = keras.Model(inp, layers.Dense(2, name="reader")(layers.Activation("sigmoid")(x)))
    testing.randomize_batchnorm(m)
    g, b, mean, var = m.get_layer("bn").get_weights()
    g[:4] = 0
    m.get_layer("bn").set_weights([g, b, mean, var])
    with pytest.raises(RuntimeError, match="absorbs_constants"):
        keras_slim.prune(m, threshold=1e-12, custom_handlers={"reader": LyingDense()})


def test_shared_reader_called_twice_keeps_constants():
    """One Dense object called on two tensors has one bias: no fold, constants stay."""
    inp = keras.Input((6,))
    a = layers.Activation("sigmoid")(layers.BatchNormalization(name="bn")(layers.Dense(8)(inp)))
    shared = layers.Dense(3, name="shared")
    m = keras.Model(inp, [shared(a), shared(layers.Dense(8)(inp))])
    testing.randomize_batchnorm(m)
    g, b, mean, var = m.get_layer("bn").get_weights()
    g[:4] = 0
    m.get_layer("bn").set_weights([g, b, mean, var])
    assert keras_slim.plan(m, threshold=1e-12).removed_channels == 0


def test_check_exact_constant_mode_on_a_residual_net():
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    y = layers.BatchNormalization()(layers.Conv2D(8, 1)(x))
    x = layers.Activation("softplus")(layers.Add()([x, y]))
    m = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    r = testing.exactness(m, 0.5, seed=4, constants=True)
    assert r.difference < 1e-4
    assert r.killed > 0 and r.plan.removed_channels > 0  # softplus(beta) folded into Dense
    assert r.plan.options["border_folds"] is False


def test_plan_counts_the_bias_a_fold_gives_a_bias_free_layer():
    """A bias-free 1x1 conv feeding an Add (no BN to shift) gets a bias for the folded
    constants: the plan's parameter count, and so target_params, include it."""
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    y = layers.Activation("softplus")(layers.BatchNormalization(name="bn")(
        layers.Conv2D(12, 1)(x)))
    y = layers.Conv2D(8, 1, use_bias=False, name="proj")(y)
    m = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.Add()([x, y]))))
    _make_constant(m)
    p = keras_slim.plan(m, threshold=1e-12)
    small = keras_slim.prune(m, p)
    assert p.removed_channels == 6 and small.get_layer("proj").use_bias  # the fold's bias
    assert small.count_params() == p.params_after
    assert _relative(m, small, X[:, :8, :8]) < 1e-5
    row = next(r for r in p.layers if r.name == "proj")
    assert row.params_after == 6 * 8 + 8  # sliced kernel + the new bias
    unfolded = keras_slim.prune(m, p, fold_constants=False)
    assert unfolded.count_params() == p.params_after - 8  # the plan counts the default


@pytest.mark.parametrize("shared_axes, per_position", [([1, 2], False), (None, False),
                                                       (None, True)])
def test_prelu_folds_alpha_times_a_negative_constant(shared_axes, per_position):
    """PReLU(c) is alpha * c for c < 0; an alpha that differs between positions is no fold."""
    inp = keras.Input((10, 10, 3))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(16, 3, padding="same")(inp))
    prelu = layers.PReLU(shared_axes=shared_axes, name="prelu")
    x = prelu(x)
    m = keras.Model(inp, layers.Conv2D(4, 1, name="reader")(x))
    idx = _make_constant(m)
    rng = np.random.default_rng(3)
    alpha = prelu.get_weights()[0]
    alpha[...] = rng.uniform(0.1, 0.4, alpha.shape[-1])  # per channel
    if per_position:
        alpha[...] = rng.uniform(0.1, 0.4, alpha.shape)
    prelu.set_weights([alpha])
    small = keras_slim.prune(m, threshold=1e-12)
    negative = int((m.get_layer("bn").get_weights()[1][idx] < 0).sum())
    kept = small.get_layer("reader").kernel.shape[2]
    assert kept == (16 - len(idx) + negative if per_position else 16 - len(idx))
    assert _relative(m, small, X) < 1e-5


def _dead_sigmoid_into(reader, shared_bn=False, dense=False):
    """3 dead channels before a sigmoid (each the constant 0.5) -> bias-free `reader` -> BN."""
    inp = keras.Input((12,) if dense else (8, 8, 3))
    x = (layers.Dense(8) if dense else layers.Conv2D(8, 3, padding="same"))(inp)
    x = layers.Activation("sigmoid")(layers.BatchNormalization(name="bn")(x))
    bn = layers.BatchNormalization(name="after")
    outputs = [bn(reader(x))]
    if shared_bn:  # the same BN layer on a path that never sees the constants
        side = (layers.Dense(6, use_bias=False) if dense
                else layers.Conv2D(6, 1, use_bias=False))(inp)
        outputs.append(bn(side))
    m = keras.Model(inp, outputs)
    testing.randomize_batchnorm(m, seed=4)
    g, b, mean, var = m.get_layer("bn").get_weights()
    g[:3] = b[:3] = 0.0
    m.get_layer("bn").set_weights([g, b, mean, var])
    return m


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("activation", [None, "tanh", "relu"])
def test_a_fold_before_a_builtin_activation_goes_into_a_bias(activation, dense):
    """act(Wx + d) is not act(Wx) + d: the BN after it cannot take the constant."""
    reader = (layers.Dense(6, activation=activation, use_bias=False, name="reader") if dense
              else layers.Conv2D(6, 1, activation=activation, use_bias=False, name="reader"))
    m = _dead_sigmoid_into(reader, dense=dense)
    p = keras_slim.plan(m, threshold=1e-12, border_folds=False)
    small = keras_slim.prune(m, p)
    assert small.get_layer("reader").kernel.shape[-2] == 5
    assert small.get_layer("reader").use_bias == (activation is not None)
    assert small.count_params() == p.params_after
    x = np.random.default_rng(2).normal(size=(4, *m.input.shape[1:])).astype("float32")
    assert _relative(m, small, x) < 1e-5


def test_a_fold_next_to_a_shared_batchnorm_goes_into_a_bias():
    """Shifting a BN called twice would move its other call, which never saw the constant."""
    m = _dead_sigmoid_into(layers.Conv2D(6, 1, use_bias=False, name="reader"), shared_bn=True)
    small = keras_slim.prune(m, threshold=1e-12, border_folds=False)
    assert small.get_layer("reader").use_bias
    np.testing.assert_allclose(small.get_layer("after").moving_mean.numpy(),
                               m.get_layer("after").moving_mean.numpy())
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype("float32")
    for a, b in zip(m(x), small(x)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def _four_constants(m, seed):
    """Channels 0-3 of BN "bn" constant (gamma 0, beta 1, -2, 0.5, 3), the rest random."""
    testing.randomize_batchnorm(m, seed=seed)
    g, b, mean, var = m.get_layer("bn").get_weights()
    g[:4] = 0.0
    b[:4] = [1.0, -2.0, 0.5, 3.0]
    m.get_layer("bn").set_weights([g, b, mean, var])
    return m


@pytest.mark.parametrize("one_d", [False, True])
@pytest.mark.parametrize("after", ["conv", "output", "act_bn"])
def test_a_bias_free_separable_reader_gets_a_bias(after, one_d):
    """The new bias goes after the pointwise kernel (before: a crash rebuilding it)."""
    shape = (8, 3) if one_d else (8, 8, 3)
    conv, sep = ((layers.Conv1D, layers.SeparableConv1D) if one_d
                 else (layers.Conv2D, layers.SeparableConv2D))
    inp = keras.Input(shape)
    x = layers.Activation("sigmoid")(layers.BatchNormalization(name="bn")(
        conv(8, 3, padding="same")(inp)))
    x = sep(6, 3, use_bias=False, activation="tanh" if after == "act_bn" else None,
            name="reader")(x)
    if after == "conv":
        x = conv(4, 1)(x)
    elif after == "act_bn":
        x = layers.BatchNormalization()(x)
    m = _four_constants(keras.Model(inp, x), seed=5)
    p = keras_slim.plan(m, threshold=1e-12, border_folds=False)
    small = keras_slim.prune(m, p)
    assert small.get_layer("reader").use_bias and small.count_params() == p.params_after
    x = np.random.default_rng(2).normal(size=(3, *shape)).astype("float32")
    assert _relative(m, small, x) < 1e-5


@pytest.mark.parametrize("path", ["depthwise_same_1x1", "zero_pad_valid", "depthwise_gap_dense"])
def test_constants_through_a_padded_layer_are_border_folds(path):
    """A 'same' depthwise or a ZeroPadding passes constants that hold only away from the
    borders: the reader after it is listed in plan.border_folds, and without border folds
    the channels stay and the model is exact."""
    inp = keras.Input((8, 8, 3))
    x = layers.Activation("sigmoid")(layers.BatchNormalization(name="bn")(
        layers.Conv2D(8, 3, padding="same")(inp)))
    if path == "depthwise_same_1x1":
        out = layers.Conv2D(4, 1, name="reader")(layers.DepthwiseConv2D(3, padding="same")(x))
    elif path == "zero_pad_valid":
        out = layers.Conv2D(4, 3, name="reader")(layers.ZeroPadding2D(1)(x))
    else:
        x = layers.GlobalAveragePooling2D()(layers.DepthwiseConv2D(3, padding="same")(x))
        out = layers.Dense(4, name="reader")(x)
    m = _four_constants(keras.Model(inp, out), seed=6)
    p = keras_slim.plan(m, threshold=1e-12)
    assert p.border_folds == [["reader", 4]] and "away from the borders only" in str(p)
    exact = keras_slim.plan(m, threshold=1e-12, border_folds=False)
    assert exact.border_folds == [] and exact.removed_channels == 0
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    assert _relative(m, keras_slim.prune(m, exact), x) < 1e-6


def test_a_plan_made_before_the_weights_changed_is_checked_again(caplog):
    """plan, then train (here: move the betas), then prune with the same Plan object: the
    constants the plan folded are stale, so prune replays its channels on the weights now."""
    m = _reader_model(layers.Conv2D(8, 1), "sigmoid")
    idx = _make_constant(m)
    p = keras_slim.plan(m, threshold=1e-12)
    bn = m.get_layer("bn")
    g, b, mean, var = bn.get_weights()
    bn.set_weights([g, b + 0.7, mean, var])
    with caplog.at_level("WARNING", logger="keras_slim"):
        small = keras_slim.prune(m, p)
    assert "weights changed since this plan was made" in caplog.text
    assert small.get_layer(index=1).filters == 16 - len(idx) and _relative(m, small, X) < 1e-5
    # dead channels before a 'same' reader, planned with exact folds only; then they get a
    # beta: constants that reader cannot fold exactly, so the plan is refused, not applied
    same = _reader_model(layers.Conv2D(8, 3, padding="same"), "relu")
    idx = _make_constant(same)
    g, b, mean, var = same.get_layer("bn").get_weights()
    b[idx] = 0.0
    same.get_layer("bn").set_weights([g, b, mean, var])
    p = keras_slim.plan(same, threshold=1e-12, border_folds=False)
    assert p.removed_channels == len(idx)
    b[idx] = 0.5
    same.get_layer("bn").set_weights([g, b, mean, var])
    with pytest.raises(keras_slim.ModelError, match="cannot be removed"):
        keras_slim.prune(same, p)
    caplog.clear()
    fresh = keras_slim.plan(m, 0.0)
    keras_slim.prune(m, fresh)  # unchanged weights: no replay
    assert "weights changed" not in caplog.text

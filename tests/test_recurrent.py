"""A CNN feeding a recurrent layer (CRNN text and audio models): the recurrent layer reads
the pruned channels through its input kernel, so zero channels go and constant ones fold
into its input bias (where it has one)."""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax

RNNS = {
    "SimpleRNN": lambda: layers.SimpleRNN(5, name="rnn"),
    "GRU": lambda: layers.GRU(5, name="rnn"),
    "GRU reset_after=False": lambda: layers.GRU(5, reset_after=False, name="rnn"),
    "GRU no bias": lambda: layers.GRU(5, use_bias=False, name="rnn"),
    "LSTM sequences": lambda: layers.LSTM(5, return_sequences=True, name="rnn"),
    "Bidirectional LSTM": lambda: layers.Bidirectional(layers.LSTM(4), name="rnn"),
    "Bidirectional GRU sum": lambda: layers.Bidirectional(
        layers.GRU(4, return_sequences=True), merge_mode="sum", name="rnn"),
}


def _crnn(make_rnn):
    inp = keras.Input((6, 10, 3))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same", name="c")(inp))
    x = layers.Permute((2, 1, 3))(layers.ReLU()(x))  # (batch, width = time, height, channels)
    x = make_rnn()(layers.Reshape((10, 48))(x))
    return keras.Model(inp, layers.Dense(3)(x))


def _set(model, beta):
    testing.randomize_batchnorm(model, seed=0)
    bn = model.get_layer("bn")
    gamma, shift = bn.gamma.numpy(), bn.beta.numpy()
    gamma[:3], shift[:3] = 0.0, beta  # relu(beta): dead for beta < 0, constant for beta > 0
    bn.gamma.assign(gamma)
    bn.beta.assign(shift)


def _plan(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras_slim.plan(model, threshold=1e-12)


@pytest.mark.parametrize("name", sorted(RNNS))
def test_zero_channels_go_through_a_recurrent_reader_exactly(name):
    m = _crnn(RNNS[name])
    _set(m, beta=-1.0)
    p = _plan(m)
    assert not p.barriers and p.kept["bn"] == [3, 4, 5, 6, 7]
    small = keras_slim.prune(m, p)
    kernels = [w for w in small.get_layer("rnn").weights if w.path.endswith("/kernel")]
    assert kernels and all(w.shape[0] == 6 * 5 for w in kernels)  # 6 rows per channel
    x = testing.random_inputs(m, seed=0)
    assert testing.max_difference(m, small, x) < 1e-5
    assert p.macs_after < p.macs_before and not p.macs_uncounted


@pytest.mark.parametrize("name", ["SimpleRNN", "GRU", "GRU reset_after=False", "LSTM sequences"])
def test_constant_channels_fold_into_the_input_bias(name):
    m = _crnn(RNNS[name])
    _set(m, beta=0.7)  # relu(0.7): a constant at every step, through Permute and Reshape
    p = _plan(m)
    assert p.kept["bn"] == [3, 4, 5, 6, 7] and not p.border_folds
    small = keras_slim.prune(m, p)
    x = testing.random_inputs(m, seed=0)
    assert testing.max_difference(m, small, x) < 1e-5
    old = m.get_layer("rnn").cell.bias.numpy()
    new = small.get_layer("rnn").cell.bias.numpy()
    if old.ndim == 2:  # GRU reset_after: only the input row takes the constant
        np.testing.assert_array_equal(new[1], old[1])
        assert np.abs(new[0] - old[0]).max() > 0


@pytest.mark.parametrize("name", ["GRU no bias", "Bidirectional LSTM"])
def test_constant_channels_stay_where_there_is_no_single_input_bias(name):
    m = _crnn(RNNS[name])
    _set(m, beta=0.7)
    assert _plan(m).removed_channels == 0


def test_recurrent_outputs_and_states_keep_their_units():
    inp = keras.Input((6, 10, 3))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same", name="c")(inp))
    x = layers.Reshape((60, 8))(layers.ReLU()(x))
    seq, h, c = layers.LSTM(5, return_sequences=True, return_state=True, name="rnn")(x)
    out = layers.Dense(2)(layers.Concatenate()([layers.GlobalAveragePooling1D()(seq), h, c]))
    m = keras.Model(inp, out)
    _set(m, beta=-1.0)
    p = _plan(m)
    assert p.kept["bn"] == [3, 4, 5, 6, 7] and "rnn" not in p.kept
    x = testing.random_inputs(m, seed=0)
    assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-5


def _masked_model(mask_value=0.0):
    inp = keras.Input((12, 4))
    x = layers.Conv1D(8, 1, use_bias=False, name="c")(inp)
    x = layers.ReLU()(layers.BatchNormalization(name="bn")(x))
    x = layers.GRU(5, name="rnn")(layers.Masking(mask_value=mask_value, name="mask")(x))
    m = keras.Model(inp, layers.Dense(2)(x))
    testing.randomize_batchnorm(m, seed=0)
    bn = m.get_layer("bn")
    bn.moving_mean.assign(np.zeros(8, "float32"))
    beta = -np.abs(bn.beta.numpy())  # a zero input step gives relu(beta) = 0 everywhere: masked
    gamma = bn.gamma.numpy()
    gamma[:3], beta[:3] = 0.0, 0.0  # three dead channels
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    return m


def test_dead_channels_go_through_masking_and_its_mask():
    m = _masked_model()
    x = np.random.default_rng(0).normal(size=(3, 12, 4)).astype("float32")
    x[0, 7:] = 0.0  # masked steps
    x[1, 3:] = 0.0
    p = _plan(m)  # the mask's ops (x != 0, any over the channels) were barriers
    assert not p.barriers and p.kept["bn"] == [3, 4, 5, 6, 7]
    small = keras_slim.prune(m, p)
    assert testing.max_difference(m, small, x) < 1e-5
    features = np.asarray(keras.Model(m.input, m.get_layer("mask").input)(x))
    assert (np.abs(features).sum(-1) == 0).sum() >= 10  # the data has masked steps


def test_constant_channels_before_masking_stay():
    m = _masked_model()
    bn = m.get_layer("bn")
    beta = bn.beta.numpy()
    beta[:2] = 0.6  # gamma = 0, beta > 0: relu(0.6), a constant the mask test reads
    bn.beta.assign(beta)
    p = _plan(m)
    assert p.kept["bn"] == [0, 1, 3, 4, 5, 6, 7]  # only the dead one goes
    x = np.random.default_rng(0).normal(size=(3, 12, 4)).astype("float32")
    x[0, 7:] = 0.0
    assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-5


def test_masking_with_another_mask_value_keeps_every_channel():
    m = _masked_model(mask_value=1.0)
    p = _plan(m)
    assert p.removed_channels == 0 and "mask" in dict(p.barriers)


@pytest.mark.parametrize("cell", [layers.SimpleRNN, layers.GRU, layers.LSTM])
@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_an_rnn_given_initial_state_folds_nothing_and_stays_exact(cell, beta):
    # a call with more inputs than the sequence is never folded into: its constants were
    # dropped without a fold (0.04-0.47 off); zero channels still go
    inp = keras.Input((10, 4))
    x = layers.BatchNormalization(name="bn")(layers.Conv1D(8, 3, padding="same", name="c")(inp))
    x = layers.ReLU()(x)
    state = keras.Input((5,))
    y = cell(5, name="rnn")(x, initial_state=[state, state] if cell is layers.LSTM else [state])
    m = keras.Model([inp, state], layers.Dense(2)(y))
    _set(m, beta=beta)  # three channels: relu(0) = 0 dead, or relu(0.7) constant
    p = _plan(m)
    assert p.removed_channels == (3 if beta == 0 else 0)
    x = testing.random_inputs(m, seed=0)
    assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-5

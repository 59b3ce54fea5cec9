"""Small test models shared by several test files (not part of the package)."""
import os

import keras
import numpy as np

from keras_slim import testing

# How many random graphs the property tests draw: .ci/run's JAX pass sets 5 (eager JAX
# compiles every op per shape); the TensorFlow pass draws the default.
PROPERTY_EXAMPLES = int(os.environ.get("KERAS_SLIM_PROPERTY_EXAMPLES", "25"))


def conv_bn_relu_chain(widths, seed: int, name: str | None = None):
    """Conv-BN-ReLU per width on a 16x16x3 input, then GAP and a 5-way Dense head, with
    random BN statistics (seeded) so that pruning changes something measurable."""
    x = inp = keras.Input((16, 16, 3))
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(5, name="head")(x), name=name)
    testing.randomize_batchnorm(m, seed=seed)
    return m


def walk_layers(model, prefix=""):
    """(plan name, layer) of every layer, nested models' as "outer/inner" as in `Plan.kept`."""
    for layer in model.layers:
        yield prefix + layer.name, layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix + layer.name + "/")


def removed_zeroed(model, p):
    """The "mean" hypothesis on any graph: removed filters zero (biases kept) and removed BN
    gammas zero, so a channel after a BN carries act(beta) and one without carries act(bias).
    A depthwise conv makes no channels of its own (its outputs are its input's class): its
    taps stay, so it maps what its removed input channels carry, as the original with those
    gammas at 0 does. Written from `Plan.kept`, apart from the library's
    `testing._zero_filters`, so that the reference shares no code with what it checks."""
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    as_np = keras.ops.convert_to_numpy
    for path, layer in walk_layers(ref):
        if (path not in p.kept or isinstance(layer, keras.Model)
                or isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))):
            continue
        weights = {w.path.split("/")[-1]: w for w in layer.weights}
        if isinstance(layer, keras.layers.BatchNormalization):
            key = "gamma"
        elif "pointwise_kernel" in weights:
            key = "pointwise_kernel"
        elif "kernel" in weights:
            key = "kernel"
        else:
            continue
        w = as_np(weights[key]).copy()
        w[..., np.setdiff1d(np.arange(w.shape[-1]), p.kept[path])] = 0.0
        weights[key].assign(w)
    return ref

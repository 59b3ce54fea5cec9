"""Small test models shared by several test files (not part of the package)."""
import keras

from keras_slim import testing


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

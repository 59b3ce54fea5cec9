"""Helpers to prove pruning exact: make channels dead, compare outputs.

Used by the test suite and the stress benchmark; handy for users who add a
handler for their own layer and want to check it the same way.
"""
from __future__ import annotations

import numpy as np

from keras_slim import _keras


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give every BN non-trivial gamma, beta and statistics (in place)."""
    rng = np.random.default_rng(seed)
    for layer in _keras.walk_layers(model):
        if not _keras.is_batch_norm(layer):
            continue
        values = []
        for name, w in _keras.get_weights(layer):
            if name == "gamma":
                w = rng.uniform(0.5, 1.5, w.shape)
            elif name == "beta":
                w = rng.normal(0.0, 0.5, w.shape)
            elif name == "moving_mean":
                w = rng.normal(0.0, 0.5, w.shape)
            elif name == "moving_variance":
                w = rng.uniform(0.5, 2.0, w.shape)
            values.append(w.astype("float32"))
        _keras.set_weights(layer, values)


def kill_channels(model, fraction: float = 0.4, seed: int = 0, keep_beta: bool = False) -> int:
    """Zero gamma (and beta) of a random `fraction` of the removable channel classes.

    Every BN scaling factor of a chosen class is zeroed, so the class is dead
    everywhere it is coupled. Returns how many classes were killed.
    """
    from keras_slim.planning import plan

    state = plan(model, 0.0)._state
    frozen, unsafe, scored = state.coupling.root_sets()
    roots = sorted(r for r in scored if r not in frozen and r not in unsafe)
    rng = np.random.default_rng(seed)
    chosen = [r for r in roots if rng.random() < fraction]
    members = state.coupling.members(chosen)
    by_layer: dict[str, list[int]] = {}
    for r in chosen:
        for m in members[r]:
            by_layer.setdefault(m.layer, []).append(m.index)
    for layer in _keras.walk_layers(model):
        if layer.name not in by_layer:
            continue
        idx = by_layer[layer.name]
        values = []
        for name, w in _keras.get_weights(layer):
            if name == "gamma" or (name == "beta" and not keep_beta):
                w = w.copy()
                w[idx] = 0.0
            values.append(w)
        _keras.set_weights(layer, values)
    return len(chosen)


def max_difference(a, b, inputs) -> float:
    """Largest absolute difference between two models' outputs on `inputs`."""
    ya = _keras.flatten(a(inputs, training=False))
    yb = _keras.flatten(b(inputs, training=False))
    if len(ya) != len(yb):
        raise AssertionError(f"models have {len(ya)} and {len(yb)} outputs")
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(ya, yb))


def random_inputs(model, batch: int = 2, seed: int = 0):
    """Random float inputs matching the model's input structure."""
    rng = np.random.default_rng(seed)

    def make(t):
        shape = (batch,) + tuple(d if d is not None else 8 for d in t.shape[1:])
        return rng.normal(size=shape).astype("float32")

    inputs = _keras.map_tensors(_keras.read_model(model).inputs, make)
    return inputs


def random_model(seed: int, max_blocks: int = 6):
    """A random Functional CNN from the layers keras_slim supports.

    Blocks: conv-BN-act, depthwise-BN-act (multiplier 1 or 2), separable conv,
    residual Add / Multiply / Maximum of equal-width tensors, Concatenate,
    squeeze-excitation, a pre-activation BN on a shared tensor (channel
    selection), a nested sub-model; heads: GAP -> Dense or Flatten -> Dense,
    sometimes two outputs. Spatial size stays fixed so any two tensors merge.
    """
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    acts = ["relu", "swish", "tanh", "linear", "relu6"]
    inp = keras.Input((6, 6, 3), name="x")
    pool = [inp]
    n = 0

    def name(kind):
        nonlocal n
        n += 1
        return f"{kind}{n}"

    def conv_bn(x, c, k=3):
        x = layers.Conv2D(c, k, padding="same", use_bias=bool(rng.random() < 0.3), name=name("conv"))(x)
        x = layers.BatchNormalization(name=name("bn"))(x)
        return layers.Activation(str(rng.choice(acts)), name=name("act"))(x)

    def width(x):
        return int(x.shape[-1])

    pool.append(conv_bn(inp, int(rng.integers(3, 9))))
    for _ in range(int(rng.integers(2, max_blocks + 1))):
        kind = rng.choice(["conv", "dw", "sep", "merge", "concat", "se", "preact", "nested", "conv1"])
        x = pool[int(rng.integers(1, len(pool)))]
        if kind == "conv":
            y = conv_bn(x, int(rng.integers(2, 10)))
        elif kind == "conv1":
            y = conv_bn(x, int(rng.integers(2, 10)), k=1)
        elif kind == "dw":
            m = int(rng.choice([1, 1, 2]))
            y = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=m, use_bias=False,
                                       name=name("dw"))(x)
            y = layers.BatchNormalization(name=name("bn"))(y)
            y = layers.ReLU(6.0, name=name("relu"))(y)
        elif kind == "sep":
            y = layers.SeparableConv2D(int(rng.integers(2, 10)), 3, padding="same", name=name("sep"))(x)
            y = layers.BatchNormalization(name=name("bn"))(y)
        elif kind == "merge":
            other = conv_bn(pool[int(rng.integers(0, len(pool)))], width(x))
            merge = rng.choice([layers.Add, layers.Multiply, layers.Maximum, layers.Average,
                                layers.Subtract])
            y = merge(name=name("merge"))([x, other])
        elif kind == "concat":
            other = pool[int(rng.integers(0, len(pool)))]
            y = layers.Concatenate(name=name("cat"))([x, other])
        elif kind == "se":
            c = width(x)
            s = layers.GlobalAveragePooling2D(keepdims=True, name=name("gap"))(x)
            s = layers.Conv2D(max(1, c // 2), 1, activation="relu", name=name("se_reduce"))(s)
            s = layers.Conv2D(c, 1, activation="sigmoid", name=name("se_expand"))(s)
            y = layers.Multiply(name=name("se_mul"))([x, s])
        elif kind == "preact":
            y = layers.BatchNormalization(name=name("bn"))(x)
            y = layers.ReLU(name=name("relu"))(y)
            y = layers.Conv2D(width(x), 3, padding="same", use_bias=False, name=name("conv"))(y)
            y = layers.Add(name=name("add"))([x, y])
        else:  # nested
            sub_in = keras.Input(tuple(x.shape[1:]))
            sub_out = conv_bn(sub_in, int(rng.integers(2, 8)))
            sub = keras.Model(sub_in, sub_out, name=name("sub"))
            y = sub(x)
        pool.append(y)
    last = pool[-1]
    if rng.random() < 0.5:
        h = layers.GlobalAveragePooling2D(name=name("gap"))(last)
    else:
        h = layers.Flatten(name=name("flatten"))(layers.MaxPooling2D(3, name=name("pool"))(last))
    outputs = [layers.Dense(4, name=name("head"))(h)]
    if rng.random() < 0.3:
        other = pool[int(rng.integers(1, len(pool)))]
        outputs.append(layers.Dense(3, name=name("head"))(layers.GlobalMaxPooling2D(name=name("gmp"))(other)))
    return keras.Model(inp, outputs if len(outputs) > 1 else outputs[0], name=f"random{seed}")


def check_exact(model, fraction: float = 0.4, seed: int = 0, **plan_options) -> tuple:
    """Kill channels, prune them, and return (difference, plan, pruned model)."""
    from keras_slim.pruning import plan, prune

    randomize_batchnorm(model, seed)
    kill_channels(model, fraction, seed)
    p = plan(model, threshold=1e-12, **plan_options)
    small = prune(model, p)
    return max_difference(model, small, random_inputs(model, seed=seed)), p, small

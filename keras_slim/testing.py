"""Helpers to prove pruning exact: make channels dead, compare outputs.

Used by the test suite and the stress benchmark; handy for users who add a
handler for their own layer and want to check it the same way.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from keras_slim import _keras
from keras_slim.errors import ArgumentError, ModelError


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


def kill_channels(model, fraction: float = 0.4, seed: int = 0, keep_beta: bool = False,
                  criterion: str = "bn_scale") -> int:
    """Zero gamma (and beta) of a random `fraction` of the removable channel classes.

    Every BN scaling factor of a chosen class is zeroed, so the class is dead
    everywhere it is coupled. With `keep_beta=True` only gamma is zeroed: the
    class then carries the constant act(beta), and is chosen among the classes
    whose readers can absorb that constant exactly (the others must stay).
    With a filter `criterion` ("l1", ...) the class's filters are zeroed
    instead (every layer creating the channel, and coupled depthwise taps),
    and their biases too unless `keep_beta` (then the class carries act(bias)).
    Returns how many classes were killed.
    """
    from keras_slim.planning import plan

    if criterion == "bn_scale_readers":
        raise ArgumentError(
            "kill_channels: criterion='bn_scale_readers' also removes channels that a zero "
            "gamma does not make dead (read raw by other layers), so killed channels prove "
            "nothing about it; compare its pruned model with the original whose removed "
            "filters and removed BN gammas are zeroed instead (tests/test_bn_readers.py)")
    filters = criterion != "bn_scale"
    shifted = [layer for layer in _keras.walk_layers(model)
               if (_keras.is_batch_norm(layer) and not filters)
               or (filters and any(_keras.weight_name(w) == "bias" for w in layer.weights))]
    shift = "bias" if filters else "beta"
    saved = {id(layer): [w for _, w in _keras.get_weights(layer)] for layer in shifted}
    if not keep_beta:  # which classes could go once dead: decide with every shift at 0
        for layer in shifted:
            _set(layer, lambda name, w: np.zeros_like(w) if name == shift else w)
    try:
        # (under a filter criterion a zeroed channel is a constant after any BN: no border folds)
        state = plan(model, 0.0, border_folds=not keep_beta and not filters,
                     criterion=criterion)._state
    finally:
        for layer in shifted:
            _keras.set_weights(layer, saved[id(layer)])
    frozen, unsafe, scored = state.coupling.root_sets()
    roots = sorted(r for r in scored if r not in frozen and r not in unsafe)
    # A channel selection's copy needs its source: a source goes only with its copies.
    root_of = state.coupling.root_of
    copies: dict[int, set] = {}
    for dep, need in state.coupling.requires:
        for a, b in zip(root_of[dep].tolist(), root_of[need].tolist()):
            if a != b:
                copies.setdefault(b, set()).add(a)
    # A layer keeps at least one channel (min_channels): its only class cannot go.
    for _, ids in state.coupling.produced:
        only = np.unique(root_of[ids])
        if len(only) == 1:
            roots = [r for r in roots if r != only[0]]
    removable = set(roots)
    rng = np.random.default_rng(seed)
    chosen: set = set()
    for r in roots:
        if rng.random() < fraction and copies.get(r, set()) <= removable:
            chosen |= {r} | copies.get(r, set())
    chosen = sorted(chosen)
    if filters:
        _zero_filters(model, state.coupling, set(chosen), keep_bias=keep_beta)
        return len(chosen)
    members = state.coupling.members(chosen)
    by_layer: dict[str, list[int]] = {}
    for r in chosen:
        for m in members[r]:
            by_layer.setdefault(m.layer, []).append(m.index)
    for layer in _keras.walk_layers(model):
        if layer.name in by_layer:
            idx = by_layer[layer.name]

            def kill(name, w, idx=idx):
                if name == "gamma" or (name == "beta" and not keep_beta):
                    w = w.copy()
                    w[idx] = 0.0
                return w
            _set(layer, kill)
    return len(chosen)


def _zero_filters(model, coupling, chosen: set, keep_bias: bool) -> None:
    """Zero the filter rows (as `Handler.filters` lays them out) of the chosen classes."""
    by_layer: dict[str, np.ndarray] = {}
    for name, ids, _ in coupling.filters:
        hit = np.isin(coupling.root_of[ids], list(chosen))
        if hit.any():
            by_layer[name] = np.nonzero(hit)[0]
    for layer in _keras.walk_layers(model):
        positions = by_layer.get(layer.name)
        if positions is None:
            continue
        depthwise = any(_keras.weight_name(w) == "depthwise_kernel" for w in layer.weights) \
            and not any(_keras.weight_name(w) == "pointwise_kernel" for w in layer.weights)
        depthwise = depthwise or type(layer).__name__.startswith("DepthwiseConv") \
            or getattr(layer, "groups", 1) > 1
        transpose = "Transpose" in type(layer).__name__

        def kill(name, w, positions=positions):
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                if depthwise and name != "pointwise_kernel":  # taps of output c*m+k
                    flat = w.reshape(w.shape[:-2] + (-1,)).copy()
                    flat[..., positions] = 0.0
                    return flat.reshape(w.shape)
                if name == "depthwise_kernel":
                    return w  # a separable conv's channels are its pointwise filters
                w = w.copy()
                if transpose:
                    w[..., positions, :] = 0.0
                else:
                    w[..., positions] = 0.0
                return w
            if name == "bias" and not keep_bias:
                w = w.copy()
                w[positions] = 0.0
            return w
        _set(layer, kill)


def _set(layer, fn) -> None:
    _keras.set_weights(layer, [fn(name, w) for name, w in _keras.get_weights(layer)])


def max_difference(a, b, inputs) -> float:
    """Largest absolute difference between two models' outputs on `inputs`."""
    ya = _keras.flatten(a(inputs, training=False))
    yb = _keras.flatten(b(inputs, training=False))
    if len(ya) != len(yb):
        raise AssertionError(f"models have {len(ya)} and {len(yb)} outputs")
    # convert_to_numpy, not np.asarray: a torch output that requires grad refuses __array__
    import keras

    as_np = keras.ops.convert_to_numpy
    return max(float(np.max(np.abs(as_np(u) - as_np(v)))) for u, v in zip(ya, yb))


def random_inputs(model, batch: int = 2, seed: int = 0, size: int = 8):
    """Random float inputs matching the model's input structure (None axes: `size`)."""
    rng = np.random.default_rng(seed)

    def make(t):
        shape = (batch,) + tuple(d if d is not None else size for d in t.shape[1:])
        return rng.normal(size=shape).astype("float32")

    if not _keras.is_graph_model(model):  # a subclassed model: the shape it was built with
        shape = _keras.build_input_shapes(model)
        if shape is None:
            raise ModelError(f"random_inputs: subclassed model {model.name!r} was never built; "
                             "call it on data once first")
        return make(_keras.KerasTensor(tuple(shape)))
    inputs = _keras.map_tensors(_keras.read_model(model).inputs, make)
    return inputs


def fresh_process_difference(model, inputs, folder, absent_modules: tuple = ()) -> float:
    """Save `model` as .keras in `folder`, reload it in a new Python process, compare outputs.

    Proves the file loads without the classes the model was built from: the
    new process imports only keras (and keras_slim's registered layers through
    the file), and fails if any of `absent_modules` got imported.
    """
    import os
    import subprocess
    import sys
    import textwrap

    path = os.path.join(str(folder), "reloaded.keras")
    model.save(path)
    np.save(os.path.join(str(folder), "x.npy"), np.asarray(inputs))
    np.save(os.path.join(str(folder), "y.npy"), np.asarray(model(inputs, training=False)))
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        m = keras.models.load_model({path!r})
        bad = [name for name in {list(absent_modules)!r} if name in sys.modules]
        assert not bad, f"loading needed {{bad}}"
        x = np.load({os.path.join(str(folder), 'x.npy')!r})
        y = np.load({os.path.join(str(folder), 'y.npy')!r})
        print(float(np.abs(np.asarray(m(x, training=False)) - y).max()))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=str(folder), env=env)
    if out.returncode != 0:
        raise AssertionError(f"reloading in a fresh process failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def random_model(seed: int, max_blocks: int = 6, constants: bool = False,
                 image_layers: bool = False):
    """A random Functional CNN from the layers keras_slim supports.

    Blocks: conv-BN-act ('same', ZeroPadding + 'valid', 1x1), depthwise-BN-act
    (multiplier 1 or 2), separable conv, residual Add / Multiply / Maximum of
    equal-width tensors, Concatenate, squeeze-excitation, a pre-activation BN
    on a shared tensor (channel selection), a nested sub-model, stride-1
    pooling, zero padding cropped back by indexing (`x[:, 1:-1, 1:-1]`), a
    bias-free conv with its own activation before a BN; with `image_layers=True`
    also Resizing up (bilinear, nearest, bicubic; sometimes a RandomFlip) and
    average-pooled back (a separate flag, so the other seeds draw the same graphs);
    activations include PReLU (random alpha) and LeakyReLU layers; heads:
    GAP -> Dense or Flatten -> Dense, sometimes more outputs.
    Spatial size stays fixed so any two tensors merge.

    With `constants=True` the activations include ones whose value at 0 is
    not 0 (sigmoid, softplus, hard_sigmoid), and one to three extra heads read
    a tensor through each kind of channel reader: Conv1D/2D/3D ('valid' and
    'same'), SeparableConv2D, DepthwiseConv2D with a multiplier,
    Conv2DTranspose (stride 1 and 2), Dense after Flatten or GAP.
    """
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    acts = ["relu", "swish", "tanh", "linear", "relu6"]
    if constants:
        acts += ["sigmoid", "softplus", "hard_sigmoid", "elu"]
    inp = keras.Input((6, 6, 3), name="x")
    pool = [inp]
    n = 0

    def name(kind):
        nonlocal n
        n += 1
        return f"{kind}{n}"

    def conv_bn(x, c, k=3):
        padding = "same"
        if k > 1 and rng.random() < 0.3:  # the keras.applications way to keep the size
            x = layers.ZeroPadding2D(k // 2, name=name("pad"))(x)
            padding = "valid"
        x = layers.Conv2D(c, k, padding=padding, use_bias=bool(rng.random() < 0.3),
                          name=name("conv"))(x)
        x = layers.BatchNormalization(name=name("bn"))(x)
        act = str(rng.choice(acts + ["prelu", "leaky"]))
        if act == "prelu":  # alpha * c for a negative constant channel
            alpha = keras.initializers.RandomUniform(0.05, 0.5, seed=int(rng.integers(1 << 30)))
            return layers.PReLU(alpha, shared_axes=[1, 2], name=name("prelu"))(x)
        if act == "leaky":
            return layers.LeakyReLU(0.2, name=name("leaky"))(x)
        return layers.Activation(act, name=name("act"))(x)

    def width(x):
        return int(x.shape[-1])

    pool.append(conv_bn(inp, int(rng.integers(3, 9))))
    for _ in range(int(rng.integers(2, max_blocks + 1))):
        kind = rng.choice(["conv", "dw", "sep", "merge", "concat", "se", "preact", "nested", "conv1",
                           "pool", "crop", "postact"] + (["resize"] if image_layers else []))
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
            y = layers.SeparableConv2D(int(rng.integers(2, 10)), 3, padding="same",
                                       use_bias=bool(rng.random() < 0.5), name=name("sep"))(x)
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
        elif kind == "pool":
            pool_cls = layers.AveragePooling2D if rng.random() < 0.5 else layers.MaxPooling2D
            y = pool_cls(3, strides=1, padding="same", name=name("pool"))(x)
        elif kind == "postact":  # a bias-free conv with its own activation, then BN
            y = layers.Conv2D(int(rng.integers(2, 10)), 1, use_bias=False,
                              activation=str(rng.choice(acts)), name=name("conv"))(x)
            y = layers.BatchNormalization(name=name("bn"))(y)
        elif kind == "resize":  # resampled up, pooled back (image layers in the network)
            interpolation = str(rng.choice(["bilinear", "nearest", "bicubic"]))
            y = layers.Resizing(12, 12, interpolation=interpolation, name=name("resize"))(x)
            if rng.random() < 0.5:
                y = layers.RandomFlip(name=name("flip"))(y)  # the identity at inference
            y = layers.AveragePooling2D(2, name=name("pool"))(y)
        elif kind == "crop":  # spatial indexing (a GetItem that is no channel slice)
            y = layers.ZeroPadding2D(1, name=name("pad"))(x)[:, 1:-1, 1:-1]
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
    if constants:
        for _ in range(int(rng.integers(1, 4))):
            x = pool[int(rng.integers(1, len(pool)))]
            outputs.append(_reader_head(x, str(rng.choice(READERS)), rng, name, layers))
    return keras.Model(inp, outputs if len(outputs) > 1 else outputs[0], name=f"random{seed}")


READERS = ("conv2d_valid", "conv2d_same", "conv1d_valid", "conv1d_same", "conv3d_valid",
           "conv3d_same", "separable_valid", "separable_same", "depthwise_valid",
           "transpose_s1", "transpose_s2", "flatten_dense", "gap_dense")


def _reader_head(x, kind: str, rng, name, layers):
    """An extra output that reads `x` (B, 6, 6, C) through one kind of channel reader."""
    c = int(x.shape[-1])
    f = int(rng.integers(2, 6))
    bias = bool(rng.random() < 0.5)  # a bias-free reader gets one from the fold
    if kind.startswith("conv1d"):
        y = layers.Reshape((36, c), name=name("seq"))(x)
        y = layers.Conv1D(f, 3, padding=kind.split("_")[1], use_bias=bias,
                          name=name("conv1d"))(y)
        return layers.GlobalAveragePooling1D(name=name("gap"))(y)
    if kind.startswith("conv3d"):
        y = layers.Reshape((6, 6, 1, c), name=name("vol"))(x)
        y = layers.Conv3D(f, (3, 3, 1), padding=kind.split("_")[1], use_bias=bias,
                          name=name("conv3d"))(y)
        return layers.GlobalAveragePooling3D(name=name("gap"))(y)
    if kind.startswith("conv2d"):
        y = layers.Conv2D(f, 3, padding=kind.split("_")[1], use_bias=bias, name=name("conv"))(x)
    elif kind.startswith("separable"):
        y = layers.SeparableConv2D(f, 3, padding=kind.split("_")[1],
                                   depth_multiplier=int(rng.integers(1, 3)), use_bias=bias,
                                   name=name("sep"))(x)
    elif kind == "depthwise_valid":
        y = layers.DepthwiseConv2D(3, depth_multiplier=2, name=name("dw"))(x)
        y = layers.Conv2D(f, 1, name=name("conv"))(y)
    elif kind.startswith("transpose"):
        y = layers.Conv2DTranspose(f, 3, strides=int(kind[-1]), name=name("convT"))(x)
    elif kind == "flatten_dense":
        flat = layers.Flatten(name=name("flatten"))(x)
        return layers.Dense(f, use_bias=bias, name=name("head"))(flat)
    else:
        return layers.Dense(f, name=name("head"))(layers.GlobalAveragePooling2D(name=name("gap"))(x))
    return layers.Flatten(name=name("flatten"))(y)


@dataclasses.dataclass
class Exactness:
    """What `exactness` found: output difference, the plan, the pruned model, classes killed."""

    difference: float
    plan: object
    model: object
    killed: int


def exactness(model, fraction: float = 0.4, seed: int = 0, constants: bool = False,
              input_size: int = 8, **plan_options) -> Exactness:
    """Kill channels, prune them, compare outputs (see `check_exact`).

    `input_size` replaces unknown (None) input axes for the comparison.
    """
    from keras_slim.pruning import plan, prune

    randomize_batchnorm(model, seed)
    killed = kill_channels(model, fraction, seed, keep_beta=constants,
                           criterion=plan_options.get("criterion", "bn_scale"))
    # only exact folds, so the comparison holds at the borders too (a dead channel
    # through an activation with act(0) != 0 is a constant channel as well)
    plan_options.setdefault("border_folds", False)
    p = plan(model, threshold=1e-12, **plan_options)
    small = prune(model, p)
    inputs = random_inputs(model, seed=seed, size=input_size)
    return Exactness(max_difference(model, small, inputs), p, small, killed)


def check_exact(model, fraction: float = 0.4, seed: int = 0, constants: bool = False,
                **plan_options) -> tuple:
    """Kill channels, prune them, and return (difference, plan, pruned model).

    `constants=False`: the killed channels get gamma = beta = 0 (dead).
    `constants=True`: only gamma = 0, so they carry the constant act(beta)
    (the case real sparsity training leaves); they are removed only where a
    reader folds the constant exactly, and the difference must still be at
    float tolerance. `border_folds` defaults to False (in both modes: a dead
    channel followed by sigmoid carries 0.5); pass `border_folds=True` to
    measure the 'same'-border error instead.
    """
    r = exactness(model, fraction, seed, constants, **plan_options)
    return r.difference, r.plan, r.model

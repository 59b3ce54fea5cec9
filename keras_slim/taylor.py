"""The "taylor" criterion: how much the loss would change if a filter were removed.

`plan(model, ratio, criterion="taylor", data=..., loss=...)`. What is
computed, per output channel c of every layer that creates channels (and
per coupled depthwise filter, as for "l1"):

    score_c = mean over batches b of | sum over the filter's weights w of w * dL_b/dw |

`sum(w * dL/dw)` is the first-order Taylor estimate of the change in the
loss when the filter is set to zero, which is exactly what pruning does
under a filter criterion (the channel then carries act(bias), folded into
its readers). This is the weight form of Molchanov et al. (2019,
"Importance Estimation for Neural Network Pruning"), the group estimate
(sum over the filter's weights, then the magnitude); it needs gradients
with respect to weights only, which every backend gives from the model's
own call (`keras_slim._gradients`), with no hooks on activations.
Taking |.| per batch before averaging, as Molchanov et al. (2017) do per
example, keeps scores from cancelling out on a trained model, whose
whole-data gradient is near zero. Torch-Pruning's TaylorImportance sums
|w * dw| over the weights instead; the signed sum is the estimate for
removing the whole filter at once. The scores are estimated loss changes,
which Molchanov et al. 2019 rank raw across layers; `normalize="auto"`
divides each layer's by their mean all the same, because raw scores cut
whole layers to a channel on CIFAR VGG (keras_slim.criteria says more).

The model runs in inference mode (BN with its moving statistics, no
dropout) and is not changed; the gradient flows through the BN that
follows a conv, so models with and without BN are scored alike. A zero
filter scores 0, so where the removed filters are zero the pruned model is
exact, as with "l1".

`data`: an iterable of `(x, y)` or `(x, y, sample_weight)` batches (a
`tf.data.Dataset`, a list, a generator, a `keras.utils.PyDataset`), of which
at most `MAX_BATCHES` are read, or one `(x, y)` pair of arrays, cut into
batches of `BATCH_SIZE`. `loss`: a `keras.losses.Loss`, a loss name
("sparse_categorical_crossentropy"), or `fn(y_true, y_pred)`; default: the
loss the model was compiled with.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import keras
import numpy as np

from keras_slim import _gradients, _keras, criteria
from keras_slim.errors import ArgumentError, ArgumentTypeError, ModelError
from keras_slim.handlers.conv import DepthwiseHandler
from keras_slim.handlers.dense import DenseHandler

MAX_BATCHES = 32  # batches read from an iterable (a repeated tf.data.Dataset never ends)
BATCH_SIZE = 32  # batch size for an (x, y) pair of arrays

# filter_terms results kept while `reusing_terms()` is active: sensitivity plans the
# same model on the same data once per group and ratio, and the gradients do not change
_REUSE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("taylor_reuse",
                                                                     default=None)


@contextlib.contextmanager
def reusing_terms():
    """Within the block, `filter_terms` of the same model, data and loss is computed once.

    Valid because planning never changes the model: the same weights on the
    same batches give the same gradients. Keyed by object identity, so a
    different (even equal) dataset is read again.
    """
    token = _REUSE.set({})
    try:
        yield
    finally:
        _REUSE.reset(token)


def check_arguments(criterion: str, data, loss, replay: bool) -> None:
    """Data and loss go with a data criterion and only with one."""
    if criteria.uses_data(criterion):
        if data is None and not replay:
            raise ArgumentError(
                f"criterion={criterion!r} scores channels from data: pass data= (an iterable "
                "of (x, y) batches, e.g. a tf.data.Dataset, or one (x, y) pair of arrays) and "
                "loss= (a keras loss or its name; default: the model's compiled loss), or use "
                "a criterion that needs none ('bn_scale', 'l1', 'l2', 'fpgm')")
        return
    given = [name for name, v in (("data", data), ("loss", loss)) if v is not None]
    if given:
        raise ArgumentError(f"{' and '.join(given)} given, but criterion={criterion!r} does "
                            "not use data; they are for criterion='taylor' (drop them, or set "
                            "criterion='taylor')")


def filter_terms(model, coupling, data, loss) -> list:
    """Per-batch first-order terms of every scored filter: [(layer, ids, (channels, batches))].

    The layout of `coupling.filters`, so that `criteria.filter_scores(...,
    "taylor", ...)` reduces and normalises them like any filter criterion.
    Without data (a saved plan replayed with `kept=`) every term is 0: the
    channels are given, nothing is ranked.
    """
    if data is None or not coupling.filters:
        return [(name, ids, np.zeros((len(ids), 1))) for name, ids, _ in coupling.filters]
    cache = _REUSE.get()
    key = (id(model), id(data), id(loss),
           tuple((name, tuple(ids)) for name, ids, _ in coupling.filters))
    if cache is not None and key in cache:
        return cache[key]
    terms = _filter_terms(model, coupling, data, loss)
    if cache is not None:
        cache[key] = terms
    return terms


def _filter_terms(model, coupling, data, loss) -> list:
    sources = _sources(coupling)
    loss_fn = _loss_function(model, loss)
    variables = list({id(v): v for v, _ in sources}.values())
    position = {id(v): i for i, v in enumerate(variables)}
    gradients = _gradients.LossGradients(model, variables, loss_fn)
    terms: list[list] = [[] for _ in sources]
    b = -1
    for b, batch in enumerate(_batches(data)):
        x, y, weight = batch
        try:
            value, grads = gradients(x, y, weight)
        except (ValueError, TypeError) as err:
            raise ArgumentError(f"criterion 'taylor': model {model.name!r} and its loss could "
                                f"not be run on data batch {b} ({type(err).__name__}: {err}); "
                                "data must yield (x, y) batches the model takes") from err
        if not np.isfinite(value):
            raise ModelError(f"criterion 'taylor': the loss of model {model.name!r} on data "
                             f"batch {b} is {value}; check the data, labels and loss")
        for i, ((var, layout), (_, _, rows)) in enumerate(zip(sources, coupling.filters)):
            g = layout(grads[position[id(var)]]).astype(np.float64)
            terms[i].append((np.asarray(rows, np.float64) * g).sum(axis=1))
    if b < 0:
        raise ArgumentError("criterion 'taylor': data yielded no batch; pass a non-empty "
                            "dataset or (x, y) arrays")
    return [(name, ids, np.stack(t, axis=1)) for (name, ids, _), t in zip(coupling.filters, terms)]


# ---------------------------------------------------------------- filters -> weights
def _sources(coupling) -> list:
    """(variable, layout) of each entry of `coupling.filters`: layout(weight) gives its rows."""
    graph = coupling.graph
    calls_by_name: dict[str, list] = {}
    for call in graph.calls:
        calls_by_name.setdefault(call.layer.name, []).append(call)
    cursor: dict[str, int] = {}
    out = []
    for name, ids, rows in coupling.filters:
        calls = calls_by_name.get(name, [])
        start = cursor.get(name, 0)
        found = None
        for j in list(range(start, len(calls))) + list(range(start)):  # call order first
            found = _match(coupling.handlers[calls[j].index], calls[j].layer, np.asarray(rows))
            if found is not None:
                cursor[name] = j + 1
                break
        if found is None:
            raise ModelError(
                f"criterion 'taylor': the filters scored for layer {name!r} are not rows of "
                "one of its weights, so their gradients cannot be read (a handler's "
                "score_filters must pass a reshaped kernel); rank this model with 'l1' instead")
        out.append(found)
    return out


def _match(handler, layer, rows: np.ndarray):
    """The first (variable, layout) of `layer` whose layout reproduces `rows` exactly."""
    n = rows.shape[0]
    for var, layout in _layouts(handler, layer, n):
        try:
            got = layout(np.asarray(var.numpy()))
        except ValueError:  # that reshape does not apply to this weight
            continue
        if got.shape == rows.shape and np.array_equal(got, rows):
            return var, layout
    return None


def _layouts(handler, layer, n: int) -> Iterator[tuple]:
    """Candidate (variable, weight -> rows): the handler's own layout first, so that a
    kernel with tied values (e.g. constant) is still read the way it was scored."""
    weights = {_keras.weight_name(w): w for w in layer.weights}
    if isinstance(handler, DenseHandler) and handler.kernel_name in weights:
        axis = handler.out_axis
        yield weights[handler.kernel_name], lambda a: np.moveaxis(a, axis, 0).reshape(n, -1)
    if isinstance(handler, DepthwiseHandler):
        for name in ("depthwise_kernel", "kernel"):
            if name in weights:
                yield weights[name], lambda a: a.reshape(-1, n).T
    for var in layer.weights:  # a user handler: any axis of length n of any weight
        for axis, size in enumerate(var.shape):
            if size == n:
                yield var, lambda a, axis=axis: np.moveaxis(a, axis, 0).reshape(n, -1)
        if int(np.prod(var.shape)) % max(n, 1) == 0:
            yield var, lambda a: a.reshape(-1, n).T


# ---------------------------------------------------------------- data and loss
def _loss_function(model, loss) -> Callable:
    """`fn(y_true, y_pred, sample_weight) -> scalar` from `loss` or the compiled loss."""
    given = loss
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ArgumentError(f"criterion 'taylor' needs a loss: model {model.name!r} is not "
                                "compiled with one; pass loss= (a keras loss, a name such as "
                                "'sparse_categorical_crossentropy', or fn(y_true, y_pred))")
    if isinstance(loss, (list, tuple, dict)):
        raise ArgumentError(f"criterion 'taylor': {'loss' if given is not None else 'the compiled loss'} "
                            f"is one per output ({type(loss).__name__}); pass loss= one "
                            "function fn(y_true, y_pred) of the whole output structure")
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError as err:
            raise ArgumentError(f"criterion 'taylor': loss={loss!r} is not a Keras loss name "
                                f"({err})") from err
    if not callable(loss):
        raise ArgumentTypeError(f"criterion 'taylor': loss must be a keras loss, its name or "
                                f"fn(y_true, y_pred), got {type(loss).__name__}")
    if isinstance(loss, keras.losses.Loss) or hasattr(loss, "reduction"):  # also tf_keras'
        return lambda y, pred, weight: loss(y, pred, sample_weight=weight)
    return lambda y, pred, weight: _mean(loss(y, pred), weight)


def _mean(values, weight):
    """A loss function's per-sample values, weighted and averaged (Keras' default reduction)."""
    values = keras.ops.convert_to_tensor(values)
    if weight is not None:
        weight = keras.ops.convert_to_tensor(weight, dtype=values.dtype)
        values = values * keras.ops.reshape(weight, (-1,) + (1,) * (len(values.shape) - 1))
    return keras.ops.mean(values)


def _batches(data) -> Iterator[tuple]:
    """(x, y, sample_weight or None) as NumPy, from an iterable of batches or one (x, y) pair."""
    if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[1], "shape"):
        n = int(data[1].shape[0])
        for start in range(0, n, BATCH_SIZE):
            yield tuple(None if part is None else keras.tree.map_structure(
                lambda a: np.asarray(a)[start:start + BATCH_SIZE], part) for part in
                (tuple(data) + (None,))[:3])
        return
    try:
        batches = iter(data)
    except TypeError:
        raise ArgumentTypeError(f"criterion 'taylor': data must be an iterable of (x, y) "
                                f"batches or an (x, y) pair of arrays, got "
                                f"{type(data).__name__}") from None
    for b, batch in enumerate(batches):
        if b == MAX_BATCHES:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ArgumentError(f"criterion 'taylor': data batch {b} is a "
                                f"{type(batch).__name__}, not (x, y) or (x, y, sample_weight); "
                                "the loss needs the targets")
        yield tuple(keras.tree.map_structure(np.asarray, part) for part in batch) + \
            ((None,) if len(batch) == 2 else ())

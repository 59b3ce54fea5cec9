"""The model's interface (named inputs/outputs) and the data fed to it.

Exports name every input and output after the Keras model (dict keys, else
the Input / output layer names) so the exported signature is stable and
multi-input models are fed by name, never by position.

Why one module over 400 lines: every exporter (TFLite, ONNX, QAT) checks the
converted file against Keras through the same interface object, so reading
the interface, normalising user data to it and comparing outputs (incl. the
second-size check of dynamic inputs) share its helpers; splitting them would
put one dataclass's logic in three files.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable

import keras
import numpy as np

from keras_slim import _keras

from keras_slim.errors import ArgumentError, ArgumentTypeError
from keras_slim.export.report import ExportError
from keras_slim.graph import REFERENCE_DIM, resolve_input_shapes

# A dynamic model is also verified at this size on every dynamic axis (at
# REFERENCE_DIM when the first check already ran at ALT_DIM), to prove the axes
# really resize. Both are multiples of 32, so stride-32 backbones take them.
ALT_DIM = 160
ALT_SAMPLES = 2

# Accepted forms of `sample_inputs`, `representative_data` and `labelled_data[0]`.
DATA_FORMS = (
    "a numpy array (single-input models), a list/tuple of arrays in model.inputs "
    "order, or a dict {input_name: array}; arrays carry a leading batch axis"
)


@dataclasses.dataclass
class ModelInterface:
    """Names and specs of a Functional/Sequential model's flat inputs and outputs."""

    model: Any
    input_names: list[str]
    input_shapes: list[tuple]  # Keras shapes, batch axis included (None = dynamic)
    input_dtypes: list[str]
    output_names: list[str]
    aliases: dict[str, int]  # every accepted name of an input -> its position

    @property
    def num_inputs(self) -> int:
        return len(self.input_names)

    @property
    def dynamic(self) -> bool:
        """True if some input has a None axis other than the batch axis."""
        return any(d is None for shape in self.input_shapes for d in shape[1:])


def fix_input_shapes(iface: ModelInterface, input_shape: Any) -> ModelInterface:
    """`iface` with its inputs' None non-batch axes set from `input_shape`.

    `input_shape` is as for `keras_slim.plan`: one shape without the batch
    axis, or a list with one per input. ValueError if a known axis differs.
    """
    if input_shape is None:
        return iface
    shapes, _ = resolve_input_shapes(iface.input_shapes, iface.input_names, input_shape,
                                     iface.model.name)
    return dataclasses.replace(iface, input_shapes=[
        (full[0],) + tuple(shape) for full, shape in zip(iface.input_shapes, shapes)])


def reference_shapes(iface: ModelInterface) -> list[tuple]:
    """Concrete input shapes without the batch axis: None spatial axes 224, other None 8."""
    shapes, _ = resolve_input_shapes(iface.input_shapes, iface.input_names, None,
                                     iface.model.name)
    return [tuple(8 if d is None else d for d in shape) for shape in shapes]


def describe_model(model: Any) -> ModelInterface:
    """Read the flat, uniquely named inputs/outputs of `model` (TypeError if no Model)."""
    if _keras.is_tf_keras(model):
        raise ArgumentTypeError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is a tf_keras (Keras 2) "
            "model; the exporters take Keras 3 models. Export it with tf_keras' own "
            "TFLiteConverter, or a quantization-aware one with "
            "keras_slim.export.qat.export_qat_tflite.")
    if not isinstance(model, keras.Model):
        raise ArgumentTypeError(
            f"Expected a keras.Model (Functional or Sequential), got {type(model).__name__}: "
            f"{model!r:.80}. Load or build the Keras 3 model first."
        )
    inputs = _keras.input_structure(model)
    try:
        flat_inputs = model.inputs if inputs is None else None
    except AttributeError:
        flat_inputs = None
    if inputs is None and not flat_inputs:
        raise ExportError(
            f"Model '{model.name}' ({type(model).__name__}) has no symbolic inputs, which a "
            "subclassed model never has. Wrap it in a Functional model first: "
            "`inp = keras.Input(shape); model = keras.Model(inp, model(inp))`."
        )
    in_pairs = keras.tree.flatten_with_path(inputs if inputs is not None else flat_inputs)
    out_struct = _keras.output_structure(model)
    out_pairs = keras.tree.flatten_with_path(out_struct if out_struct is not None else model.outputs)

    input_names = unique_names([_tensor_name(p, t) for p, t in in_pairs], "input")
    output_names = unique_names([_tensor_name(p, t) for p, t in out_pairs], "output")
    aliases: dict[str, int] = {}
    for i, (path, t) in enumerate(in_pairs):
        for alias in (input_names[i], _tensor_name(path, t), getattr(t, "name", None)):
            if alias:
                aliases.setdefault(alias, i)
    return ModelInterface(
        model=model,
        input_names=input_names,
        input_shapes=[tuple(t.shape) for _, t in in_pairs],
        input_dtypes=[str(t.dtype) for _, t in in_pairs],
        output_names=output_names,
        aliases=aliases,
    )


def _tensor_name(path: tuple, tensor: Any) -> str:
    if path and isinstance(path[-1], str):  # dict input/output: the key is the name
        return path[-1]
    return _keras.input_name(tensor) or getattr(tensor, "name", "") or ""


def unique_names(names: list[str], prefix: str) -> list[str]:
    """Valid identifiers (TF signature keys and ONNX names need them), made unique."""
    out: list[str] = []
    for i, name in enumerate(names):
        clean = re.sub(r"\W", "_", name) or f"{prefix}_{i}"
        if clean[0].isdigit():
            clean = f"{prefix}_{clean}"
        base, k = clean, 1
        while clean in out:
            clean, k = f"{base}_{k}", k + 1
        out.append(clean)
    return out


def call_model(model: Any, flat_inputs: list, training: bool = False) -> list:
    """Call a Functional/Sequential model on flat inputs; flat outputs back."""
    struct = _keras.input_structure(model)
    if struct is not None:
        x = keras.tree.pack_sequence_as(struct, list(flat_inputs))
    else:
        x = flat_inputs[0] if len(flat_inputs) == 1 else list(flat_inputs)
    return keras.tree.flatten(model(x, training=training))


def keras_outputs(model: Any, flat_inputs: list[np.ndarray], chunk: int = 64) -> list[np.ndarray]:
    """Reference outputs of the Keras model in inference mode, in chunks to bound memory."""
    n = len(flat_inputs[0])
    parts: list[list[np.ndarray]] = []
    for start in range(0, n, chunk):
        batch = [x[start:start + chunk] for x in flat_inputs]
        parts.append([keras.ops.convert_to_numpy(o) for o in call_model(model, batch)])
    return [np.concatenate(p, axis=0) for p in zip(*parts)]


# ------------------------------------------------------------------ input data
def as_flat_inputs(data: Any, iface: ModelInterface, what: str) -> list[np.ndarray]:
    """Normalise one batch in any accepted form to arrays in input order (ExportError)."""
    flat = _try_flat(data, iface)
    if isinstance(flat, str):
        raise ExportError(f"{what}: {flat}. Expected {DATA_FORMS}; the model's inputs are "
                          f"{_describe_inputs(iface)}.")
    return flat


def _try_flat(data: Any, iface: ModelInterface) -> list[np.ndarray] | str:
    """Arrays in input order with a batch axis, or a string saying why `data` does not fit."""
    if isinstance(data, dict):
        unknown = [k for k in data if k not in iface.aliases]
        if unknown:
            return f"unknown input name(s) {unknown}"
        items = {iface.aliases[k]: v for k, v in data.items()}
        if sorted(items) != list(range(iface.num_inputs)):
            missing = [iface.input_names[i] for i in range(iface.num_inputs) if i not in items]
            return f"missing input(s) {missing}"
        values = [items[i] for i in range(iface.num_inputs)]
    elif isinstance(data, (list, tuple)):
        values = list(data)
    else:
        values = [data]
    if len(values) != iface.num_inputs:
        return f"got {len(values)} array(s) for {iface.num_inputs} input(s)"
    flat = []
    for i, value in enumerate(values):
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as err:
            return f"input '{iface.input_names[i]}' is not array-like ({err})"
        shape = iface.input_shapes[i]
        if arr.ndim == len(shape) - 1:  # an unbatched sample
            arr = arr[None]
        if arr.ndim != len(shape) or any(
                s is not None and s != a for s, a in zip(shape[1:], arr.shape[1:])):
            return (f"input '{iface.input_names[i]}' has shape {arr.shape}, the model wants "
                    f"{shape}")
        flat.append(arr.astype(iface.input_dtypes[i], copy=False))
    if len({len(a) for a in flat}) != 1:
        return f"inputs have different batch sizes {[len(a) for a in flat]}"
    return flat


def _describe_inputs(iface: ModelInterface) -> str:
    return ", ".join(f"'{n}' {s} {d}" for n, s, d in
                     zip(iface.input_names, iface.input_shapes, iface.input_dtypes))


def _element_inputs(element: Any, iface: ModelInterface) -> list[np.ndarray]:
    """One element of a dataset/generator: x, or (x, y[, w]) as Keras' fit takes."""
    element = _to_numpy_structure(element)
    flat = _try_flat(element, iface)
    if isinstance(flat, str) and isinstance(element, (list, tuple)) and len(element) in (2, 3):
        second = _try_flat(element[0], iface)
        if not isinstance(second, str):
            return second
    if isinstance(flat, str):
        raise ExportError(f"representative_data element does not fit the model: {flat}. Each "
                          f"element must be x or (x, y), x being {DATA_FORMS}; the model's "
                          f"inputs are {_describe_inputs(iface)}.")
    return flat


def _to_numpy_structure(element: Any) -> Any:
    """tf.Tensors -> numpy inside dicts/lists/tuples (namedtuples become tuples)."""
    if isinstance(element, dict):
        return {k: _to_numpy_structure(v) for k, v in element.items()}
    if isinstance(element, (list, tuple)):
        items = [_to_numpy_structure(v) for v in element]
        return tuple(items) if isinstance(element, tuple) else items
    if hasattr(element, "numpy"):  # tf.Tensor (np.ndarray has no .numpy)
        return element.numpy()
    return element


def collect_samples(data: Any, iface: ModelInterface, limit: int, what: str) -> list[np.ndarray]:
    """Up to `limit` samples from arrays, a tf.data.Dataset, a generator or a callable.

    Returns arrays in input order, each with a leading axis of length <= limit.
    Generators are read once, so the result is reused for calibration and checks.
    """
    if limit < 1:
        raise ArgumentError(f"{what}: need at least one sample, limit={limit}")
    if isinstance(data, (np.ndarray, list, tuple, dict)) or _is_tensor(data):
        flat = as_flat_inputs(_to_numpy_structure(data), iface, what)
        return [a[:limit] for a in flat]
    iterable = _as_iterable(data, what)
    batches, count = [], 0
    for element in iterable:
        flat = _element_inputs(element, iface)
        batches.append(flat)
        count += len(flat[0])
        if count >= limit:
            break
    if not batches:
        raise ExportError(f"{what} yielded no samples.")
    return [np.concatenate(parts, axis=0)[:limit] for parts in zip(*batches)]


def _is_tensor(data: Any) -> bool:
    return hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "numpy")


def _as_iterable(data: Any, what: str) -> Iterable:
    if _is_dataset(data):
        return data.as_numpy_iterator()
    if hasattr(data, "__next__"):
        return data
    if callable(data):  # TFLiteConverter convention: a function returning a generator
        result = data()
        if hasattr(result, "__iter__"):
            return result
        raise ExportError(f"{what}: the callable returned {type(result).__name__}, not an "
                          "iterable of samples.")
    if hasattr(data, "__iter__"):
        return iter(data)
    raise ExportError(f"{what}: unsupported type {type(data).__name__}. Pass a tf.data.Dataset, "
                      f"{DATA_FORMS}, a generator, or a callable returning one.")


def _is_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def calibration_and_samples(iface: ModelInterface, representative_data: Any, sample_inputs: Any,
                            num_calibration: int, num_verify: int):
    """(calibration arrays or None, verification inputs): given samples, else the first
    calibration samples, else random inputs of the right shapes."""
    calibration = None
    if representative_data is not None:
        calibration = collect_samples(representative_data, iface, num_calibration,
                                      "representative_data")
    if sample_inputs is not None:
        samples = as_flat_inputs(sample_inputs, iface, "sample_inputs")
    elif calibration is not None:
        samples = [a[:num_verify] for a in calibration]
    else:
        samples = random_inputs(iface, num_verify)
    return calibration, samples


def random_inputs(iface: ModelInterface, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs in each input's shape.

    Dynamic axes take the reference size: 224 for each spatial axis (the size
    `keras_slim.plan` counts MACs at), 8 for any other.
    """
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in zip(reference_shapes(iface), iface.input_dtypes):
        full = (n,) + tuple(shape)
        if np.issubdtype(np.dtype(dtype), np.integer):
            out.append(rng.integers(0, 2, size=full).astype(dtype))  # safe ids for embeddings
        elif np.dtype(dtype) == np.bool_:
            out.append(rng.integers(0, 2, size=full).astype(bool))
        else:
            out.append(rng.uniform(-1.0, 1.0, size=full).astype(dtype))
    return out


def iter_batches(flat: list[np.ndarray], batch: int | None) -> Iterable[list[np.ndarray]]:
    """Split arrays into runtime batches (the whole set when the batch axis is dynamic)."""
    n = len(flat[0])
    step = batch or n
    for start in range(0, n, step):
        yield [a[start:start + step] for a in flat]


def run_batched(run: Callable[[list[np.ndarray]], list[np.ndarray]], flat: list[np.ndarray],
                batch: int | None) -> list[np.ndarray]:
    """Run all samples through an exported file whose batch axis may be static.

    A short last chunk is padded by repeating its last row (a static batch axis
    cannot take fewer rows) and the padding rows' outputs are dropped.
    """
    parts = []
    for chunk in iter_batches(flat, batch):
        n = len(chunk[0])
        if batch and n < batch:
            chunk = [np.concatenate([a, np.repeat(a[-1:], batch - n, axis=0)]) for a in chunk]
        parts.append([o[:n] for o in run(chunk)])
    return [np.concatenate(p, axis=0) for p in zip(*parts)]


# ------------------------------------------------------------------ comparisons
def output_errors(refs: list[np.ndarray], outs: list[np.ndarray]) -> tuple[float, float]:
    """(max |diff|, max over outputs of max|diff| / max(1, max|ref|)); inf on NaN/shape clash."""
    max_abs, max_rel = 0.0, 0.0
    for ref, out in zip(refs, outs):
        ref = np.asarray(ref, np.float64)
        out = np.asarray(out, np.float64)
        if ref.shape != out.shape:
            return float("inf"), float("inf")
        diff = np.abs(ref - out)
        err = float(diff.max()) if diff.size else 0.0
        if not np.isfinite(err):
            return float("inf"), float("inf")
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
        max_abs, max_rel = max(max_abs, err), max(max_rel, err / scale)
    return max_abs, max_rel


def labels_to_classes(y: Any) -> np.ndarray:
    """Integer class ids from integer labels (N,) / (N, 1) or one-hot / scores (N, C)."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return y.reshape(len(y), -1).argmax(axis=-1)
    return y.reshape(len(y)).astype(np.int64)


def top1_stats(ref: np.ndarray, out: np.ndarray, y: Any) -> tuple[float, float, float]:
    """(agreement of argmaxes, Keras accuracy, exported accuracy) for one output."""
    ref_cls = ref.reshape(len(ref), -1).argmax(axis=-1)
    out_cls = out.reshape(len(out), -1).argmax(axis=-1)
    labels = labels_to_classes(y)
    if len(labels) != len(ref_cls):
        raise ExportError(f"labelled_data has {len(ref_cls)} inputs but {len(labels)} labels.")
    return (float(np.mean(ref_cls == out_cls)), float(np.mean(ref_cls == labels)),
            float(np.mean(out_cls == labels)))


def verify(
    iface: ModelInterface,
    run: Callable[[list[np.ndarray]], list[np.ndarray]],
    batch: int | None,
    samples: list[np.ndarray],
) -> tuple[float, float]:
    """Run `samples` through the exported file (`run`) and Keras; return the errors."""
    refs = keras_outputs(iface.model, samples)
    return output_errors(refs, run_batched(run, samples, batch))


@dataclasses.dataclass
class Verification:
    """Errors of an exported file against Keras, and the input sizes it ran at."""

    max_abs_error: float
    max_rel_error: float
    shapes: list  # per check: the input shapes without the batch axis
    counts: list  # per check: number of samples
    note: str | None = None  # why a dynamic file was checked at one size only


def verify_sizes(
    iface: ModelInterface,
    run: Callable[[list[np.ndarray]], list[np.ndarray]],
    batch: int | None,
    samples: list[np.ndarray],
) -> Verification:
    """`verify` on `samples`; a file with dynamic axes is also run at a second size.

    The second size (ALT_DIM on every dynamic axis, REFERENCE_DIM if the samples
    already have ALT_DIM; the first samples cropped or tiled to it) proves the
    axes really resize. If Keras itself cannot run the model there, the check
    is skipped and `note` says why; if the exported file cannot, ExportError.
    """
    abs_err, rel_err = verify(iface, run, batch, samples)
    result = Verification(abs_err, rel_err, [_shapes_of(samples)], [len(samples[0])])
    if not iface.dynamic:
        return result
    other = [_resized(a[:ALT_SAMPLES], full) for a, full in zip(samples, iface.input_shapes)]
    other_shapes = _shapes_of(other)
    try:
        refs = keras_outputs(iface.model, other)
    except Exception as err:  # the model is not as size-agnostic as its Input says
        result.note = (f"not checked at {_fmt_shapes(other_shapes)}: Keras cannot run the model "
                       f"there ({type(err).__name__})")
        return result
    try:
        outs = run_batched(run, other, batch)
    except Exception as err:
        raise ExportError(
            f"The exported file has dynamic input axes {iface.input_shapes} but fails at "
            f"{_fmt_shapes(other_shapes)} ({type(err).__name__}: {str(err)[:500]}), where Keras "
            "runs. Export at a fixed size instead (export_tflite's input_shape=, or a model "
            "whose keras.Input has fixed sizes).") from err
    abs2, rel2 = output_errors(refs, outs)
    result.max_abs_error, result.max_rel_error = max(abs_err, abs2), max(rel_err, rel2)
    result.shapes.append(_shapes_of(other))
    result.counts.append(len(other[0]))
    return result


def _resized(x: np.ndarray, model_shape: tuple) -> np.ndarray:
    """`x` at the second size on each dynamic axis: cropped or tiled, so its values
    (pixels, token ids) stay those of the samples, in calibration range."""
    for axis, own in enumerate(model_shape[1:], start=1):
        if own is None:
            size = REFERENCE_DIM if x.shape[axis] == ALT_DIM else ALT_DIM
            x = np.take(x, np.arange(size) % x.shape[axis], axis=axis)
    return x


def _shapes_of(flat: list[np.ndarray]) -> list[tuple]:
    return [tuple(int(d) for d in a.shape[1:]) for a in flat]


def _fmt_shapes(shapes: list[tuple]) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


def labelled_check(
    iface: ModelInterface,
    run: Callable[[list[np.ndarray]], list[np.ndarray]],
    batch: int | None,
    labelled_data: Any,
    label_output: str | None,
) -> tuple[float, float, float]:
    """Top-1 agreement and both accuracies on `labelled_data=(x, y)`."""
    if not (isinstance(labelled_data, (tuple, list)) and len(labelled_data) == 2):
        raise ExportError("labelled_data must be a pair (x, y): x in the form "
                          f"{DATA_FORMS}, y integer labels (N,) or one-hot (N, C); got "
                          f"{type(labelled_data).__name__}.")
    x = as_flat_inputs(labelled_data[0], iface, "labelled_data x")
    if label_output is None:
        index = 0
    elif label_output in iface.output_names:
        index = iface.output_names.index(label_output)
    else:
        raise ExportError(f"label_output={label_output!r} is not an output; outputs are "
                          f"{iface.output_names}.")
    ref = keras_outputs(iface.model, x)[index]
    out = run_batched(run, x, batch)[index]
    return top1_stats(ref, out, labelled_data[1])


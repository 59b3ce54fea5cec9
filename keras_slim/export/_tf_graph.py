"""The traced inference function shared by the TFLite and ONNX exporters."""
from __future__ import annotations

from typing import Any, Callable

from keras_slim.export import _deps
from keras_slim.export._model_io import ModelInterface, call_model

ENDPOINT = "serving_default"


def serving_function(
    model: Any, iface: ModelInterface, batch_size: int | None, nchw_input: bool = False
) -> tuple[Callable, list]:
    """`fn(*inputs) -> {output_name: tensor}` and its named TensorSpecs.

    Named specs become the signature's input keys and a dict return names the
    outputs, so runtimes are fed by name. `nchw_input` transposes every input of
    rank >= 3 from channels-first to the channels-last layout Keras computes in.
    """
    tf = _deps.tensorflow()
    specs, perms = [], []
    for name, shape, dtype in zip(iface.input_names, iface.input_shapes, iface.input_dtypes):
        shape = (batch_size,) + tuple(shape[1:])
        perm = None
        if nchw_input and len(shape) >= 3:
            shape = (shape[0], shape[-1]) + shape[1:-1]
            perm = [0] + list(range(2, len(shape))) + [1]  # NC... -> N...C
        specs.append(tf.TensorSpec(shape, dtype, name=name))
        perms.append(perm)

    def serve(*args):
        args = [a if p is None else tf.transpose(a, p) for a, p in zip(args, perms)]
        return dict(zip(iface.output_names, call_model(model, args)))

    return serve, specs


def write_saved_model(model: Any, serve: Callable, specs: list, directory: str) -> None:
    """A SavedModel with one `serving_default` signature (Keras 3's ExportArchive)."""
    import keras

    _deps.keras_backend("Writing a TensorFlow SavedModel (TFLite export)", ("tensorflow", "jax"))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT, serve, input_signature=specs)
    archive.write_out(directory, verbose=False)

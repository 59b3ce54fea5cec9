"""Quantization-aware training (TFMOT) for slimmed models, and Keras 3 -> tf_keras.

TensorFlow Model Optimization (TFMOT 0.8) only works on tf_keras (Keras 2)
models, while keras_slim builds and prunes Keras 3 models. This package bridges
the two:

* `to_tf_keras(model)` rebuilds a Keras 3 Functional/Sequential model as an
  equivalent tf_keras model: each layer's config is translated to the tf_keras
  class of the same name, the graph is re-wired call by call and the weights
  are copied by name. (Loading a Keras 3 `.h5`/`.keras` file in tf_keras does
  not work, so no file round trip is involved.) Pruned models work too:
  `keras_slim.ChannelSelection` becomes a tf_keras layer doing the same slices (or `tf.gather`) on
  the last axis, registered as `keras_slim>ChannelSelection`.
* `quantize_aware(model)` converts (if needed) and annotates the model for
  TFMOT's default 8-bit scheme and returns the QAT model, ready to compile and
  fine-tune. Layers that TFMOT has no 8-bit config for but that LiteRT runs in
  int8 get one (see `quantize_aware`); anything else stays float, named in a
  warning.
* `export_qat_tflite(qat_model, path)` converts the fine-tuned QAT model to an
  int8 `.tflite` file (atomic write), runs it in LiteRT and compares it with
  the QAT model, returning a `keras_slim.ExportReport`.

Modules: `translate` (`to_tf_keras`, needs only tf_keras), `annotate`
(`quantize_aware`, TFMOT), `tflite` (`export_qat_tflite`), and `_imports`
(the lazy tf_keras/TFMOT imports and the process-global side effects TFMOT
has, which they undo).

QAT models are tf_keras models: compile and fit them with tf_keras optimizers
and losses (strings such as `"adam"` work), and load a saved one inside
`tfmot.quantization.keras.quantize_scope()`.
"""
from keras_slim.errors import TranslationError
from keras_slim.export.qat.annotate import quantize_aware
from keras_slim.export.qat.tflite import export_qat_tflite
from keras_slim.export.qat.translate import TRANSLATABLE_LAYERS, to_tf_keras

__all__ = ["to_tf_keras", "quantize_aware", "export_qat_tflite", "TranslationError",
           "TRANSLATABLE_LAYERS"]

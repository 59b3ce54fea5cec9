"""Compatibility module: quantization-aware training now lives in `keras_slim.export.qat`.

`from keras_slim.qat import to_tf_keras, quantize_aware, export_qat_tflite`
keeps working; new code imports them from `keras_slim.export.qat`.
"""
from keras_slim.export.qat import (  # noqa: F401
    TRANSLATABLE_LAYERS, TranslationError, export_qat_tflite, quantize_aware, to_tf_keras,
)

__all__ = ["to_tf_keras", "quantize_aware", "export_qat_tflite", "TranslationError",
           "TRANSLATABLE_LAYERS"]

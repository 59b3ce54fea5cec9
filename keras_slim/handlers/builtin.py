"""Default handlers for Keras's own layers and ops (imported on first lookup)."""
from __future__ import annotations

from keras import layers as L

from keras_slim.handlers import activations as act
from keras_slim.handlers import (conv, dense, merge, normalization, recurrent, selection, shape,
                                 split, weighted)
from keras_slim.handlers.barrier import RandomCropHandler
from keras_slim.handlers.registry import register_builtin, register_op
from keras_slim.layers import ChannelSelection, WeightedOp

_conv = conv.ConvHandler()
for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
    register_builtin(cls, _conv)
_transpose = conv.ConvTransposeHandler()
for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
    register_builtin(cls, _transpose)
_depthwise = conv.DepthwiseHandler()
for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
    register_builtin(cls, _depthwise)
_separable = conv.SeparableHandler()
for cls in (L.SeparableConv1D, L.SeparableConv2D):
    register_builtin(cls, _separable)
register_builtin(L.Dense, dense.DenseHandler())
_recurrent = recurrent.RecurrentHandler()
for cls in (L.SimpleRNN, L.GRU, L.LSTM, L.Bidirectional):
    register_builtin(cls, _recurrent)
register_builtin(L.Masking, recurrent.MaskingHandler())
register_builtin(L.BatchNormalization, normalization.BatchNormHandler())
register_builtin(L.GroupNormalization, normalization.GroupNormHandler())
register_builtin(L.UnitNormalization, normalization.UnitNormalizationHandler())
register_builtin(L.Normalization, act.NormalizationHandler())
register_builtin(ChannelSelection, selection.ChannelSelectionHandler())
register_builtin(WeightedOp, weighted.WeightedOpHandler())

# Element-wise merges.
for cls in (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum):
    register_builtin(cls, merge.MergeHandler(merge.ALL))
register_builtin(L.Multiply, merge.MergeHandler(merge.ANY))
register_builtin(L.Concatenate, merge.ConcatenateHandler())

# Element-wise layers: zero preservation is checked on a fresh copy.
_elementwise = act.ElementwiseHandler()
for cls in (L.Activation, L.ReLU, L.LeakyReLU, L.ELU):
    register_builtin(cls, _elementwise)
register_builtin(L.Softmax, act.SoftmaxHandler())
register_builtin(L.PReLU, act.PReLUHandler())
register_builtin(L.Rescaling, act.RescalingHandler())
_identity = act.ElementwiseHandler(always_zero_preserving=True)
for cls in (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
            L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
            L.Identity):
    register_builtin(cls, _identity)
register_builtin(L.Dropout, act.DropoutHandler())  # its noise_shape may name the channels
# Random geometric augmentation: identity at inference, where exactness is proven (in
# training, as Dropout's noise does, their fill values reach removed and folded channels)
for name in ("RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomShear",
             "RandomPerspective", "RandomElasticTransform", "RandomGaussianBlur", "RandomErasing"):
    if hasattr(L, name):  # newer Keras releases added most of them
        register_builtin(getattr(L, name), _identity)

# Layers that move values without mixing channels.
_pass = shape.PassThroughHandler()
for cls in (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
            L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
            L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
            L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.Cropping1D, L.Cropping2D, L.Cropping3D,
            L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.RepeatVector):
    register_builtin(cls, _pass)
_resample = shape.ResamplingHandler()
for cls in (L.Resizing, L.CenterCrop):
    register_builtin(cls, _resample)
register_builtin(L.RandomCrop, RandomCropHandler())  # Keras' inference shape differs
_zero_pad = shape.ZeroPaddingHandler()
for cls in (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D):
    register_builtin(cls, _zero_pad)
register_builtin(L.Flatten, shape.FlattenHandler())
register_builtin(L.Reshape, shape.ReshapeHandler())
register_builtin(L.Permute, shape.PermuteHandler())

# keras.ops nodes that show up in functional graphs (x + 3.0, x * s, ops.relu(x)).
for name in ("Add", "Subtract", "Maximum", "Minimum", "Divide", "TrueDivide"):
    register_op(name, merge.ScalarOpHandler(merge.ALL))
register_op("Multiply", merge.ScalarOpHandler(merge.ANY))
for name in ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Tanh",
             "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign", "Abs", "Negative",
             "Square", "Exp", "Log", "Sqrt", "Mish", "Celu", "Absolute",
             "HardShrink", "HardTanh", "LogSigmoid", "SoftShrink", "SparsePlus", "SparseSigmoid",
             "Squareplus", "TanhShrink", "Threshold", "Clip", "Cast",
             "ReLU"):  # keras.activations.relu(x, ...) records keras.src.activations' ReLU op
    register_op(name, _elementwise)
_reduce = shape.ReduceHandler()
for name in ("Mean", "Max", "Min", "Sum"):
    register_op(name, _reduce)
register_op("Any", shape.AnyHandler())  # Masking's mask: any(x != mask_value, axis=-1)
# x != 0 keeps a zero channel zero (False); so does a != b of two zero channels (ALL)
register_op("NotEqual", merge.ScalarOpHandler(merge.ALL))
register_op("GetItem", split.GetItemHandler())
register_op("Split", split.SplitHandler())
register_op("Concatenate", merge.ConcatenateHandler())  # ops.concatenate([...], axis=-1)
register_op("Pad", shape.PadHandler())  # ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
for name in ("MaxPool", "AveragePool"):  # ops.max_pool / ops.average_pool
    register_op(name, _pass)

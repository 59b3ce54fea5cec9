"""How much of keras-hub's CNNs keras_slim can prune, exactly, and how fast.

    python benchmarks/realworld_coverage.py [--repeats 3] [--only NAME ...] [--no-tflite]

Every CNN backbone and vision task model keras-hub 0.32 builds offline (no preset
downloads: the configs come from keras-hub's own timm converters, or from small
constructor configs like keras-hub's tests use), random weights. Per model, in one
run, side by side:

* BN layers / BN channels: every BatchNormalization reached by
  `model._flatten_layers(recursive=True)` (inside keras-hub's custom layers too).
* found vs possible: `plan(model, 0.5).prunable_channels` against all BN channels
  less those that reach a model output unchanged through stock layers (they can
  never go). An upper bound: an output that comes out of a custom layer is not
  walked, and a BN a custom layer builds but never calls (RetinaNet FPN's output
  norms above the backbone's levels) still counts; "keras_slim scores only" names those.
* barriers: `plan.barriers` (layer, reason) and the warnings `plan` emits.
* exactness: `keras_slim.testing.exactness(model, 0.5, seed=0, input_size=S)` with
  dead channels (gamma = beta = 0) and with constant ones (`constants=True`,
  gamma = 0, beta != 0): max output difference (< 1e-4 is exact), channel classes
  killed, classes the plan removes (coverage = removed / killed).
* prune time: median of `prune(model, 0.5)` vs median of `keras.models.clone_model`
  (same run; clone_model errors are reported).
* TFLite: `export_tflite(pruned, path, input_shape=(S, S, 3))`, report.verified.

Writes benchmarks/results/realworld_coverage.{json,md}. Errors in one model are
recorded and the next model runs.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import testing  # noqa: E402
from _results import save_results  # noqa: E402

log = logging.getLogger("realworld_coverage")

RATIO = 0.5
EXACT_TOL = 1e-4
COVERAGE_GOAL = 0.9
SLOW_PRUNE = 2.0  # prune / clone_model above this is "slow" (benchmarks/prune_speed.py's goal)


# --------------------------------------------------------------------------- models
def _hub():
    import keras_hub
    return keras_hub


def _timm(module, arch, **override):
    from keras_hub.src.utils import timm
    converter = getattr(__import__(timm.__name__ + "." + module, fromlist=["x"]), "convert_backbone_config")
    return dict(converter({"architecture": arch}), **override)


# ResNet for the task models keras-hub's tests build on (deeplab_v3 / retinanet tests).
SMALL_RESNET = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                    stackwise_num_filters=[64, 64, 64], stackwise_num_blocks=[2, 2, 2],
                    stackwise_num_strides=[1, 2, 2], use_pre_activation=False)


def resnet18():
    return _hub().models.ResNetBackbone(**_timm("convert_resnet", "resnet18"))


def resnetv2_50():
    return _hub().models.ResNetBackbone(**_timm("convert_resnet", "resnetv2_50"))


def mobilenetv3_small_050():
    return _hub().models.MobileNetBackbone(**_timm("convert_mobilenet", "mobilenetv3_small_050"))


def efficientnet_b0():
    return _hub().models.EfficientNetBackbone(**_timm("convert_efficientnet", "efficientnet_b0"))


def densenet121():
    return _hub().models.DenseNetBackbone(**_timm("convert_densenet", "densenet121"))


def cspresnet50():
    return _hub().models.CSPNetBackbone(**_timm("convert_cspnet", "cspresnet50"))


def hgnetv2_b0():
    return _hub().models.HGNetV2Backbone(**_timm("convert_hgnetv2", "hgnetv2_b0"))


def vgg11():
    return _hub().models.VGGBackbone(**_timm("convert_vgg", "vgg11"))


def xception_small():
    # keras-hub's XceptionBackbone docstring config
    return _hub().models.XceptionBackbone(stackwise_conv_filters=[[32, 64], [64, 128], [256, 256]],
                                          stackwise_pooling=[True, True, False])


def mobilenetv5_small(norm_layer="batch_norm"):
    # keras-hub's mobilenetv5_backbone_test config (the timm "mobilenetv5_300m" is a
    # 300M-parameter RMSNorm net with no BN); norm_layer is a constructor arg
    kw = dict(stackwise_block_types=[["er"], ["uir", "uir"]], stackwise_num_blocks=[1, 2],
              stackwise_num_filters=[[24], [48, 48]], stackwise_strides=[[2], [2, 1]],
              stackwise_act_layers=[["relu"], ["relu", "relu"]],
              stackwise_exp_ratios=[[4.0], [6.0, 6.0]], stackwise_se_ratios=[[0.0], [0.0, 0.0]],
              stackwise_dw_kernel_sizes=[[0], [5, 5]], stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
              stackwise_dw_end_kernel_sizes=[[0], [0, 0]], stackwise_exp_kernel_sizes=[[3], [0, 0]],
              stackwise_pw_kernel_sizes=[[1], [0, 0]], stackwise_num_heads=[[0], [0, 0]],
              stackwise_key_dims=[[0], [0, 0]], stackwise_value_dims=[[0], [0, 0]],
              stackwise_kv_strides=[[0], [0, 0]], stackwise_use_cpe=[[False], [False, False]],
              image_shape=(64, 64, 3), stem_size=16, use_msfa=False, norm_layer=norm_layer)
    return _hub().models.MobileNetV5Backbone(**kw)


def mit_b0_small():
    # keras-hub's SegFormerBackbone docstring MiT (LayerNorm transformer: no BN)
    return _hub().models.MiTBackbone(
        image_shape=(64, 64, 3), num_layers=2, hidden_dims=[32, 64], layerwise_depths=[2, 2],
        layerwise_num_heads=[1, 2], layerwise_sr_ratios=[8, 4], layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2], max_drop_path_rate=0.1)


def deeplab_v3_backbone():
    hub = _hub()
    enc = hub.models.ResNetBackbone(block_type="basic_block", **SMALL_RESNET)
    return hub.models.DeepLabV3Backbone(image_encoder=enc, low_level_feature_key="P2",
                                        spatial_pyramid_pooling_key="P4",
                                        dilation_rates=[6, 12, 18], upsampling_size=4)


def retinanet_backbone():
    hub = _hub()
    enc = hub.models.ResNetBackbone(block_type="bottleneck_block", **SMALL_RESNET)
    return hub.models.RetinaNetBackbone(image_encoder=enc, min_level=3, max_level=4, use_p5=False,
                                        use_fpn_batch_norm=True)


def basnet_backbone():
    hub = _hub()
    enc = hub.models.ResNetBackbone(**_timm("convert_resnet", "resnet18"))
    # projection_filters must equal the encoder's first width (64); its decoder is 8x that
    return hub.models.BASNetBackbone(image_encoder=enc, num_classes=1)


def segformer_backbone():
    return _hub().models.SegFormerBackbone(image_encoder=mit_b0_small(), projection_filters=64)


def dfine_backbone():
    # keras-hub's d_fine_object_detector_test config (anchors fixed at 32x32)
    hub = _hub()
    enc = hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False], depths=[1, 1],
        hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=True, hidden_act="relu",
        image_shape=(None, None, 3), out_features=["stage1", "stage2"], data_format="channels_last")
    return hub.models.DFineBackbone(
        backbone=enc, decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=10,
        num_labels=4, hidden_dim=16, learn_initial_query=False, num_queries=10,
        anchor_image_size=(32, 32), feat_strides=[4, 8], num_feature_levels=2,
        encoder_in_channels=[16, 32], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5,
        eval_idx=-1, num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
        decoder_method="default", decoder_n_points=[2, 2], lqe_hidden_dim=16, num_lqe_layers=1,
        out_features=["stage1", "stage2"], image_shape=(None, None, 3), data_format="channels_last",
        seed=0)


# task models
def resnet18_classifier():
    return _hub().models.ResNetImageClassifier(backbone=resnet18(), num_classes=5)


def mobilenetv3_classifier():
    return _hub().models.MobileNetImageClassifier(backbone=mobilenetv3_small_050(), num_classes=5)


# The classifiers below add a head to a backbone measured at full size above; their
# backbones are made shallower (constructor args) to keep the run short.
def efficientnet_lite0_classifier():
    # lite0 (no squeeze-excite) next to the b0 backbone row, which has it
    hub = _hub()
    enc = hub.models.EfficientNetBackbone(**_timm("convert_efficientnet", "efficientnet_lite0",
                                                  stackwise_num_repeats=[1] * 7))
    return hub.models.EfficientNetImageClassifier(backbone=enc, num_classes=5)


def densenet121_classifier():
    hub = _hub()
    enc = hub.models.DenseNetBackbone(**_timm("convert_densenet", "densenet121",
                                              stackwise_num_repeats=[2, 2, 2, 2]))
    return hub.models.DenseNetImageClassifier(backbone=enc, num_classes=5)


def cspresnet50_classifier():
    hub = _hub()
    enc = hub.models.CSPNetBackbone(**_timm("convert_cspnet", "cspresnet50", stackwise_depth=[1, 1, 1, 1]))
    return hub.models.CSPNetImageClassifier(backbone=enc, num_classes=5)


def hgnetv2_b0_classifier():
    # preprocessor has no default in HGNetV2ImageClassifier
    return _hub().models.HGNetV2ImageClassifier(backbone=hgnetv2_b0(), num_classes=5, preprocessor=None)


def xception_classifier():
    return _hub().models.XceptionImageClassifier(backbone=xception_small(), num_classes=5)


def vgg11_classifier():
    return _hub().models.VGGImageClassifier(backbone=vgg11(), num_classes=5)


def deeplab_v3_segmenter():
    return _hub().models.DeepLabV3ImageSegmenter(backbone=deeplab_v3_backbone(), num_classes=2)


def retinanet_detector():
    hub = _hub()
    from keras_hub.src.layers.modeling.anchor_generator import AnchorGenerator
    anchors = AnchorGenerator(bounding_box_format="yxyx", min_level=3, max_level=4, num_scales=3,
                              aspect_ratios=[0.5, 1.0, 2.0], anchor_size=4)
    return hub.models.RetinaNetObjectDetector(backbone=retinanet_backbone(), anchor_generator=anchors,
                                              num_classes=4, use_prediction_head_norm=True)


def basnet_segmenter():
    return _hub().models.BASNetImageSegmenter(backbone=basnet_backbone())


def segformer_segmenter():
    return _hub().models.SegFormerImageSegmenter(backbone=segformer_backbone(), num_classes=3)


def dfine_detector():
    return _hub().models.DFineObjectDetector(backbone=dfine_backbone(), num_classes=4)


# name -> (builder, input size S, kind, how it is configured)
MODELS = {
    "ResNet18 (v1)": (resnet18, 64, "backbone", "timm resnet18"),
    "ResNetV2-50": (resnetv2_50, 64, "backbone", "timm resnetv2_50"),
    "MobileNetV3-small-050": (mobilenetv3_small_050, 64, "backbone", "timm mobilenetv3_small_050"),
    "EfficientNet-B0": (efficientnet_b0, 64, "backbone", "timm efficientnet_b0"),
    "DenseNet121": (densenet121, 64, "backbone", "timm densenet121"),
    "CSPResNet50": (cspresnet50, 64, "backbone", "timm cspresnet50"),
    "HGNetV2-B0": (hgnetv2_b0, 64, "backbone", "timm hgnetv2_b0"),
    "VGG11": (vgg11, 64, "backbone", "timm vgg11"),
    "Xception (small)": (xception_small, 64, "backbone", "docstring config [[32,64],[64,128],[256,256]]"),
    "MobileNetV5 (small, BN)": (mobilenetv5_small, 64, "backbone",
                                "keras-hub test config, norm_layer='batch_norm'"),
    "MobileNetV5 (small, RMSNorm)": (lambda: mobilenetv5_small("rms_norm"), 64, "backbone",
                                     "keras-hub test config, default norm_layer='rms_norm'"),
    "MiT (small)": (mit_b0_small, 64, "backbone", "2 stages, hidden_dims [32,64]"),
    "DeepLabV3 backbone": (deeplab_v3_backbone, 64, "backbone",
                           "on ResNet basic [64,64,64]x2 (keras-hub test), P2+P4, rates 6/12/18"),
    "RetinaNet backbone (FPN+BN)": (retinanet_backbone, 64, "backbone",
                                    "on ResNet bottleneck [64,64,64]x2, P3-P4, use_fpn_batch_norm"),
    "SegFormer backbone": (segformer_backbone, 64, "backbone", "on MiT (small), projection 64"),
    "D-FINE backbone": (dfine_backbone, 32, "backbone", "keras-hub test config on HGNetV2 (tiny)"),
    "ResNetImageClassifier": (resnet18_classifier, 64, "task", "resnet18, 5 classes"),
    "MobileNetImageClassifier": (mobilenetv3_classifier, 64, "task", "mobilenetv3_small_050, 5 classes"),
    "EfficientNetImageClassifier": (efficientnet_lite0_classifier, 64, "task",
                                    "efficientnet_lite0 (no SE, relu6) with stackwise_num_repeats=[1]*7, "
                                    "5 classes"),
    "DenseNetImageClassifier": (densenet121_classifier, 64, "task",
                                "densenet121 with stackwise_num_repeats=[2,2,2,2], 5 classes"),
    "CSPNetImageClassifier": (cspresnet50_classifier, 64, "task",
                              "cspresnet50 with stackwise_depth=[1,1,1,1], 5 classes"),
    "HGNetV2ImageClassifier": (hgnetv2_b0_classifier, 64, "task", "hgnetv2_b0, 5 classes"),
    "XceptionImageClassifier": (xception_classifier, 64, "task", "Xception (small), 5 classes"),
    "VGGImageClassifier": (vgg11_classifier, 64, "task", "vgg11, 5 classes"),
    "DeepLabV3ImageSegmenter": (deeplab_v3_segmenter, 64, "task", "DeepLabV3 backbone, 2 classes"),
    "RetinaNetObjectDetector": (retinanet_detector, 64, "task", "RetinaNet backbone, 4 classes, head norm"),
    "BASNetImageSegmenter": (basnet_segmenter, 64, "task",
                             "BASNetBackbone on timm resnet18 (keras-hub test config); the task is "
                             "the backbone's graph with its refine_out output only"),
    "SegFormerImageSegmenter": (segformer_segmenter, 64, "task", "SegFormer backbone, 3 classes"),
    "DFineObjectDetector": (dfine_detector, 32, "task", "D-FINE backbone, 4 classes"),
}

# keras-hub vision models not in the table, and why.
NOT_BUILT = {
    "MobileNetV5 timm mobilenetv5_300m": "the only timm config: ~300M parameters and RMSNorm "
                                         "(no BN); the small test config above covers its blocks",
    "ViT, DeiT, DINOV2, DINOV3, Swin, ViTDet, SigLIP/CLIP vision, SAM, SAM3, DepthAnything (DINOv2), "
    "VideoPrism, PARSeq": "transformers with LayerNorm, no BatchNormalization: nothing for "
                          "Network Slimming to score (not CNNs)",
    "Stable Diffusion 3 / Flux VAEs": "GroupNorm, no BN, and part of text-to-image pipelines",
    "BASNetBackbone (own row)": "measured as BASNetImageSegmenter (the same graph, one output); "
                                "its 98M-parameter decoder (8 x projection_filters, which must equal "
                                "the encoder's first width, 64) costs 90 s a row",
    "CSPNet cspdarknet53 / darknet53 / cspresnext50, EfficientNet b1-b5/lite/el, DenseNet169/201, "
    "ResNet34+, MobileNetV3 small_100/large, VGG13+, HGNetV2 b1+": "larger variants of the configs "
    "above (the smallest of each converter is measured; cspresnext50 adds groups=32 convs)",
}


# --------------------------------------------------------------------------- measuring
def first_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's type and message on one line (keras' multi-line messages joined;
    serialized lambdas, long base64 strings, shortened)."""
    text = re.sub(r"[A-Za-z0-9+/=]{40,}(\\n[A-Za-z0-9+/=]+)*", "<base64>", str(exc))
    text = " ".join(f"{type(exc).__name__}: {text}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def bn_layers(model):
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def bn_census(model):
    bns = bn_layers(model)
    return len(bns), sum(int(b.moving_mean.shape[0]) for b in bns)


# Stock layers a channel passes through unchanged (same channel, same position): a BN
# whose output reaches a model output through these only can never be removed.
_PASS = tuple(getattr(keras.layers, n) for n in (
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "BatchNormalization", "Identity", "Resizing", "Rescaling") if hasattr(keras.layers, n))


def output_bound_bn_channels(model) -> int:
    """BN channels that reach a model output through channel-preserving stock layers only.

    Walks the Keras graph back from the outputs (into nested Functional models); it
    stops at anything else (conv, dense, custom layers, keras.ops nodes), so it can
    miss some (then "possible" is still an upper bound). Independent of keras_slim.
    """
    seen, bound, stack = set(), {}, list(keras.tree.flatten(model.outputs))
    outer = {}  # id(inner model input) -> the outer tensor fed to it
    while stack:
        t = stack.pop()
        while id(t) in outer:
            t = outer[id(t)]
        if id(t) in seen:
            continue
        seen.add(id(t))
        history = getattr(t, "_keras_history", None)
        if history is None:
            continue
        op, node_index, tensor_index = history
        node = op._inbound_nodes[node_index]
        if isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth"):  # nested Functional
            for inner, fed in zip(keras.tree.flatten(op.inputs), node.input_tensors):
                outer[id(inner)] = fed
            stack.append(keras.tree.flatten(op.outputs)[tensor_index])
            continue
        if isinstance(op, keras.layers.BatchNormalization):
            bound[id(op)] = int(op.moving_mean.shape[0])
        if isinstance(op, _PASS):
            stack.extend(node.input_tensors)
    return sum(bound.values())


def found_bn_channels(p):
    """(BN channels in the plan's prunable classes, BN channels keras_slim scored, scored names).

    `prunable_channels` counts coupled classes (a residual group is one); this counts
    their BN channels, comparable with the census. Reads the plan's private state (as
    keras_slim.testing.kill_channels does); None if that changes.
    """
    try:
        c = p._state.coupling
        frozen, unsafe, scored = c.root_sets()
        prunable = {r for r in scored if r not in frozen and r not in unsafe}
        found = seen = 0
        names = set()
        for name, ids, _gammas in c.scored:
            roots = c.root_of[ids].tolist()
            seen += len(roots)
            found += sum(r in prunable for r in roots)
            names.add(str(name).split("/")[-1])
        return found, seen, names
    except Exception:  # noqa: BLE001
        return None, None, None


def measure(row, build, size, repeats, tflite=True):
    """Fill `row`; row["stage"] says how far it got if something raises."""
    row["stage"] = "build"
    t = time.perf_counter()
    try:
        model = build()
    except Exception as e:  # noqa: BLE001
        row["build_error"] = first_line(e)
        row["traceback"] = traceback.format_exc()[-3000:]
        return row
    row["build_s"] = round(time.perf_counter() - t, 2)
    row["stage"] = "census"
    row["params"] = int(model.count_params())
    row["bn_layers"], row["bn_channels"] = bn_census(model)
    row["output_bound_bn_channels"] = output_bound_bn_channels(model)
    row["possible"] = row["bn_channels"] - row["output_bound_bn_channels"]

    # plan on the model as built (keras-hub's init: gamma 1, beta 0): warnings and
    # keras_slim log records captured
    row["stage"] = "plan"
    records = _Records()
    slim_log = logging.getLogger("keras_slim")
    slim_log.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = time.perf_counter()
            try:
                p = keras_slim.plan(model, RATIO)
            except Exception as e:  # noqa: BLE001
                row["plan_error"] = first_line(e)
                row["traceback"] = traceback.format_exc()[-3000:]
                return row
            row["plan_s"] = round(time.perf_counter() - t, 3)
    finally:
        slim_log.removeHandler(records)
    row["prunable"] = int(p.prunable_channels)  # coupled classes
    row["found"], row["scored_bn_channels"], scored = found_bn_channels(p)  # BN channels
    if scored is not None:
        row["unscored_bn"] = [f"{b.name} ({int(b.moving_mean.shape[0])})" for b in bn_layers(model)
                              if b.name not in scored]
    row["found_share"] = (round(row["found"] / row["possible"], 3)
                          if row["possible"] and row["found"] is not None else None)
    row["barriers"] = [[str(n), str(r)] for n, r in p.barriers]
    row["warnings"] = sorted({str(w.message)[:1000] for w in caught} | set(records.messages))

    # the same with random BN (gamma, beta != 0, statistics): what a trained net has;
    # constant channels act(beta) go only where a reader folds them
    testing.randomize_batchnorm(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        p = keras_slim.plan(model, RATIO)
        row["plan_random_bn_s"] = round(time.perf_counter() - t, 3)
    row["prunable_random_bn"] = int(p.prunable_channels)
    row["found_random_bn"], _, _ = found_bn_channels(p)
    row["removed_at_0.5"] = int(p.removed_channels)
    row["params_after"] = int(p.params_after)
    del p

    row["stage"] = "prune"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            row["prune_s"], pruned = timed(lambda: keras_slim.prune(model, RATIO), repeats)
            row["prune_s"] = round(row["prune_s"], 3)
        except Exception as e:  # noqa: BLE001
            row["prune_error"] = first_line(e)
            row["prune_traceback"] = traceback.format_exc()[-3000:]
            pruned = None
        try:
            row["clone_s"], _ = timed(lambda: keras.models.clone_model(model), repeats)
            row["clone_s"] = round(row["clone_s"], 3)
        except Exception as e:  # noqa: BLE001
            row["clone_error"] = first_line(e)
    if "prune_s" in row and "clone_s" in row:
        row["prune_over_clone"] = round(row["prune_s"] / row["clone_s"], 2)

    if tflite and pruned is not None:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            try:
                rep = keras_slim.export_tflite(pruned, os.path.join(tmp, "m.tflite"),
                                               input_shape=(size, size, 3))
                row["tflite_verified"] = bool(rep.verified)
                row["tflite_max_abs_error"] = rep.max_abs_error
            except Exception as e:  # noqa: BLE001
                row["tflite_verified"] = False
                row["tflite_error"] = first_line(e)
            row["tflite_s"] = round(time.perf_counter() - t, 1)
    del pruned

    row["stage"] = "exactness"
    for mode, constants in (("zero", False), ("const", True)):
        if row["prunable"] == 0 and "prune_error" in row:
            row[f"{mode}_skipped"] = "nothing prunable and prune(model, 0.5) failed"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                r = testing.exactness(model, RATIO, seed=0, constants=constants, input_size=size)
                row[f"{mode}_difference"] = float(r.difference)
                row[f"{mode}_killed"] = int(r.killed)
                row[f"{mode}_removed"] = int(r.plan.removed_channels)
                row[f"{mode}_coverage"] = (round(r.plan.removed_channels / r.killed, 3)
                                           if r.killed else None)
                del r
            except Exception as e:  # noqa: BLE001
                row[f"{mode}_error"] = first_line(e)
                row[f"{mode}_traceback"] = traceback.format_exc()[-3000:]
    row.pop("stage")
    return row


def barrier_groups(barriers) -> list:
    """[(reason with the layer's name as <layer>, [layer names])], first seen first."""
    groups: dict = {}
    for n, reason in barriers:
        key = reason.replace(repr(n), "<layer>")  # the name only where quoted
        groups.setdefault(key, []).append(n)
    return list(groups.items())


def _names(names, most=4):
    shown = ", ".join(f"`{n}`" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def shortfalls(row) -> list:
    """Plain reasons a row falls short (empty: all good)."""
    out = []
    if "build_error" in row:
        return ["cannot build: " + row["build_error"]]
    if not row.get("bn_channels"):
        return ["no BatchNormalization, nothing for Network Slimming to score"
                + (f" (plan: {row['plan_error']})" if "plan_error" in row else "")]
    if "plan_error" in row:
        return ["plan failed: " + row["plan_error"]]
    if "error" in row:
        return ["benchmark error: " + row["error"]]
    for reason, names in barrier_groups(row["barriers"]):
        out.append(f"barrier x{len(names)} ({_names(names)}): {reason}")
    share = row["found_share"]
    if share is not None and share < COVERAGE_GOAL:
        out.append(f"found {row['found']}/{row['possible']} = {share:.0%} of the possible BN "
                   f"channels (with beta != 0: {row.get('found_random_bn')})")
    if row.get("scored_bn_channels") is not None and row["scored_bn_channels"] < row["bn_channels"]:
        out.append(f"keras_slim scores only {row['scored_bn_channels']}/{row['bn_channels']} BN "
                   "channels (the rest are inside layers it does not trace, or not called in the "
                   f"graph): {_names(row.get('unscored_bn', []), 6)}")
    if share is not None and row.get("found_random_bn") is not None and row["possible"] and \
            row["found_random_bn"] / row["possible"] < COVERAGE_GOAL <= share:
        out.append(f"with beta != 0 only {row['found_random_bn']}/{row['possible']} = "
                   f"{row['found_random_bn'] / row['possible']:.0%} found: constant channels "
                   "act(beta) no reader can fold stay")
    if "prune_error" in row:
        out.append("prune failed: " + row["prune_error"])
    for mode in ("zero", "const"):
        if f"{mode}_skipped" in row:
            continue
        if f"{mode}_error" in row:
            out.append(f"exactness ({mode}) failed: " + row[f"{mode}_error"])
            continue
        if row[f"{mode}_difference"] >= EXACT_TOL:
            out.append(f"not exact ({mode}): max difference {row[mode + '_difference']:.3g}")
        cov = row[f"{mode}_coverage"]
        if cov is not None and cov < COVERAGE_GOAL:
            out.append(f"coverage ({mode}) {row[mode + '_removed']}/{row[mode + '_killed']} "
                       f"= {cov:.0%} < {COVERAGE_GOAL:.0%}")
        if cov is None and row["prunable"]:
            out.append(f"exactness ({mode}): no channel killed")
    if row.get("tflite_verified") is False:
        out.append("TFLite: " + row.get("tflite_error", "not verified"))
    if "clone_error" in row:
        out.append("keras.models.clone_model failed (no time ratio): " + row["clone_error"])
    elif "prune_s" not in row and row.get("plan_s") and row["plan_s"] > SLOW_PRUNE * row["clone_s"]:
        out.append(f"slow plan: plan alone takes {row['plan_s']} s = "
                   f"{row['plan_s'] / row['clone_s']:.1f}x clone_model ({row['clone_s']} s)")
    elif row.get("prune_over_clone", 0) > SLOW_PRUNE:
        out.append(f"slow prune: {row['prune_s']} s = {row['prune_over_clone']}x clone_model "
                   f"({row['clone_s']} s)")
    return out


def _fmt_diff(row, mode):
    if f"{mode}_skipped" in row:
        return "skipped"
    if f"{mode}_error" in row:
        return "error"
    if f"{mode}_difference" not in row:
        return "-"
    d = row[f"{mode}_difference"]
    return f"{d:.1e}" if d < EXACT_TOL else f"**{d:.1e}**"


def _fmt_cov(row, mode):
    if f"{mode}_killed" not in row:
        return "-"
    return f"{row[mode + '_removed']}/{row[mode + '_killed']}"


def _get(row, key, fmt="{}"):
    return fmt.format(row[key]) if row.get(key) is not None else "-"


def markdown(meta, rows, total_s):
    lines = [
        f"Command: `{meta['command']}` ({meta['machine']}, Keras {meta['keras']}, keras-hub "
        f"{meta['keras_hub']}, TF {meta['tensorflow']}, keras_slim at {meta['git']}); "
        f"total {total_s:.0f} s.",
        "",
        "Random weights, built offline from keras-hub's timm configs or small constructor configs "
        "(listed below). **BN ch** = channels of every BatchNormalization in the model, inside "
        "keras-hub's custom layers too. **possible** = BN ch minus the BN channels that reach a "
        "model output through channel-preserving stock layers (activations, pooling, adds, "
        "concatenations, BN; nested models walked, custom layers not: an upper bound where an "
        "output comes out of a custom layer, and BN layers a custom layer builds but never calls "
        "still count). **found** = BN channels in the classes "
        "`plan(model, 0.5)` can remove, on the model as built (gamma 1, beta 0); **classes** = "
        "`plan.prunable_channels` (coupled channels count once); **found, beta!=0** = found after "
        "`testing.randomize_batchnorm` (what a trained net has: a channel whose constant act(beta) "
        "no reader can fold stays). **exact** = "
        "`testing.exactness(model, 0.5, seed=0, input_size=S)` max output difference "
        f"(< {meta['exact_tolerance']:g} is exact) with dead channels (zero) and with constant ones "
        "(`constants=True`); **removed/killed** = channel classes the plan removes / classes "
        "killed. prune(model, 0.5) and keras.models.clone_model: median of "
        f"{meta['repeats']}, same run. TFLite: `export_tflite(pruned, input_shape=(S, S, 3))` "
        "verified against Keras.",
        "",
        "| model | S | params | BN layers | BN ch | possible | found | found % | found, beta!=0 | "
        "classes | barriers | exact zero | removed/killed zero | exact const | removed/killed const | "
        "plan s | prune s | clone s | prune/clone | TFLite |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "build_error" in r:
            lines.append(f"| {r['model']} | {r['input_size']} | " + " | ".join(["-"] * 17)
                         + " | not built |")
            continue
        share = f"{r['found_share']:.0%}" if r.get("found_share") is not None else "-"
        if "tflite_verified" not in r:
            tfl = "-"
        else:
            tfl = "ok" if r["tflite_verified"] else "**fail**"
        ratio = f"{r['prune_over_clone']}x" if "prune_over_clone" in r else "-"
        clone = r.get("clone_s", "**error**" if "clone_error" in r else "-")
        prune = r.get("prune_s", "**error**" if "prune_error" in r else "-")
        lines.append(
            f"| {r['model']} | {r['input_size']} | {_get(r, 'params', '{:,}')} | "
            f"{_get(r, 'bn_layers')} | {_get(r, 'bn_channels')} | {_get(r, 'possible')} | "
            f"{_get(r, 'found')} | {share} | {_get(r, 'found_random_bn')} | {_get(r, 'prunable')} | "
            f"{len(r.get('barriers', []))} | "
            f"{_fmt_diff(r, 'zero')} | {_fmt_cov(r, 'zero')} | {_fmt_diff(r, 'const')} | "
            f"{_fmt_cov(r, 'const')} | {_get(r, 'plan_s')} | {prune} | {clone} | {ratio} | {tfl} |")
    lines += ["", f"Short of the mark: a barrier, found < {COVERAGE_GOAL:.0%} of possible, "
              f"removed/killed < {COVERAGE_GOAL:.0%}, a difference >= {EXACT_TOL:g}, an error, "
              f"TFLite not verified, or prune > {SLOW_PRUNE:g}x clone_model.", "",
              "## Where it falls short", ""]
    any_short = False
    for r in rows:
        if r["shortfalls"]:
            any_short = True
            lines.append(f"* **{r['model']}**:")
            lines += [f"  * {x}" for x in r["shortfalls"]]
    if not any_short:
        lines.append("Nothing: every model is fully covered, exact, exports and prunes fast.")
    lines += ["", "## Configurations", ""]
    lines += [f"* **{r['model']}** ({r['kind']}): {r['config']}" for r in rows]
    lines += ["", "## keras-hub vision models not in the table", ""]
    lines += [f"* {k}: {v}" for k, v in meta["not_built"].items()]
    return "\n".join(lines)


def _git_state() -> str:
    """The last commit that touched keras_slim/, and whether keras_slim/ has uncommitted edits."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h", "--", "keras_slim"], cwd=root,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "keras_slim"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' + uncommitted keras_slim/ edits' if dirty else ''}"
    except Exception:  # noqa: BLE001
        return "unknown"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="model names (substring match)")
    ap.add_argument("--no-tflite", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--stem", default="realworld_coverage")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import keras_hub
    import tensorflow as tf

    git_at_start = _git_state()
    start = time.perf_counter()
    rows = []
    for name, (build, size, kind, config) in MODELS.items():
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        t = time.perf_counter()
        row = dict(model=name, input_size=size)
        try:
            measure(row, build, size, args.repeats, tflite=not args.no_tflite)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{row.get('stage')}: {first_line(e)}"
            row["traceback"] = traceback.format_exc()[-3000:]
        row.update(kind=kind, config=config, seconds=round(time.perf_counter() - t, 1))
        row["shortfalls"] = shortfalls(row)
        rows.append(row)
        brief = {k: row.get(k) for k in ("bn_channels", "possible", "found", "found_random_bn",
                                          "zero_difference", "zero_coverage",
                                          "const_difference", "const_coverage", "prune_over_clone",
                                          "tflite_verified", "seconds")}
        log.info("%s: %s", name, brief)
        for reason in row["shortfalls"]:
            log.info("  short: %s", reason)
        keras.backend.clear_session()
        gc.collect()
    total = time.perf_counter() - start
    git_at_end = _git_state()
    meta = dict(git=git_at_start if git_at_start == git_at_end
                else f"{git_at_start} (changed during the run, to {git_at_end})",command=("python benchmarks/realworld_coverage.py " + " ".join(argv)).strip(),
                machine=f"{platform.machine()}, {os.cpu_count()} cores", keras=keras.__version__,
                keras_hub=keras_hub.__version__, tensorflow=tf.__version__, ratio=RATIO,
                repeats=args.repeats, exact_tolerance=EXACT_TOL, coverage_goal=COVERAGE_GOAL, slow_prune=SLOW_PRUNE,
                possible="BN channels, less those reaching an output through stock layers (upper bound)", total_s=round(total, 1),
                not_built=NOT_BUILT)
    save_results(args.out, args.stem, dict(meta=meta, rows=rows), markdown(meta, rows, total),
                 default=str)
    log.info("total %.0f s", total)


if __name__ == "__main__":
    main()

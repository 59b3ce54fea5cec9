"""Torch-Pruning 1.6 beside keras_slim: same base weights, data, MACs targets, fine-tuning.

    python -m venv --system-site-packages tp-venv          # benchmark-only environment
    tp-venv/bin/pip install torch torch-pruning==1.6.1     # CPU torch; never a keras_slim dependency
    tp-venv/bin/python benchmarks/torch_pruning_compare.py \\
        --data ../shared/data/cifar10-jpeg.tar.gz --work criteria_work

Reads the two base models `benchmarks/criteria.py` trained and kept in
`--work` (plainly trained and sparsity-trained with BN L1; `--arch` as
there), ports their weights to an equivalent PyTorch network (checked: the
logits must agree to 1e-3 on validation images, else the script stops), and
prunes them with Torch-Pruning to the same MACs targets (50% and 30% of the
MACs kept, counted as keras_slim counts them: conv and dense multiply-adds):

* `BNScalePruner` (BNScaleImportance) on the sparsity-trained base. Its
  sparsity training, `pruner.regularize(model, reg)`, adds `reg * sign(gamma)`
  to each gamma's gradient: the same objective as keras_slim's BN L1 penalty,
  so the base is the Keras sparsity-trained one rather than a second,
  identical-objective training run in PyTorch;
* `GroupNormPruner` (GroupMagnitudeImportance, p=2) on the plain base,
  without its group-norm sparsity training (that would be 10 more training
  epochs; this is its one-shot use);
* `MagnitudePruner` (MagnitudeImportance p=1, i.e. L1 filters) on the plain base.

All with `global_pruning=True` and Torch-Pruning's defaults otherwise
(normalizer "mean", group_reduction "mean", max_pruning_ratio 1.0); the
pruning ratio is bisected until the MACs target is met. Each pruned model is
fine-tuned with criteria.py's schedule (SGD momentum 0.9, lr 0.01 / 10 at 50%
and 75% of 4 epochs, decoupled weight decay 1e-4 as Keras' SGD applies it,
batch 128, the paper's pad-4 crop + flip, same split: 45,000 train / 5,000
val, seed 0), then the test set is evaluated once. Writes
benchmarks/results/torch_pruning[_resnet][_eN][_ftM].{json,md}, with keras_slim's
rows from the criteria file of the same name beside them when it exists.
`--epochs N` reads the bases `criteria.py --epochs N` trained, `--finetune-epochs`,
`--targets` and `--methods` narrow the run as in criteria.py (the ResNet-20
comparison: `--arch resnet --epochs 4 --finetune-epochs 2 --targets 0.5`).

To tell "which channels" apart from "which framework fine-tuned them":
`--methods "keras_slim bn_scale, fine-tuned in PyTorch (sparsity-trained)"`
prunes the Keras base with keras_slim, ports the pruned model (its
ChannelSelection layers too; checked like the bases) and fine-tunes it here;
`--seeds 0 1` fine-tunes every pruned model once per seed. The report lists,
per BN layer, how many channels each method kept and how many it shares with
the first. BNScalePruner's kept channels are written to
`--work/tp_kept_<arch>_<scale>[_eN]_<target>.json`, which criteria.py's method
"Torch-Pruning BNScalePruner's channels" prunes and fine-tunes in Keras.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _results import save_results, table  # noqa: E402

from keras_slim.training.cifar.data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402

MEAN = np.array(CIFAR10_MEAN, np.float32)  # the normalisation the Keras bases were trained with
STD = np.array(CIFAR10_STD, np.float32)
TARGETS = (0.5, 0.3)
SCALES = {"cpu": dict(train=45000, val=5000, finetune=4),
          "smoke": dict(train=512, val=256, finetune=1)}


# ------------------------------------------------------------------ Keras -> torch
class _Graph(nn.Module):
    """A Keras functional model's layers as torch modules, run in the same order."""

    def __init__(self, keras_model):
        super().__init__()
        self.mods = nn.ModuleDict()
        self.nodes = []  # (name, kind, input names)
        configs = {c["name"]: c for c in keras_model.get_config()["layers"]}  # serialised once
        for layer in keras_model.layers:
            cls = type(layer).__name__
            name = layer.name
            inputs = _inbound(configs[name])
            if cls == "InputLayer":
                self.nodes.append((name, "input", []))
                continue
            kind, mod = _torch_layer(layer)
            if mod is not None:
                self.mods[name] = mod
            self.nodes.append((name, kind, inputs))
        self.output = keras_model.layers[-1].name

    def forward(self, x):
        values = {}
        for name, kind, inputs in self.nodes:
            if kind == "input":
                values[name] = x
            elif kind == "add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
                values[name] = out
            elif kind == "flatten":
                values[name] = torch.flatten(values[inputs[0]], 1)
            elif kind == "gap":
                values[name] = values[inputs[0]].mean(dim=(2, 3))
            else:
                values[name] = self.mods[name](values[inputs[0]])
        return values[self.output]


class _Select(nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))

    def forward(self, x):
        return x.index_select(1, self.indices)


def _inbound(cfg):
    """Names of the layers whose outputs a layer's config says it reads."""
    found = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                found.append(obj["config"]["keras_history"][0])
            else:
                for v in obj.values():
                    walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(cfg.get("inbound_nodes", []))
    return found


def _torch_layer(layer):
    """(kind, module) for one Keras layer, its weights copied."""
    cls = type(layer).__name__
    if cls == "Conv2D":
        k = layer.get_weights()[0]  # (kh, kw, cin, cout)
        stride = layer.strides[0]
        pad = k.shape[0] // 2 if layer.padding == "same" else 0
        conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], stride=stride,
                         padding=pad if stride == 1 else 0, bias=layer.use_bias)
        conv.weight.data = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
        if layer.use_bias:
            conv.bias.data = torch.from_numpy(layer.get_weights()[1].copy())
        if stride != 1 and layer.padding == "same" and k.shape[0] > 1:
            # TensorFlow's "same" pads what the strided window needs past the input, the
            # extra row/column at the bottom/right (for an even input and k = 3, s = 2: 0 and 1)
            size = layer.input.shape[1]
            total = max((-(-size // stride) - 1) * stride + k.shape[0] - size, 0)
            return "module", nn.Sequential(
                nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2)),
                conv)
        return "module", conv
    if cls == "BatchNormalization":
        g, b, m, v = layer.get_weights()
        bn = nn.BatchNorm2d(len(g), eps=layer.epsilon, momentum=1 - layer.momentum)
        for t, a in ((bn.weight, g), (bn.bias, b), (bn.running_mean, m), (bn.running_var, v)):
            t.data = torch.from_numpy(a.copy())
        return "module", bn
    if cls == "ReLU":
        return "module", nn.ReLU()
    if cls == "MaxPooling2D":
        return "module", nn.MaxPool2d(layer.pool_size[0], layer.strides[0])
    if cls == "AveragePooling2D":
        return "module", nn.AvgPool2d(layer.pool_size[0], layer.strides[0])
    if cls == "Flatten":
        return "flatten", None
    if cls == "GlobalAveragePooling2D":
        return "gap", None
    if cls == "Add":
        return "add", None
    if cls == "ChannelSelection":  # keras_slim's selection of a shared stream's channels
        return "module", _Select(layer.indices)
    if cls == "Dense":
        w, b = layer.get_weights()
        fc = nn.Linear(w.shape[0], w.shape[1])
        fc.weight.data = torch.from_numpy(w.T.copy())
        fc.bias.data = torch.from_numpy(b.copy())
        return "module", fc
    raise SystemExit(f"no PyTorch port for Keras layer {layer.name!r} ({cls})")


# ------------------------------------------------------------------ measuring
def params(model) -> int:
    """Parameters plus BN moving statistics, as Keras' count_params counts them."""
    return sum(p.numel() for p in model.parameters()) + sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def macs(model) -> int:
    """Conv and Linear multiply-adds of one 32x32 image (keras_slim's accounting)."""
    total = [0]

    def conv_hook(m, _inp, out):
        total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def fc_hook(m, _inp, out):
        total[0] += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else fc_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return total[0]


# where fine-tuning (and the evaluation of what it returns) runs: --device; pruning,
# porting and counting stay on the CPU
DEVICE = torch.device("cpu")


def to_input(x_uint8, device=None) -> torch.Tensor:
    x = (x_uint8.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device or "cpu")


def accuracy(model, x, y, batch=500) -> float:
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            guess = model(to_input(x[i:i + batch], device)).argmax(1).cpu().numpy()
            hits += int((guess == y[i:i + batch]).sum())
    return hits / len(x)


def augment(batch, rng, pad=4):
    """The paper's pad-4 zero padding, random 32x32 crop and horizontal flip (uint8, NHWC)."""
    b, h, w, _ = batch.shape
    padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy, ox = rng.integers(0, 2 * pad + 1, b), rng.integers(0, 2 * pad + 1, b)
    rows = oy[:, None] + np.arange(h)[None]
    cols = ox[:, None] + np.arange(w)[None]
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def finetune(model, x, y, epochs, lr0=0.01, momentum=0.9, wd=1e-4, batch=128, seed=0):
    """criteria.py's fine-tuning: SGD momentum, lr / 10 at 50% and 75% of the epochs."""
    torch.manual_seed(seed)
    model = model.to(DEVICE)
    drops = [int(round(f * epochs)) for f in (0.5, 0.75)]
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=momentum)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        lr = lr0 * 0.1 ** sum(epoch >= d for d in drops if d > 0)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        order = rng.permutation(len(x))
        t0, seen, loss_sum = time.time(), 0, 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            inputs = to_input(augment(x[idx], rng), DEVICE)
            labels = torch.from_numpy(y[idx].astype(np.int64)).to(DEVICE)
            loss = F.cross_entropy(model(inputs), labels)
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():  # decoupled weight decay, as keras.optimizers.SGD applies it
                for p in model.parameters():
                    p.mul_(1 - lr * wd)
            opt.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
        print(f"  epoch {epoch + 1}/{epochs} lr {lr:g} loss {loss_sum / seen:.4f} "
              f"{time.time() - t0:.0f}s", flush=True)
    return model


# ------------------------------------------------------------------ pruning
PRUNERS = {
    "TP BNScalePruner (sparsity-trained)": (
        "sparse", tp.pruner.BNScalePruner, lambda: tp.importance.BNScaleImportance()),
    "TP GroupNormPruner (one-shot)": (
        "plain", tp.pruner.GroupNormPruner, lambda: tp.importance.GroupMagnitudeImportance(p=2)),
    "TP MagnitudePruner (L1)": (
        "plain", tp.pruner.MagnitudePruner, lambda: tp.importance.MagnitudeImportance(p=1)),
}


# keras_slim's plan of the same Keras base, pruned by keras_slim, ported and fine-tuned
# here: the channels of criteria.py's row with this script's fine-tuning, which separates
# "which channels" from "which framework trained them"
KS_PLANS = {
    "keras_slim bn_scale, fine-tuned in PyTorch (sparsity-trained)": ("sparse", {}),
    "keras_slim bn_scale, channel_selection=False, fine-tuned in PyTorch (sparsity-trained)": (
        "sparse", {"channel_selection": False}),
    "keras_slim bn_scale_readers, fine-tuned in PyTorch (sparsity-trained)": (
        "sparse", {"criterion": "bn_scale_readers"}),
}


def bn_kept(base, pruned) -> dict:
    """{BN layer: indices of the base's channels it kept}, read off the moving means
    (Torch-Pruning copies the kept entries exactly)."""
    out = {}
    for name, mod in pruned.mods.items():
        if isinstance(mod, nn.BatchNorm2d):
            full = base.mods[name].running_mean.numpy()
            idx = [int(np.flatnonzero(full == v)[0]) for v in mod.running_mean.numpy()]
            if len(set(idx)) != len(idx):
                raise SystemExit(f"cannot tell which channels of {name} were kept (equal means)")
            out[name] = idx
    return out


def _classifier(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def prune_to(base, pruner_cls, importance, keep):
    """The Torch-Pruning model with the largest MACs <= keep x base MACs (ratio bisected)."""
    full = macs(base)
    example = torch.zeros(1, 3, 32, 32)

    def pruned(ratio):
        model = copy.deepcopy(base)
        pruner = pruner_cls(model, example, importance=importance(), global_pruning=True,
                            pruning_ratio=ratio, ignored_layers=[_classifier(model)])
        pruner.step()
        return model

    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        model = pruned(mid)
        if macs(model) <= keep * full:
            best, hi = (mid, model), mid
        else:
            lo = mid
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 JPEG archive or folder")
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    ap.add_argument("--arch", choices=("vgg", "resnet"), default="vgg")
    ap.add_argument("--work", default="criteria_work",
                    help="criteria.py's --work folder holding the two base models")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="torch device for fine-tuning, e.g. cuda (default: cpu)")
    ap.add_argument("--epochs", type=int,
                    help="read the base models criteria.py trained with this --epochs")
    ap.add_argument("--finetune-epochs", type=int,
                    help="fine-tuning epochs per pruned model (default: the scale's)")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                    help="fractions of the MACs kept (default: 0.5 0.3)")
    ap.add_argument("--methods", nargs="+", choices=sorted(PRUNERS) + sorted(KS_PLANS),
                    help="run only these methods (default: the Torch-Pruning ones)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="fine-tuning seeds: each pruned model is fine-tuned once per seed "
                         "(data order and augmentation; default: 0)")
    ap.add_argument("--suffix", default="",
                    help="appended to the results' file names, as criteria.py's --suffix")
    ap.add_argument("--merge-only", action="store_true",
                    help="only rewrite the report from the saved JSON and the current "
                         "criteria JSON (when criteria.py finished after this script)")
    args = ap.parse_args(argv)
    s = dict(SCALES[args.scale])
    # the same file names as criteria.py for a budget other than the scale's
    base_budget = f"_e{args.epochs}" if args.epochs is not None else ""
    budget = base_budget
    if args.finetune_epochs is not None:
        s["finetune"], budget = args.finetune_epochs, budget + f"_ft{args.finetune_epochs}"
    stem = "torch_pruning" + ("" if args.arch == "vgg" else f"_{args.arch}") + (
        "" if args.scale == "cpu" else f"_{args.scale}") + budget + args.suffix
    if args.merge_only:
        with open(os.path.join(args.out, stem + ".json")) as f:
            data = json.load(f)
        ks = _keras_slim_rows(args.out, stem.replace("torch_pruning", "criteria"))
        save_results(args.out, stem, dict(data, keras_slim=ks),
                     _markdown(data["meta"], data["bases"], data["rows"], ks, data.get("kept")))
        return
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    import keras  # only to read the base models

    from keras_slim.training import cifar

    tag = "" if args.arch == "vgg" else f"{args.arch}_"
    (x_all, y_all), (x_test, y_test) = cifar.load_cifar10(args.data)
    order = np.random.default_rng(0).permutation(len(x_all))  # criteria.py's split
    tr, va = order[: s["train"]], order[len(order) - s["val"]:]
    x_tr, y_tr, x_val, y_val = x_all[tr], y_all[tr], x_all[va], y_all[va]
    if args.scale == "smoke":
        pick = np.random.default_rng(1).permutation(len(x_test))[:256]
        x_test, y_test = x_test[pick], y_test[pick]
    t0 = time.time()
    methods = args.methods or sorted(PRUNERS)
    table_all = {**PRUNERS, **KS_PLANS}
    bases, base_rows, keras_bases = {}, {}, {}
    for name in [n for n in ("plain", "sparse") if any(table_all[m][0] == n for m in methods)]:
        path = os.path.join(args.work, f"base_{tag}{args.scale}{base_budget}_{name}.keras")
        if not os.path.exists(path):
            again = f" --epochs {args.epochs}" if args.epochs is not None else ""
            raise SystemExit(f"{path} does not exist: run benchmarks/criteria.py --arch "
                             f"{args.arch} --scale {args.scale}{again} --work {args.work} "
                             "--bases-only first")
        km = keras.models.load_model(path)
        tm = _Graph(km).eval()
        probe = x_val[:64]
        ref = km.predict(((probe.astype(np.float32) / 255 - MEAN) / STD), verbose=0)
        with torch.no_grad():
            got = tm(to_input(probe)).numpy()
        err = float(np.abs(ref - got).max())
        if err > 1e-3:
            raise SystemExit(f"the PyTorch port of {path} differs from Keras by {err:.2e}")
        bases[name], keras_bases[name] = tm, km
        base_rows[name] = dict(val=accuracy(tm, x_val, y_val), macs=macs(tm),
                               params=params(tm), port_error=err)
        print(name, base_rows[name], flush=True)
    rows, kept = [], {}
    for keep in args.targets:
        kept[keep] = {}
        for method in [m for m in table_all if m in methods]:
            base_name, t1 = table_all[method][0], time.time()
            if method in PRUNERS:
                found = prune_to(bases[base_name], *PRUNERS[method][1:], keep)
                if found is None:
                    rows.append(dict(target=keep, method=method, error="target not reachable"))
                    continue
                ratio, model = found
                kept[keep][method] = bn_kept(bases[base_name], model)
                extra = dict(pruning_ratio=ratio)
            else:
                model, kept[keep][method], extra = _keras_slim_port(
                    keras_bases[base_name], KS_PLANS[method][1], keep, x_val[:64])
            row = dict(target=keep, method=method, base=base_name, search_s=time.time() - t1,
                       macs=macs(model), params=params(model),
                       val_pruned=accuracy(model, x_val, y_val), **extra)
            row["macs_kept"] = row["macs"] / base_rows[base_name]["macs"]
            if method == "TP BNScalePruner (sparsity-trained)":  # for criteria.py to refit
                with open(os.path.join(args.work, f"tp_kept_{tag}{args.scale}{base_budget}_"
                                       f"{int(keep * 100)}.json"), "w") as f:
                    json.dump(kept[keep][method], f)
            for seed in args.seeds:
                tuned = finetune(copy.deepcopy(model), x_tr, y_tr, s["finetune"], seed=seed)
                rows.append(dict(row, seed=seed, val_finetuned=accuracy(tuned, x_val, y_val),
                                 _model=tuned))
                print(method, keep, seed, row["val_pruned"], rows[-1]["val_finetuned"],
                      flush=True)
    for name, m in bases.items():  # the test set, once per final model
        base_rows[name]["test"] = accuracy(m, x_test, y_test)
    for r in rows:
        model = r.pop("_model", None)
        if model is not None:
            r["test"] = accuracy(model, x_test, y_test)
    meta = dict(command="python benchmarks/torch_pruning_compare.py " + " ".join(
        argv or sys.argv[1:]), machine=f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        torch=torch.__version__, torch_pruning=_tp_version(), device=_device_name(),
        minutes=round((time.time() - t0) / 60, 1), finetune_epochs=s["finetune"],
        split=f"{len(x_tr)} train / {len(x_val)} val (seed 0) / {len(x_test)} test")
    ks = _keras_slim_rows(args.out, stem.replace("torch_pruning", "criteria"))
    kept_json = {str(k): v for k, v in kept.items()}
    save_results(args.out, stem, dict(meta=meta, bases=base_rows, rows=rows, keras_slim=ks,
                                      kept=kept_json),
                 _markdown(meta, base_rows, rows, ks, kept_json))


def _keras_slim_port(keras_base, options, keep, probe):
    """keras_slim's plan and pruned model at `keep` of the MACs, ported to PyTorch."""
    import keras_slim

    p = keras_slim.plan(keras_base, target_macs=keep, **options)
    small = keras_slim.prune(keras_base, p)
    tm = _Graph(small).eval()
    ref = small.predict(((probe.astype(np.float32) / 255 - MEAN) / STD), verbose=0)
    with torch.no_grad():
        err = float(np.abs(ref - tm(to_input(probe)).numpy()).max())
    if err > 1e-3:
        raise SystemExit(f"the PyTorch port of keras_slim's pruned model differs by {err:.2e}")
    names = [layer.name for layer in keras_base.layers
             if type(layer).__name__ == "BatchNormalization"]
    full = {layer.name: layer.gamma.shape[0] for layer in keras_base.layers if layer.name in names}
    return tm, {n: list(p.kept.get(n, range(full[n]))) for n in names}, dict(port_error=err)


def _device_name() -> str:
    if DEVICE.type == "cuda":
        return f"fine-tuned on {torch.cuda.get_device_name(DEVICE)}"
    return "fine-tuned on the CPU"


def _tp_version() -> str:
    from importlib.metadata import version
    return version("torch-pruning")


def _keras_slim_rows(out, stem):
    path = os.path.join(out, stem + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    return dict(bases=data["bases"], rows=[r for r in data["rows"] if "val_finetuned" in r])


def _markdown(meta, bases, rows, ks, kept=None) -> str:
    lines = [f"Command: `{meta['command'].strip()}`; {meta['machine']}; torch {meta['torch']}, "
             f"Torch-Pruning {meta['torch_pruning']}; {meta.get('device', 'fine-tuned on the CPU')}; "
             f"{meta['minutes']} min.  ",
             f"Same base weights as benchmarks/criteria.py (ported; max logit difference "
             f"{max(b['port_error'] for b in bases.values()):.1e}), {meta['split']}, "
             f"{meta['finetune_epochs']} fine-tuning epochs per pruned model; choices on "
             "validation, test evaluated once per final model.", "",
             ]
    body = [["100%", f"base, {b}", f"{r['val']:.4f}", "", f"{r['test']:.4f}", f"{r['params']:,}",
             f"{r['macs']:,}"] for b, r in bases.items()]
    merged = [(r["target"], "keras_slim" if r["method"] in KS_PLANS else "Torch-Pruning", r)
              for r in rows]
    if ks:
        merged += [(r["target"], "keras_slim", r) for r in ks["rows"]]
    for target, lib, r in sorted(merged, key=lambda t: (-t[0], t[1], t[2]["method"])):
        name = f"{lib}, {r['method'].replace('TP ', '').replace('keras_slim ', '')}"
        if "val_finetuned" not in r:
            body.append([f"{target:.0%}", name, r["error"], "", "", "", ""])
            continue
        seed = f" (seed {r['seed']})" if "seed" in r else ""
        body.append([f"{target:.0%}", name + seed, f"{r['val_pruned']:.4f}",
                     f"{r['val_finetuned']:.4f}", f"{r['test']:.4f}", f"{r['params']:,}",
                     f"{r['macs']:,}"])
    lines += table(["MACs kept", "library, method", "val pruned", "val fine-tuned", "test",
                    "params", "MACs"], body)
    for target, per_method in (kept or {}).items():
        lines += ["", *_kept_table(target, per_method)]
    return "\n".join(lines) + "\n"


def _kept_table(target, per_method):
    """Channels each method kept per BN layer, and how many it shares with the first."""
    names = list(per_method)
    if len(names) < 2:
        return []
    first = names[0]
    short = [n.replace(" (sparsity-trained)", "") for n in names]
    lines = [f"Channels kept per BN layer at {float(target):.0%} of the MACs "
             f"(shared: channels also kept by {short[0]}):", ""]
    body = []
    for bn in per_method[first]:
        ref = set(per_method[first][bn])
        cells = [bn, str(len(ref))]
        for n in names[1:]:
            got = set(per_method[n].get(bn, ()))
            cells.append(f"{len(got)} ({len(got & ref)} shared)")
        body.append(cells)
    return lines + table(["BN layer", short[0], *short[1:]], body)


if __name__ == "__main__":
    main()

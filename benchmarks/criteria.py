"""Criteria side by side on real CIFAR-10, at matched MACs targets, same budget.

    python benchmarks/criteria.py --data ../shared/data/cifar10-jpeg.tar.gz --scale cpu
    python benchmarks/criteria.py --data ../shared/data/cifar10-jpeg.tar.gz --arch resnet
    python benchmarks/criteria.py --data ../shared/data/cifar10-jpeg.tar.gz --scale smoke

Half-width VGG-11 or pre-activation ResNet-20 (the `cpu` recipe's networks,
`--arch vgg|resnet`). The CIFAR training set is
split 45,000 train / 5,000 validation (seeded); every choice is made on the
validation split and the test set is evaluated once per final model, at the
end. Two base models with the same schedule: one trained plainly, one
sparsity-trained (BN L1, the paper). Then, for each MACs target (keep 50% and
30% of the MACs, i.e. remove 50% / 70%):

* `bn_scale` on the sparsity-trained model (the paper's method);
* `l1`, `fpgm` on the plainly trained model (no sparsity training needed);
* `taylor` on the plainly trained model, from 16 training batches and the
  compiled loss (first-order estimate of the loss change per filter);
* `sensitivity` (l1 ranking, per-group ratios from keras_slim.sensitivity on
  a validation subset; the drop tolerance is bisected until the MACs target
  is met);
* `l1` with `filter_removal="mean"` (a removed channel carries its BN's mean,
  act(beta), instead of a zero filter's act(BN(0)));
* `bn_scale, channel_selection=False` (each residual stream one group, as
  Torch-Pruning groups it) and "Torch-Pruning BNScalePruner's channels": the
  channels torch_pruning_compare.py's BNScalePruner kept, pruned and fine-tuned
  here (it writes them to --work), to tell the channels apart from the
  framework that fine-tunes them;
* `bn_scale_readers` (raw and `normalize="mean"`, and the raw plan fine-tuned
  again from another data seed): every BN reading a channel scores it, so the
  pre-activation streams are cut as Torch-Pruning cuts them;

each fine-tuned for the same number of epochs. Reported: validation accuracy
before/after fine-tuning, test accuracy (once), params, MACs, TFLite latency.
A second table, without fine-tuning, is the normalisation ablation that
defends `normalize="auto"`: bn_scale (sparsity-trained base), l1 and fpgm
with normalize mean / max / None and taylor with mean / None, the filter
criteria each with filter_removal zero and mean; validation accuracy right
after pruning and the smallest fraction of a layer kept.

Writes benchmarks/results/criteria[_resnet][_smoke].{json,md}. Each fine-tuned
model and its row are kept in --work, so a run that stopped resumes after the
last finished fine-tune. Torch-Pruning on the same base weights is
benchmarks/torch_pruning_compare.py (a benchmark-only PyTorch environment).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import _keras  # noqa: E402
from keras_slim.training import cifar  # noqa: E402
from _results import save_results, table  # noqa: E402

SCALES = {
    # train images, val images, test images, epochs, fine-tune epochs, width, sensitivity subset
    "smoke": dict(train=512, val=256, test=256, epochs=1, finetune=1, width=0.25, sens=128,
                  sens_ratios=(0.3, 0.6)),
    "cpu": dict(train=45000, val=5000, test=None, epochs=10, finetune=4, width=0.5, sens=1000,
                sens_ratios=(0.2, 0.4, 0.6, 0.8)),
}
TARGETS = (0.5, 0.3)  # fraction of the MACs kept
# lambda: the cpu recipe's (10x the paper's, for the short schedule; cifar.make_config)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 JPEG archive or folder")
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    ap.add_argument("--arch", choices=("vgg", "resnet"), default="vgg")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--epochs", type=int, help="epochs per base model (default: the scale's)")
    ap.add_argument("--finetune-epochs", type=int,
                    help="fine-tuning epochs per pruned model (default: the scale's)")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                    help="fractions of the MACs kept (default: 0.5 0.3)")
    ap.add_argument("--methods", nargs="+",
                    help="run only these methods (names as in the table; default: all)")
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the normalisation ablation (accuracy right after pruning)")
    ap.add_argument("--suffix", default="",
                    help="appended to the results' file names (a second experiment on the "
                         "same budget keeps the first one's files)")
    ap.add_argument("--bases-only", action="store_true",
                    help="train (or load) the two base models, then stop")
    ap.add_argument("--train-only", action="store_true",
                    help="train the bases and fine-tune the methods, keep them in --work and "
                         "stop before the test set and TFLite (to train on another machine, "
                         "e.g. JAX on a GPU without TensorFlow; rerun the same command "
                         "without it, with that --work, where TFLite runs to report)")
    ap.add_argument("--work", default="criteria_work",
                    help="folder for TFLite files and the two trained base models (a rerun "
                         "with the same folder loads them instead of training again)")
    args = ap.parse_args(argv)
    s = dict(SCALES[args.scale])
    budget = ""  # a budget other than the scale's gets its own file names
    if args.epochs is not None:
        s["epochs"], budget = args.epochs, budget + f"_e{args.epochs}"
    if args.finetune_epochs is not None:
        s["finetune"], budget = args.finetune_epochs, budget + f"_ft{args.finetune_epochs}"
    keras.utils.set_random_seed(0)
    (x_all, y_all), (x_test, y_test) = cifar.load_cifar10(args.data)
    order = np.random.default_rng(0).permutation(len(x_all))
    train_idx, val_idx = order[: s["train"]], order[len(order) - s["val"]:]
    x_tr, y_tr, x_val, y_val = x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]
    if s["test"]:  # a random subset: the archive's test images come sorted by class
        pick = np.random.default_rng(1).permutation(len(x_test))[: s["test"]]
        x_test, y_test = x_test[pick], y_test[pick]
    cfg = cifar.make_config(args.arch, "cpu")
    if args.arch == "vgg":
        cfg.model = dict(cfg.model, width=s["width"])
    elif args.scale == "smoke":
        cfg.model = dict(cfg.model, width=s["width"])
    tag = ("" if args.arch == "vgg" else f"{args.arch}_")
    batch = cfg.batch_size
    train = cifar.make_dataset(x_tr, y_tr, batch, training=True, seed=0)
    val = cifar.make_dataset(x_val, y_val, 256, training=False)
    test = cifar.make_dataset(x_test, y_test, 256, training=False)
    sens_val = cifar.make_dataset(x_val[: s["sens"]], y_val[: s["sens"]], 256, training=False)
    os.makedirs(args.work, exist_ok=True)

    def fit(model, epochs, lr=None, seed=0):
        cifar.compile_model(model, cfg, lr)
        sched = keras.callbacks.LearningRateScheduler(cifar.step_schedule(cfg, epochs, lr))
        data = train if seed == 0 else cifar.make_dataset(x_tr, y_tr, batch, training=True,
                                                          seed=seed)
        model.fit(data, epochs=epochs, callbacks=[sched], verbose=2)
        return model

    def accuracy(model, data):
        if not getattr(model, "compiled", False):
            cifar.compile_model(model, cfg)
        return float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])

    t0 = time.time()

    base_budget = f"_e{args.epochs}" if args.epochs is not None else ""

    def base(name, lam):
        """Train (or, on a rerun with the same --work, load) one base model."""
        path = os.path.join(args.work, f"base_{tag}{args.scale}{base_budget}_{name}.keras")
        if os.path.exists(path):
            print(f"loading {path} (trained by an earlier run)", flush=True)
            return keras.models.load_model(path)
        model = cifar.build_model(cfg)
        keras_slim.add_bn_l1(model, lam)
        fit(model, s["epochs"])
        keras_slim.add_bn_l1(model, 0)
        model.save(path)
        return model

    # with --methods and --no-ablation, only the bases those methods read (the name of
    # each method on the sparsity-trained base says so)
    narrow = args.methods and args.no_ablation
    wanted = [n for n in ("plain", "sparse") if not narrow or any(
        ("sparsity-trained" in m) == (n == "sparse") for m in args.methods)]
    bases = {n: base(n, cfg.sparsity if n == "sparse" else 0.0) for n in wanted}
    plain, sparse = bases.get("plain"), bases.get("sparse")
    if args.bases_only:
        return
    base_rows = {k: dict(val=accuracy(m, val), params=int(m.count_params()),
                         macs=keras_slim.plan(m, 0.0).macs_before) for k, m in bases.items()}
    print("bases", base_rows, flush=True)

    sens_cache = []

    def sensitivity():
        """keras_slim.sensitivity of the plain model (computed once, when a method needs it)."""
        if not sens_cache:
            sens_cache.append(keras_slim.sensitivity(
                plain, lambda m: accuracy(m, sens_val), ratios=s["sens_ratios"],
                criterion="l1", verbose=0))
        return sens_cache[0]

    rows, ablation = [], []
    finetuner = _FineTuner(work=args.work, stem=f"{tag}{args.scale}{budget}", bases=bases,
                           fit=fit, accuracy=accuracy, val=val, epochs=s["finetune"],
                           lr=cfg.lr * 0.1)
    # the same 16 batches in every run (a shuffled take(16) differs per run, and so would
    # the taylor plans that a resumed run checks against its saved fine-tunes)
    taylor_data = cifar.make_dataset(x_tr[: 16 * batch], y_tr[: 16 * batch], batch,
                                     training=False)
    for goal in args.targets:
        plans = {  # built lazily: --methods may skip the costly ones
            "bn_scale (sparsity-trained)": ("sparse", lambda: keras_slim.plan(
                sparse, target_macs=goal)),
            "bn_scale, normalize=mean (sparsity-trained)": ("sparse", lambda: keras_slim.plan(
                sparse, target_macs=goal, normalize="mean")),
            # the raw plan again, fine-tuned on data shuffled and augmented from another
            # seed (the same seed repeats the first run): the spread is the fine-tuning noise
            "bn_scale (sparsity-trained), fine-tuned again": ("sparse", lambda: keras_slim.plan(
                sparse, target_macs=goal)),
            # the residual streams pruned as one group each, as Torch-Pruning does
            "bn_scale, channel_selection=False (sparsity-trained)": ("sparse", lambda: (
                keras_slim.plan(sparse, target_macs=goal, channel_selection=False))),
            # every BN reading a channel scores it, as Torch-Pruning groups them: the residual
            # streams read raw by the projection shortcuts are cut too (not exact there)
            "bn_scale_readers (sparsity-trained)": ("sparse", lambda: keras_slim.plan(
                sparse, target_macs=goal, criterion="bn_scale_readers")),
            "bn_scale_readers (sparsity-trained), fine-tuned again": ("sparse", lambda: (
                keras_slim.plan(sparse, target_macs=goal, criterion="bn_scale_readers"))),
            "bn_scale_readers, normalize=mean (sparsity-trained)": ("sparse", lambda: (
                keras_slim.plan(sparse, target_macs=goal, criterion="bn_scale_readers",
                                normalize="mean"))),
            # the channels Torch-Pruning's BNScalePruner kept (torch_pruning_compare.py
            # writes them), fine-tuned here: "which channels" apart from "which framework"
            "Torch-Pruning BNScalePruner's channels (sparsity-trained)": ("sparse", lambda: (
                _plan_from_bn_kept(sparse, os.path.join(
                    args.work, f"tp_kept_{tag}{args.scale}{base_budget}_{int(goal * 100)}.json")))),
            "l1": ("plain", lambda: keras_slim.plan(plain, target_macs=goal, criterion="l1")),
            "fpgm": ("plain", lambda: keras_slim.plan(plain, target_macs=goal, criterion="fpgm")),
            "taylor": ("plain", lambda: keras_slim.plan(plain, target_macs=goal, criterion="taylor",
                                                        data=taylor_data)),
            "taylor, normalize=None": ("plain", lambda: keras_slim.plan(
                plain, target_macs=goal, criterion="taylor", data=taylor_data, normalize=None)),
            "sensitivity (l1)": ("plain", lambda: _sensitivity_plan(plain, sensitivity(), goal)),
            "l1, filter_removal=mean": ("plain", lambda: keras_slim.plan(
                plain, target_macs=goal, criterion="l1", filter_removal="mean")),
        }
        unknown = sorted(set(args.methods or ()) - set(plans))
        if unknown:
            ap.error(f"--methods: unknown {unknown}; the methods are {sorted(plans)}")
        for method, (base_name, make_plan) in plans.items():
            if args.methods and method not in args.methods:
                continue
            p = make_plan()
            if p is None or isinstance(p, str):
                rows.append(dict(target=goal, method=method, error=p or "target not reachable"))
                continue
            rows.append(finetuner.row(goal, method, base_name, p,
                                      seed=1 if method.endswith("fine-tuned again") else 0))
        # normalisation ablation: accuracy right after pruning, no fine-tuning
        for criterion, norms in () if args.no_ablation else (("bn_scale", ("mean", "max", None)),
                                 ("l1", ("mean", "max", None)), ("fpgm", ("mean", "max", None)),
                                 ("taylor", ("mean", None))):
            removals = ("zero",) if criterion == "bn_scale" else ("zero", "mean")
            base_model = sparse if criterion == "bn_scale" else plain
            for norm, removal in ((n, r) for n in norms for r in removals):
                extra = dict(data=taylor_data) if criterion == "taylor" else {}
                if criterion != "bn_scale":
                    extra["filter_removal"] = removal
                p = keras_slim.plan(base_model, target_macs=goal, criterion=criterion,
                                    normalize=norm, **extra)
                ablation.append(dict(target=goal, criterion=criterion, normalize=str(norm),
                                     filter_removal=removal,
                                     base=("sparse" if criterion == "bn_scale" else "plain"),
                                     val_pruned=accuracy(keras_slim.prune(base_model, p), val),
                                     macs_kept=p.macs_after / p.macs_before,
                                     min_layer_kept=min(
                                         lp.channels_after / lp.channels_before
                                         for lp in p.layers if lp.channels_before)))
                print("ablation", ablation[-1], flush=True)
    trained_on = _trained_on(args.work, t0, args.train_only)
    if args.train_only:
        return
    # the test set, once per final model, after every choice was made
    for k, m in bases.items():
        base_rows[k]["test"] = accuracy(m, test)
        base_rows[k].update(cifar.export_and_time(m, os.path.join(args.work, f"{k}.tflite"), 30))
    for i, r in enumerate(rows):
        model = r.pop("_model", None)
        if model is not None:
            r["test"] = accuracy(model, test)
            r.update(cifar.export_and_time(model, os.path.join(args.work, f"m{i}.tflite"), 30))
    meta = dict(command="python benchmarks/criteria.py " + " ".join(argv or sys.argv[1:]),
                machine=f"{platform.machine()}, {os.cpu_count()} cores (shared)",
                keras=keras.__version__, minutes=round((time.time() - t0) / 60, 1),
                split=f"{len(x_tr)} train / {len(x_val)} val (seed 0) / {len(x_test)} test",
                network=(f"VGG-11 width {s['width']}" if args.arch == "vgg" else
                         f"pre-activation ResNet-20 {cfg.model}"), epochs=s["epochs"],
                finetune_epochs=s["finetune"], bn_l1=cfg.sparsity, **trained_on)
    name = "criteria" + ("" if args.arch == "vgg" else f"_{args.arch}") + (
        "" if args.scale == "cpu" else f"_{args.scale}") + budget + args.suffix
    save_results(args.out, name, dict(meta=meta, bases=base_rows, rows=rows, ablation=ablation,
                                      sensitivity=sens_cache[0].to_dict() if sens_cache else None),
                 _markdown(meta, base_rows, rows, ablation))


def _trained_on(work, t0, training_run):
    """Where the models in `work` were trained: written by a --train-only run (JSON in
    `work`, accumulated over resumed runs), read back by the reporting run."""
    path = os.path.join(work, "trained_on.json")
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    if not training_run:
        return {"trained_on": old} if old else {}
    devices = []
    if keras.backend.backend() == "jax":
        import jax
        devices = sorted({d.device_kind for d in jax.devices()})
    new = dict(machine=f"{platform.machine()}, {os.cpu_count()} cores",
               backend=keras.backend.backend(), devices=devices, keras=keras.__version__,
               minutes=round(old.get("minutes", 0) + (time.time() - t0) / 60, 1),
               runs=old.get("runs", 0) + 1)
    with open(path, "w") as f:
        json.dump(new, f)
    print("trained_on", new, flush=True)
    return {"trained_on": new}


@dataclasses.dataclass
class _FineTuner:
    """Prunes, fine-tunes and measures plans; each result is kept in `work` so that a
    rerun resumes."""
    work: str
    stem: str  # file-name prefix: architecture, scale and budget
    bases: dict
    fit: Callable
    accuracy: Callable
    val: object  # the validation dataset
    epochs: int
    lr: float

    def row(self, goal, method, base_name, p, seed=0):
        slug = "".join(c if c.isalnum() else "_" for c in method).strip("_")
        path = os.path.join(self.work, f"ft_{self.stem}_{int(goal * 100)}_{slug}")
        fingerprint = hashlib.sha1(json.dumps(p.kept, sort_keys=True).encode()).hexdigest()
        if os.path.exists(path + ".json") and os.path.exists(path + ".keras"):
            with open(path + ".json") as f:
                row = json.load(f)
            # the same plan, or it is fine-tuned again (a changed default changes the plan);
            # rows from before fingerprints were kept are matched by their params and MACs
            same = (row["plan"] == fingerprint if "plan" in row else
                    (row["params"], row["macs"]) == (p.params_after, p.macs_after))
            same = same and row.get("seed", 0) == seed
            if same:
                print(f"loading {path}.keras (fine-tuned by an earlier run)", flush=True)
                row["_model"] = keras.models.load_model(path + ".keras")
                # counted again: the plan's accounting may have been corrected since
                row.update(params=p.params_after, macs=p.macs_after)
                return row
            print(f"{path}.keras was fine-tuned from another plan or data seed: fine-tuning "
                  "again", flush=True)
        small = keras_slim.prune(self.bases[base_name], p)
        before = self.accuracy(small, self.val)
        self.fit(small, self.epochs, lr=self.lr, seed=seed)
        row = dict(target=goal, method=method, base=base_name, val_pruned=before,
                   val_finetuned=self.accuracy(small, self.val), params=p.params_after,
                   macs=p.macs_after, macs_kept=p.macs_after / p.macs_before, plan=fingerprint,
                   seed=seed)
        small.save(path + ".keras")
        with open(path + ".json", "w") as f:
            json.dump(row, f)
        print(method, goal, row["val_pruned"], row["val_finetuned"], flush=True)
        return dict(row, _model=small)


def _plan_from_bn_kept(model, path):
    """keras_slim's plan keeping exactly the channels of each BN listed in `path` (JSON
    {BN layer: kept indices}, chosen by another tool), or why there is none.

    Torch-Pruning also cuts residual streams that a projection shortcut reads
    before any BN (stages 1-2 of this ResNet): zero scaling factors do not make
    those channels dead, so bn_scale never offers them, but zero filters do. So
    a copy is planned with the l1 criterion, each conv's output filters scaled by
    1e-6 where the BN that reads them (through Adds) drops the channel, with each
    residual stream as one group; the plan is checked against the list and
    replayed on `model` (removed channels are then pruned as zero filters).
    """
    if not os.path.exists(path):
        return f"{path} missing: run torch_pruning_compare.py first"
    with open(path) as f:
        wanted = json.load(f)
    readers: dict = {}
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        for t in inputs:
            producer = _keras.input_name(t)  # the layer whose output `t` is
            if producer is not None:
                readers.setdefault(producer, []).append(layer)

    def kept_by_reader(name):  # the listed BN reading this layer's output (through Adds)
        for r in readers.get(name, ()):
            if r.name in wanted:
                return wanted[r.name]
            if isinstance(r, keras.layers.Add):
                found = kept_by_reader(r.name)
                if found is not None:
                    return found
        return None

    marked = keras.models.clone_model(model)
    marked.set_weights(model.get_weights())
    for layer in marked.layers:
        keep = kept_by_reader(layer.name) if isinstance(layer, keras.layers.Conv2D) else None
        if keep is not None:
            scale = np.full(layer.filters, 1e-6, np.float32)
            scale[keep] = 1.0
            layer.kernel.assign(layer.kernel.numpy() * scale)
    p = keras_slim.plan(marked, threshold=1e-4, criterion="l1", normalize=None,
                        channel_selection=False)
    for name, keep in wanted.items():
        got = p.kept.get(name, list(range(model.get_layer(name).gamma.shape[0])))
        if sorted(got) != sorted(keep):
            raise SystemExit(f"{path}: keras_slim cannot keep exactly these channels of {name} "
                             f"({len(keep)} listed, {len(got)} kept): the coupling differs")
    return keras_slim.plan(model, kept=p.kept, criterion="l1", channel_selection=False)


def _sensitivity_plan(model, sens, goal):
    """The largest drop tolerance whose per-group plan still meets the MACs target."""
    lo, hi, best = 0.0, 1.0, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(12):
            mid = (lo + hi) / 2
            ratios = sens.group_ratios(mid)
            p = keras_slim.plan(model, group_ratios=ratios, criterion="l1") if ratios else None
            if p is not None and p.macs_after <= goal * p.macs_before:
                best, hi = p, mid
            else:
                lo = mid
    return best


def _markdown(meta, bases, rows, ablation) -> str:
    lines = [f"Command: `{meta['command'].strip()}`; {meta['machine']}; Keras {meta['keras']}; "
             f"{meta['minutes']} min.  ",
             f"{meta['network']}, {meta['split']}; {meta['epochs']} epochs per base model "
             f"(sparsity: BN L1 {meta['bn_l1']}), {meta['finetune_epochs']} fine-tuning epochs "
             "per pruned model. Choices on validation; test evaluated once per final model.", ""]
    t = meta.get("trained_on")
    if t:
        lines[-1:-1] = [f"Trained (bases and fine-tuning) with `--train-only` on {t['machine']}, "
                        f"Keras {t['keras']} on {t['backend']}"
                        + (f" ({', '.join(t['devices'])})" if t["devices"] else "")
                        + f", {t['minutes']} min in {t['runs']} run(s); the test set, params, "
                        "MACs and TFLite latency measured by the command above."]
    nan = float("nan")
    lines += table(["model", "val acc", "test acc", "params", "MACs", "TFLite ms"],
                   [[f"base, {k}", f"{b['val']:.4f}", f"{b['test']:.4f}", f"{b['params']:,}",
                     f"{b['macs']:,}", f"{b.get('latency_ms', nan):.2f}"]
                    for k, b in bases.items()])
    body = []
    for r in rows:
        if "val_pruned" not in r:
            body.append([f"{r['target']:.0%}", r["method"], r["error"], "", "", "", "", ""])
            continue
        body.append([f"{r['target']:.0%}", r["method"], f"{r['val_pruned']:.4f}",
                     f"{r['val_finetuned']:.4f}", f"{r['test']:.4f}", f"{r['params']:,}",
                     f"{r['macs']:,}", f"{r.get('latency_ms', nan):.2f}"])
    lines += [""] + table(["MACs kept", "method", "val pruned", "val fine-tuned", "test",
                           "params", "MACs", "TFLite ms"], body)
    if not ablation:  # --no-ablation
        return "\n".join(lines) + "\n"
    lines += ["", "Normalisation and filter_removal ablation (no fine-tuning; bn_scale on the "
                  "sparsity-trained base, the others on the plain one; `auto` is None for "
                  "bn_scale, mean for l1, fpgm and taylor):", ""]
    lines += table(["MACs kept", "criterion", "normalize", "filter_removal", "val pruned",
                    "smallest layer kept"],
                   [[f"{a['target']:.0%}", a["criterion"], a["normalize"],
                     a.get("filter_removal", "zero"), f"{a['val_pruned']:.4f}",
                     f"{a['min_layer_kept']:.1%}"] for a in ablation])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

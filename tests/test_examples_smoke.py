"""The CIFAR-10 recipe behind the examples (keras_slim.training.cifar) end to end on a
tiny generated archive (no real data), and the examples' own shape (thin scripts on the
public API)."""
import ast
import json
import os
import pathlib
import tarfile

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim.training import cifar
from keras_slim.training.cifar import CIFAR10_CLASSES
from keras_slim.training.cifar import stages as cifar_stages

Image = pytest.importorskip("PIL.Image")
EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PUBLIC = ("keras_slim", "keras_slim.training", "keras_slim.training.cifar", "keras_slim.export")


@pytest.fixture(scope="module")
def fake_archive(tmp_path_factory):
    """10 classes x (12 train, 3 test) noisy 32x32 JPEGs, class-tinted, as a .tar.gz."""
    root = tmp_path_factory.mktemp("fake_cifar")
    rng = np.random.default_rng(0)
    archive = root / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 12), ("test", 3)):
            for label, cls in enumerate(CIFAR10_CLASSES):
                d = root / split / cls
                d.mkdir(parents=True)
                for i in range(n):
                    img = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
                    img[..., label % 3] += np.uint8(17 * label)
                    Image.fromarray(img).save(d / f"{i:04d}.jpg")
            tar.add(root / split, arcname=split)
    return archive


def _no_training(*args, **kwargs):
    raise AssertionError("a finished stage was trained again instead of loaded")


@pytest.mark.slow
def test_vgg_smoke_pipeline_and_resume(fake_archive, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["--scale", "smoke", "--data", str(fake_archive), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--verbose", "0"]
    results = cifar.main("vgg", argv)

    names = [r["name"] for r in results["rows"]]
    assert names[0] == "baseline" and names[1].startswith("sparsity-trained")
    assert "pruned 70% + fine-tuned" in names and "pruned 50% + fine-tuned" in names
    assert any(n.startswith("multi-pass") for n in names)
    # 64 of the 120 training images are held out: multi-pass and the sweep choose on them
    assert results["data"]["train_images"] == 56 and results["data"]["test_images"] == 30
    assert results["data"]["val_images"] == 64 and results["data"]["choices_on"] == "validation"
    assert results["sweep"]["on"] == "validation"
    rows = {r["name"]: r for r in results["rows"]}
    base = rows["baseline"]
    for ratio in (70, 50):
        tuned = rows[f"pruned {ratio}% + fine-tuned"]
        assert tuned["params"] < base["params"] and tuned["macs"] < base["macs"]
        assert 0.0 <= tuned["accuracy"] <= 1.0
    assert rows["pruned 70% + fine-tuned"]["params"] < rows["pruned 50% + fine-tuned"]["params"]
    assert results["multipass"]["passes"]

    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    md = (out / "results.md").read_text()
    assert "| baseline |" in md and "6.34% -> 6.20%" in md
    assert "64 validation (held out of the training images" in md
    for f in ("models/baseline.keras", "models/sparse.keras", "models/finetune_70.keras",
              "models/multipass_best.keras", "plans/plan_70.json", "history/sparse.csv",
              "history/sparse_gamma.json"):
        assert (out / f).exists(), f
    assert not list((out / "checkpoints").iterdir())  # cleaned once each stage finished
    if any(r.get("tflite_bytes") for r in results["rows"]):
        assert (out / "tflite" / "baseline.tflite").exists()
        tuned = rows["pruned 70% + fine-tuned"]
        assert tuned["tflite_bytes"] < base["tflite_bytes"]
    if _has_matplotlib():
        for f in ("gamma_sparse.png", "channels_70.png", "accuracy_vs_ratio.png"):
            assert (out / "plots" / f).stat().st_size > 1000, f

    # run again: every stage is loaded from its saved model, nothing is retrained
    keras.backend.clear_session()
    monkeypatch.setattr(keras.Model, "fit", _no_training)
    again = cifar.main("vgg", argv + ["--no-export", "--no-sweep"])
    assert [r["name"] for r in again["rows"]] == names
    assert again["rows"][0]["accuracy"] == pytest.approx(results["rows"][0]["accuracy"])
    assert again["rows"][3]["accuracy"] == pytest.approx(results["rows"][3]["accuracy"])


@pytest.mark.slow
def test_resnet_smoke_with_the_readers_criterion(fake_archive, tmp_path):
    """--criterion bn_scale_readers reaches every prune of the recipe (single pass and
    multi-pass): the pre-activation streams are cut, so no ChannelSelection is left."""
    out = tmp_path / "run"
    results = cifar.main("resnet", ["--scale", "smoke", "--data", str(fake_archive), "--out",
                                    str(out), "--cache-dir", str(tmp_path / "cache"),
                                    "--verbose", "0", "--no-export", "--no-sweep",
                                    "--criterion", "bn_scale_readers"])
    assert results["config"]["criterion"] == "bn_scale_readers"
    plan = keras_slim.Plan.from_json((out / "plans" / "plan_40.json").read_text())
    assert plan.options["criterion"] == "bn_scale_readers"
    assert "conv1" in plan.kept  # the stem's stream is cut (bn_scale only selects from it)
    tuned = keras.models.load_model(out / "models" / "finetune_40.keras")
    assert not any(isinstance(la, keras_slim.ChannelSelection) for la in tuned.layers)
    assert results["multipass"]["passes"]
    assert "criterion='bn_scale_readers'" in (out / "results.md").read_text()


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_checkpoint(fake_archive, tmp_path):
    cfg = cifar.make_config("vgg", "smoke")
    data = cifar.limit_data(cifar.load_cifar10(fake_archive, cache_dir=tmp_path / "c"), cfg)
    run = cifar.Run(cfg, str(tmp_path / "run"), data, verbose=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.fit_stage("stage", lambda: cifar.build_model(cfg), 3, 1e-4,
                      callbacks=[Interrupt()])
    left = cifar_stages._checkpoints(run.path("checkpoints", "stage-*.keras"))
    assert [os.path.basename(p) for p in left] == ["stage-0002.keras"]
    model = run.fit_stage("stage", lambda: pytest.fail("should resume, not rebuild"), 3, 1e-4)
    assert model.optimizer.iterations.numpy() == 3 * run.steps
    epochs = [line.split(",")[0] for line in
              open(run.path("history", "stage.csv")).read().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    assert os.path.exists(run.path("models", "stage.keras"))
    assert len(json.load(open(run.path("history", "stage_gamma.json")))) == 3


@pytest.mark.parametrize("arch, lam, ratios", [
    ("vgg", 1e-4, (0.7, 0.5)), ("resnet", 1e-5, (0.4, 0.6)), ("densenet", 1e-5, (0.4, 0.6))])
def test_configs_follow_the_paper(arch, lam, ratios):
    paper = cifar.make_config(arch, "paper")
    assert (paper.sparsity, paper.ratios, paper.epochs, paper.batch_size, paper.lr) == \
        (lam, ratios, 160, 64, 0.1)
    assert (paper.momentum, paper.weight_decay, paper.lr_drops) == (0.9, 1e-4, (0.5, 0.75))
    schedule = cifar.step_schedule(paper, 160)
    assert [schedule(e) for e in (0, 79, 80, 119, 120)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001])
    smoke = cifar.make_config(arch, "smoke")
    model = cifar.build_model(smoke)
    assert model.output_shape == (None, 10)


def test_command_line_overrides_and_errors():
    args = cifar.parse_args("vgg", ["--scale", "paper", "--epochs", "3", "--ratios", "0.2",
                                        "--no-multipass"])
    cfg = cifar.config_from_args("vgg", args)
    assert (cfg.epochs, cfg.finetune_epochs, cfg.ratios, cfg.multipass) == (3, 160, (0.2,), False)
    assert cfg.export and cfg.sweep and cfg.max_layer_ratio is None
    args = cifar.parse_args("vgg", ["--no-sweep", "--no-export", "--max-layer-ratio", "0.8"])
    cfg = cifar.config_from_args("vgg", args)
    assert (cfg.sweep, cfg.export, cfg.max_layer_ratio) == ((), False, 0.8)
    assert cfg.criterion == "bn_scale"
    args = cifar.parse_args("resnet", ["--criterion", "bn_scale_readers"])
    assert cifar.config_from_args("resnet", args).criterion == "bn_scale_readers"
    with pytest.raises(SystemExit):
        cifar.parse_args("resnet", ["--criterion", "l3"])
    args = cifar.parse_args("vgg", ["--finetune-lr", "0.01", "--sparsity", "2e-3"])
    cfg = cifar.config_from_args("vgg", args)
    assert (cfg.finetune_lr, cfg.sparsity) == (0.01, 2e-3)
    assert [cifar.step_schedule(cfg, 4, cfg.finetune_lr)(e) for e in range(4)] == \
        pytest.approx([0.01, 0.01, 0.001, 0.0001])
    with pytest.raises(SystemExit):
        cifar.parse_args("vgg", ["--max-layer-ratio", "0"])
    with pytest.raises(SystemExit):
        cifar.parse_args("vgg", ["--ratios", "1.5"])
    with pytest.raises(ValueError, match="--scale must be one of"):
        cifar.make_config("vgg", "gpu")


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_examples_are_thin_scripts_on_the_public_api():
    """No sys.path tricks, no private modules: what a user copies from examples/ works."""
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.name for p in scripts} >= {"quickstart.py", "cifar10_vgg.py", "cifar10_resnet.py",
                                         "cifar10_densenet.py"}
    for path in scripts:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                raise AssertionError(f"{path.name} touches sys.path")
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "keras_slim":
                    assert name in PUBLIC, f"{path.name} imports {name}, not the public API"
                else:  # only the standard library and third-party packages, no sibling modules
                    assert not (EXAMPLES / f"{name.split('.')[0]}.py").exists(), \
                        f"{path.name} imports the sibling module {name}"


def test_split_validation_holds_out_disjoint_seeded_images():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    y = np.arange(100)
    (xt, yt), (xv, yv) = cifar.split_validation((x, y), 20, seed=3)
    assert len(xt) == 80 and len(xv) == 20
    assert set(yt.tolist()).isdisjoint(yv.tolist()) and len(set(yt) | set(yv)) == 100
    assert np.array_equal(xv[:, 0], yv)  # images and labels stay paired
    (_, _), (_, yv2) = cifar.split_validation((x, y), 20, seed=3)
    assert np.array_equal(yv, yv2)
    assert cifar.split_validation((x, y), 0) == ((x, y), None)
    with pytest.raises(ValueError, match="val_images=100 would leave no training image"):
        cifar.split_validation((x, y), 100)


def test_val_images_flag():
    args = cifar.parse_args("vgg", ["--scale", "smoke", "--val-images", "0"])
    assert cifar.config_from_args("vgg", args).val_images == 0
    assert cifar.make_config("resnet", "cpu").val_images == 5000
    with pytest.raises(SystemExit):
        cifar.parse_args("vgg", ["--val-images", "-1"])

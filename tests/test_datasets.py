"""CIFAR-10 loader (folder / tar.gz, cache, errors) and the input pipeline's two engines,
tf.data and NumPy (keras_slim.training.cifar.data, .pipeline and .numpy_batches)."""
import os
import tarfile

import numpy as np
import pytest

from keras_slim.training import cifar
from keras_slim.training.cifar import CIFAR10_CLASSES, cifar_augment, load_cifar10, make_dataset
from keras_slim.training.cifar import data as cifar_data
from keras_slim.training.cifar.numpy_batches import NumpyBatches

Image = pytest.importorskip("PIL.Image")


def _image(label: int, index: int) -> np.ndarray:
    """A 32x32 image whose pixels encode its label and index (exact in PNG)."""
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 20 * label
    img[..., 1] = index
    img[..., 2] = np.arange(32, dtype=np.uint8)[None, :] * 4  # a left-right ramp
    return img


def _make_folder(root, per_class=(2, 1), ext="png", classes=CIFAR10_CLASSES):
    for split, n in zip(("train", "test"), per_class):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(label, i)).save(d / f"{i:04d}.{ext}")
    return root


def _tar(folder, path, arcname=None):
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=f"{arcname}/{split}" if arcname else split)
    return path


def test_load_folder_exact_pixels_labels_and_order(tmp_path):
    folder = _make_folder(tmp_path / "cifar")
    (x, y), (xt, yt) = load_cifar10(folder, cache_dir=tmp_path / "cache")
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert xt.shape == (10, 32, 32, 3)
    assert y.dtype == np.uint8 and y.shape == (20,)
    assert y.tolist() == [c for c in range(10) for _ in range(2)]
    assert yt.tolist() == list(range(10))
    for i in range(20):
        np.testing.assert_array_equal(x[i], _image(y[i], i % 2))


def test_archive_with_top_folder_matches_folder_and_is_cached(tmp_path, monkeypatch):
    folder = _make_folder(tmp_path / "cifar", per_class=(3, 2), ext="jpg")
    archive = _tar(folder, tmp_path / "cifar10-jpeg.tar.gz", arcname="cifar10")
    cache = tmp_path / "cache"
    (x, y), (xt, yt) = load_cifar10(str(archive), cache_dir=cache)
    (fx, fy), (fxt, fyt) = load_cifar10(folder, cache_dir=cache)
    np.testing.assert_array_equal(x, fx)  # same decoder, same bytes
    np.testing.assert_array_equal(y, fy)
    np.testing.assert_array_equal(yt, fyt)
    # JPEG is lossy, but the label-coded red channel survives closely
    assert np.abs(x[..., 0].astype(int).mean(axis=(1, 2)) - 20 * y).max() < 4
    assert len(list(cache.glob("cifar10-*.npz"))) == 2

    def fail(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar_data, "_decode", fail)
    (x2, y2), _ = load_cifar10(archive, cache_dir=cache)
    np.testing.assert_array_equal(x2, x)


def test_changed_archive_is_decoded_again(tmp_path):
    folder = _make_folder(tmp_path / "cifar")
    archive = _tar(folder, tmp_path / "c.tar.gz")
    cache = tmp_path / "cache"
    load_cifar10(archive, cache_dir=cache)
    extra = folder / "train" / "cat" / "0099.png"
    Image.fromarray(_image(3, 99)).save(extra)
    _tar(folder, archive)
    os.utime(archive, ns=(1, 10**18))  # make sure the stat key differs
    (x, y), _ = load_cifar10(archive, cache_dir=cache)
    assert len(x) == 21 and (y == 3).sum() == 3


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*'keras'"):
        load_cifar10(tmp_path / "nope.tar.gz")


def test_not_an_archive(tmp_path):
    f = tmp_path / "data.zip"
    f.write_bytes(b"PK")
    with pytest.raises(ValueError, match="not an archive"):
        load_cifar10(f)


def test_wrong_layout_names_what_was_found(tmp_path):
    (tmp_path / "imgs" / "airplane").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"found: imgs/"):
        load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    archive = tmp_path / "flat.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "imgs", arcname="imgs")
    with pytest.raises(ValueError, match=r"top-level entries: imgs/"):
        load_cifar10(archive, cache_dir=tmp_path / "cache")


def test_missing_and_unexpected_classes(tmp_path):
    classes = list(CIFAR10_CLASSES[:9]) + ["lorry"]
    folder = _make_folder(tmp_path / "c", per_class=(1, 1), classes=classes)
    with pytest.raises(ValueError, match=r"missing: \['truck'\]; unexpected: \['lorry'\]"):
        load_cifar10(folder, cache_dir=tmp_path / "cache")


def test_wrong_image_size(tmp_path):
    folder = _make_folder(tmp_path / "c", per_class=(1, 1))
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(folder / "test" / "dog" / "0000.png")
    with pytest.raises(ValueError, match=r"test/dog/0000.png .* is 28x28"):
        load_cifar10(folder, cache_dir=tmp_path / "cache")


def test_grey_images_become_rgb_and_stray_files_are_ignored(tmp_path):
    folder = _make_folder(tmp_path / "c", per_class=(1, 1))
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(folder / "train" / "cat" / "0000.png")
    (folder / "train" / "README.txt").write_text("not an image")
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"")
    (x, y), _ = load_cifar10(folder, cache_dir=tmp_path / "cache")
    assert len(x) == 10
    np.testing.assert_array_equal(x[y == 3][0], np.full((32, 32, 3), 7, np.uint8))


def test_make_dataset_eval_normalises_exactly():
    x = np.stack([_image(c, c) for c in range(5)])
    y = np.arange(5)
    ds = make_dataset(x, y, batch_size=2, training=False)
    xb, yb = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    xs, ys = np.concatenate(xb), np.concatenate(yb)
    assert xs.dtype == np.float32 and xs.shape == (5, 32, 32, 3)
    expected = (x / 255.0 - np.array(cifar.CIFAR10_MEAN)) / np.array(cifar.CIFAR10_STD)
    np.testing.assert_allclose(xs, expected, atol=1e-5)
    assert ys.tolist() == list(range(5))  # no shuffling at test time
    raw = np.concatenate([a.numpy() for a, _ in make_dataset(x, y, 5, False, mean=None, std=None)])
    np.testing.assert_allclose(raw, x / 255.0, atol=1e-6)


def test_make_dataset_training_keeps_labels_with_images():
    x = np.stack([np.full((32, 32, 3), 10 * c, np.uint8) for c in range(20)])
    y = np.arange(20)
    ds = make_dataset(x, y, batch_size=8, training=True, augment=False, mean=None, std=None,
                      seed=1)
    seen = []
    for xb, yb in ds:
        values = np.round(xb.numpy()[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(values, 10 * yb.numpy())
        seen += yb.numpy().tolist()
    assert sorted(seen) == list(range(20)) and seen != list(range(20))


def test_cifar_augment_is_a_padded_crop_or_its_mirror():
    x = np.stack([_image(c, 3 * c) for c in range(6)])
    out = cifar_augment(x, seed=3).numpy()
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    for i in range(len(x)):
        crops = [padded[i, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        crops += [c[:, ::-1] for c in crops]
        assert any(np.array_equal(out[i], c) for c in crops)
    single = cifar_augment(x[0], pad=0, flip=False).numpy()
    np.testing.assert_array_equal(single, x[0])
    many = np.stack([cifar_augment(x, seed=None).numpy() for _ in range(5)])
    assert not all(np.array_equal(many[0], m) for m in many[1:])  # random per call


def test_make_dataset_bad_arguments():
    x = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="4 images but y has 3"):
        make_dataset(x, np.zeros(3), 2, True)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        make_dataset(x[0], None, 2, True)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(x, None, 0, True)
    with pytest.raises(ValueError, match="both mean and std"):
        make_dataset(x, None, 2, True, std=None)
    with pytest.raises(ValueError, match=r"engine must be one of .*'numpy'.*got 'torch'"):
        make_dataset(x, None, 2, True, engine="torch")


def _batches(ds):
    """(images, labels) of one pass over a tf.data or PyDataset pipeline, as NumPy."""
    if isinstance(ds, NumpyBatches):
        pairs = [ds[i] for i in range(len(ds))]
    else:
        pairs = [(a.numpy(), b.numpy()) for a, b in ds]
    return np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])


@pytest.mark.backend_agnostic
def test_numpy_engine_matches_tf_data_without_augmentation():
    x = np.random.default_rng(0).integers(0, 256, (23, 32, 32, 3)).astype(np.uint8)
    y = np.arange(23) % 10
    got = make_dataset(x, y, 5, False, engine="numpy")
    assert len(got) == 5 and len(make_dataset(x, y, 5, False, engine="numpy",
                                              drop_remainder=True)) == 4
    xs, ys = _batches(got)
    expected = (x / 255.0 - np.array(cifar.CIFAR10_MEAN)) / np.array(cifar.CIFAR10_STD)
    np.testing.assert_allclose(xs, expected, atol=1e-5)
    assert xs.dtype == np.float32 and ys.dtype == np.int32 and ys.tolist() == y.tolist()
    pytest.importorskip("tensorflow")
    ref, ref_y = _batches(make_dataset(x, y, 5, False, engine="tf.data"))
    np.testing.assert_allclose(xs, ref, atol=1e-6)
    assert ref_y.tolist() == ys.tolist()


@pytest.mark.backend_agnostic
def test_numpy_engine_shuffles_and_augments_per_epoch_reproducibly():
    x = np.stack([_image(c, 3 * c) for c in range(10)] * 2)
    y = np.arange(20)
    ds = make_dataset(x, y, 8, True, mean=None, std=None, seed=4, engine="numpy")
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    epochs = []
    for _ in range(2):
        xs, ys = _batches(ds)
        assert sorted(ys.tolist()) == list(range(20))  # each image once per epoch
        for img, label in zip(np.round(xs * 255).astype(np.uint8), ys):
            crops = [padded[label, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
            assert any(np.array_equal(img, c) or np.array_equal(img, c[:, ::-1]) for c in crops)
        epochs.append((xs, ys))
        ds.on_epoch_end()
    assert epochs[0][1].tolist() != epochs[1][1].tolist()  # reshuffled
    again = make_dataset(x, y, 8, True, mean=None, std=None, seed=4, engine="numpy")
    np.testing.assert_array_equal(_batches(again)[0], epochs[0][0])  # same seed, same batches
    assert again[1][0].shape == (8, 32, 32, 3)
    with pytest.raises(IndexError, match="batch 3 of 3"):
        again[3]


@pytest.mark.backend_agnostic
def test_numpy_engine_trains_a_model():
    import keras

    x = np.random.default_rng(1).integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    y = np.arange(32) % 2
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(make_dataset(x, y, 8, True, seed=0, engine="numpy"), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()

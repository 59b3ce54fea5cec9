"""keras_slim.export.load_calibration: arrays and image directories -> model inputs."""
import sys

import keras
import numpy as np
import pytest

from keras_slim.errors import ArgumentError, MissingDependencyError, SlimError
from keras_slim.export import load_calibration

PIL = pytest.importorskip("PIL.Image")


def _model(shape=(8, 8, 3), name="pixels"):
    inp = keras.Input(shape, name=name)
    return keras.Model(inp, keras.layers.Conv2D(2, 3)(inp))


def _two_inputs():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    return keras.Model([a, b], keras.layers.Concatenate()([a, b]))


@pytest.fixture
def images(tmp_path):
    """Three PNGs of different sizes in nested folders, plus a non-image file."""
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "b").mkdir(parents=True)
    paths = [tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b" / "c.png",
             tmp_path / "imgs" / "b" / "d.PNG"]
    for path, size in zip(paths, [(8, 8), (12, 10), (6, 9)]):
        PIL.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs", paths


def test_images_are_resized_scaled_and_sorted(images):
    directory, paths = images
    (x,) = load_calibration(directory, _model(), count=10)
    assert x.shape == (3, 8, 8, 3) and x.dtype == np.float32
    # sorted by path: a.png, b/c.png, b/d.PNG; a.png is already 8x8, so exact
    assert np.array_equal(x[0] * 255.0, np.asarray(PIL.open(paths[0]), np.float32))
    assert 0.0 <= x.min() and x.max() <= 1.0
    (two,) = load_calibration(str(directory), _model(), count=2)
    np.testing.assert_array_equal(two, x[:2])


def test_scale_mean_and_std(images):
    directory, _ = images
    (unit,) = load_calibration(directory, _model(), count=3)
    (signed,) = load_calibration(directory, _model(), count=3, scale="signed",
                                 mean=[0.5], std=[2.0])
    np.testing.assert_allclose(signed, ((unit * 2.0 - 1.0) - 0.5) / 2.0, atol=1e-6)
    (raw,) = load_calibration(directory, _model(), count=3, scale="raw",
                              mean=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(raw, unit * 255.0 - np.array([1.0, 2.0, 3.0]), atol=1e-4)


def test_grayscale_model_gets_one_channel(images):
    directory, paths = images
    (x,) = load_calibration(directory, _model((8, 8, 1)), count=1)
    assert x.shape == (1, 8, 8, 1)
    expected = np.asarray(PIL.open(paths[0]).convert("L"), np.float32) / 255.0
    np.testing.assert_allclose(x[0, ..., 0], expected, atol=1e-6)


def test_npy_and_npz_arrays(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.uniform(size=(5, 8, 8, 3)))
    (x,) = load_calibration(tmp_path / "x.npy", _model(), count=4)
    assert x.shape == (4, 8, 8, 3) and x.dtype == np.float32
    np.savez(tmp_path / "one.npz", anything=rng.uniform(size=(2, 8, 8, 3)))
    assert load_calibration(tmp_path / "one.npz", _model(), count=9)[0].shape == (2, 8, 8, 3)
    np.savez(tmp_path / "two.npz", b=np.ones((3, 3)), a=np.zeros((3, 4)))
    a, b = load_calibration(tmp_path / "two.npz", _two_inputs(), count=9)
    assert a.shape == (3, 4) and b.shape == (3, 3) and not a.any() and b.all()


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda d: d / "missing.npy", {}, "no such file or directory"),
    (lambda d: _save(d / "wrong.npy", np.zeros((2, 5, 5, 3))), {},
     "has shape (2, 5, 5, 3), the model wants (N,) + (8, 8, 3)"),
    (lambda d: _save(d / "x.npy", np.zeros((2, 8, 8, 3))), {"scale": "raw"},
     "scale/mean/std apply to image directories"),
    (lambda d: _save(d / "junk.npy", b"not numpy"), {}, "cannot read it as a numpy file"),
    (lambda d: d, {"scale": "bogus"}, "scale='bogus' is not supported"),
])
def test_bad_arrays_raise_argument_error(tmp_path, make, kwargs, message):
    source = make(tmp_path)
    with pytest.raises(ArgumentError) as info:
        load_calibration(source, _model(), count=4, **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, (SlimError, ValueError))


def test_npz_needs_one_array_per_input_name(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 4)))
    with pytest.raises(ArgumentError, match=r"expected one per model input named \['a', 'b'\] "
                                            r"\(missing \['b'\]\)"):
        load_calibration(tmp_path / "x.npz", _two_inputs(), count=2)


def test_image_directory_errors(images, tmp_path):
    directory, _ = images
    with pytest.raises(ArgumentError, match="single-input model"):
        load_calibration(directory, _two_inputs(), count=2)
    with pytest.raises(ArgumentError, match="not fixed"):
        load_calibration(directory, _model((None, None, 3)), count=2)
    with pytest.raises(ArgumentError, match="images give 1 or 3 channels, the model wants 4"):
        load_calibration(directory, _model((8, 8, 4)), count=2)
    with pytest.raises(ArgumentError, match="mean takes 1 or 3 value"):
        load_calibration(directory, _model(), count=2, mean=[0.1, 0.2])
    with pytest.raises(ArgumentError, match="std must not contain 0"):
        load_calibration(directory, _model(), count=2, std=[0.0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArgumentError, match="no images found"):
        load_calibration(tmp_path / "empty", _model(), count=2)
    (directory / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ArgumentError, match="broken.png"):
        load_calibration(directory, _model(), count=10)


def test_argument_names_word_the_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3)))
    names = {"source": "--calib", "scale": "--calib-scale", "mean": "--calib-mean",
             "std": "--calib-std"}
    with pytest.raises(ArgumentError, match="^--calib-scale/--calib-mean/--calib-std apply"):
        load_calibration(tmp_path / "x.npy", _model(), 2, mean=[1.0], argument_names=names)
    with pytest.raises(ArgumentError, match="^--calib '.*nope.npy': no such file"):
        load_calibration(tmp_path / "nope.npy", _model(), 2, argument_names=names)


def test_missing_pillow_is_a_missing_dependency(images, monkeypatch):
    directory, _ = images
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'keras-slim\[data\]'"):
        load_calibration(directory, _model(), count=2)


def _save(path, data):
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        np.save(path, data)
    return path

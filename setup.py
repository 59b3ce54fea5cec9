"""keras_slim: Network Slimming (channel pruning) for Keras 3 and tf_keras."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "keras_slim" / "version.py").read_text()
).group(1)

# TensorFlow is an extra, not a requirement: the core (bn_l1, plan, prune, sensitivity,
# training aids) runs on any Keras 3 backend and never imports it. What needs it pulls it:
# export (the TFLite converter and tf2onnx read a TF SavedModel), qat (tf_keras and TFMOT
# are TF), examples (the quickstart runs on the default backend, TensorFlow).
TENSORFLOW = ["tensorflow>=2.16"]
JAX = ["jax>=0.4.28"]  # the accelerator build is the user's choice: jax[cuda12], jax[tpu]
EXPORT = TENSORFLOW + ["ai-edge-litert>=1.2", "tf2onnx>=1.16", "onnx>=1.16",
                       "onnxruntime>=1.18"]
# ncnn and MNN read the ONNX file export_onnx writes, so they add to `export`. The ONNX ->
# ncnn converter, pnnx, is no requirement: its wheel declares torch (several GB with CUDA),
# which converting ONNX never uses; install it with `pip install --no-deps pnnx` (.ci/run
# does). Minimums are the versions tested.
NCNN = ["ncnn>=1.0.20261020"]
MNN = ["MNN>=3.6"]
PLOTS = ["matplotlib>=3.7"]
QAT = TENSORFLOW + ["tf-keras>=2.16", "tensorflow-model-optimization>=0.8"]
DATA = ["pillow>=9"]
EXAMPLES = ["scikit-learn>=1.3"]
KERAS_HUB_IMPORTS = ["regex", "kagglehub", "tokenizers", "sentencepiece"]

setup(
    name="keras-slim",
    version=VERSION,
    description="Network Slimming for Keras: BN-scale sparsity training and exact "
    "channel pruning that rebuilds a physically smaller model.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # Every folder under keras_slim/ needs an __init__.py or find_packages skips it
    # (tests/test_packaging.py checks the wheel against the source tree).
    packages=find_packages(include=["keras_slim", "keras_slim.*"]),
    package_data={"keras_slim": ["py.typed"]},  # PEP 561: ship the inline type hints
    python_requires=">=3.10",
    install_requires=["keras>=3.3", "numpy>=1.24"],
    extras_require={
        "tensorflow": TENSORFLOW,
        "jax": JAX,
        "export": EXPORT,
        "ncnn": EXPORT + NCNN,
        "mnn": EXPORT + MNN,
        "plots": PLOTS,
        "qat": QAT,
        "data": DATA,
        "examples": TENSORFLOW + EXAMPLES + DATA,
        "all": sorted(set(EXPORT + NCNN + MNN + PLOTS + QAT + DATA + EXAMPLES)),
        # keras-hub and pnnx are installed with --no-deps by .ci/run (see there); jax[cpu]
        # for the suite's second pass on KERAS_BACKEND=jax (.ci/run, tests/test_backends.py)
        "test": sorted(set(EXPORT + NCNN + MNN + PLOTS + QAT + DATA + EXAMPLES
                           + KERAS_HUB_IMPORTS))
        + ["jax[cpu]>=0.4.28", "pytest>=7", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["keras-slim=keras_slim.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

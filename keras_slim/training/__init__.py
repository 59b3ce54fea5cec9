"""Training aids for Network Slimming, built on the core (`keras_slim.plan` / `prune`).

* `SparsityMonitor`: a Keras callback recording the |gamma| distribution per
  epoch (`callbacks`);
* `collect_gammas`, `gamma_statistics`: the one gamma-statistics module
  (`stats`), also used by ``keras-slim inspect``;
* `plots`: PNG figures (gamma distribution, channels per layer, accuracy vs
  ratio; matplotlib is the ``plots`` extra);
* `slim_multipass`, `MultiPassResult`, `PassRecord`: prune a little,
  fine-tune, repeat (`multipass`);
* `cifar`: the reference CIFAR-10 recipe (data, models, the training
  pipeline of ``examples/cifar10_*.py``); import it as
  ``from keras_slim.training import cifar``.

The core never imports this package.
"""
from keras_slim.training import plots
from keras_slim.training.callbacks import SparsityMonitor
from keras_slim.training.multipass import slim_multipass
from keras_slim.training.multipass_result import STOP_REASONS, MultiPassResult, PassRecord
from keras_slim.training.stats import DEFAULT_BIN_EDGES, collect_gammas, gamma_statistics

__all__ = [
    "DEFAULT_BIN_EDGES", "MultiPassResult", "PassRecord", "STOP_REASONS", "SparsityMonitor",
    "collect_gammas", "gamma_statistics", "plots", "slim_multipass",
]

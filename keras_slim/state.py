"""PruneState: what a plan decided, in the form the rebuild (surgery, folding) reads.

`plan` makes it (graph, coupling, kept channel positions per tensor); `prune`
hands it to `surgery.rebuild` and `constants.folds`. It is tied to the model
the plan was made from and never serialized (a saved plan is `Plan.kept`).
"""
from __future__ import annotations

import dataclasses

from keras_slim.coupling import Coupling
from keras_slim.graph import FlatCall, FlatGraph


@dataclasses.dataclass
class PruneState:
    """The decided plan: per tensor, the positions of the channels that stay."""

    model: object  # the model the plan was made from (a subclassed one: graph.model is its trace)
    graph: FlatGraph
    coupling: Coupling
    keep: dict  # tensor key -> np.ndarray of kept positions
    mac_shapes: dict | None = None  # tensor key -> shape at the MAC input size (None: graph's)
    macs_uncounted: list = dataclasses.field(default_factory=list)  # filled by the report
    weights_digest: int | None = None  # the model's weights when planned (_keras.weights_digest)
    custom_handlers: object = None  # as given to plan, for a replay against changed weights

    def keeps(self, call: FlatCall) -> tuple[list, list]:
        """Kept positions of each input and output of a call (None: no channel axis)."""
        return ([self.keep.get(k) for k in call.inputs], [self.keep.get(k) for k in call.outputs])

"""Property: on random graphs, pruning dead channels never changes outputs."""
import os
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_slim import testing

EXAMPLES = int(os.environ.get("KERAS_SLIM_PROPERTY_EXAMPLES", "25"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.2, 0.5, 0.8]))
def test_random_graphs_prune_exactly(seed, fraction):
    model = testing.random_model(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff, plan, small = testing.check_exact(model, fraction=fraction, seed=seed)
    assert diff < 1e-4, f"seed {seed}: outputs differ by {diff} (replay: testing.random_model({seed}))"
    assert small.count_params() >= plan.params_after  # folding may add a bias

"""The protocol trains a split model exactly like the whole model (tiny numpy nets, no PanGu)."""
import numpy as np
import pytest

from tests.protocol.tiny_split import reference, split_run

STEPS = 6


def test_split_equals_the_whole_model():
    split, whole = split_run(STEPS), reference(STEPS)
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
    for name, value in whole["weights"].items():
        np.testing.assert_allclose(split["weights"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert split["loop"].completed == STEPS


@pytest.mark.parametrize("poison", ["weights", "unsendable"])
def test_follower_overflow_skips_the_step_on_both_parties(poison):
    """Overflow at the follower in step 3 -- an Inf in its own gradient, or a gradient for the leader
    the wire cannot carry (then the leader's gradients and every squared norm are finite: only the
    follower's overflow flag tells) -- both skip step 3 and halve the loss scale, as the whole model
    does when step 3 overflows."""
    split, whole = split_run(STEPS, poison_step=3, poison=poison), reference(STEPS, overflow_at=3)
    assert split["leader_scale"] == split["follower_scale"] == whole["scale"] == 512.0
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
    for name, value in whole["weights"].items():
        assert np.isfinite(split["weights"][name]).all(), name
        np.testing.assert_allclose(split["weights"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_through_the_codec_too():
    """wire=True: every message is encoded and decoded as the communicator would."""
    pytest.importorskip("mindspore")
    split, whole = split_run(3, wire=True), reference(3)
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)

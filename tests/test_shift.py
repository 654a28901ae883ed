"""Algorithm 1 (the MAT shift) against hand-computed values."""
import math

import pytest
import torch

from mat.shift import calibrated_held_out_probabilities, held_out_joint, memorization_aware_shift


def test_two_class_example_by_hand():
    # tau = 1 and logits log(p) so that softmax gives p(y_ho | x) exactly
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = torch.tensor([0, 1, 1, 0])
    joint = held_out_joint(p.log(), y, tau=1.0)
    # p(y=0, y_ho) = (row0 + row3) / 4, p(y=1, y_ho) = (row1 + row2) / 4
    expected_joint = torch.tensor([[1.3 / 4, 0.7 / 4], [1.1 / 4, 0.9 / 4]], dtype=torch.float64)
    assert torch.allclose(joint, expected_joint)
    # p(y | y_ho): columns normalised: col0 = [1.3, 1.1] / 2.4, col1 = [0.7, 0.9] / 1.6
    y_given_y_ho = torch.tensor([[1.3 / 2.4, 0.7 / 1.6], [1.1 / 2.4, 0.9 / 1.6]], dtype=torch.float64)
    expected = p.double() @ y_given_y_ho.T
    calibrated = calibrated_held_out_probabilities(p.log(), y, tau=1.0)
    assert torch.allclose(calibrated, expected)
    assert calibrated[0, 0].item() == pytest.approx(0.9 * 1.3 / 2.4 + 0.1 * 0.7 / 1.6)
    shift = memorization_aware_shift(p.log(), y, tau=1.0)
    assert shift.dtype == torch.float32 and shift.shape == (4, 2)
    assert torch.allclose(shift.exp().sum(dim=1), torch.ones(4), atol=1e-6)
    assert shift[0, 0].item() == pytest.approx(math.log(0.9 * 1.3 / 2.4 + 0.1 * 0.7 / 1.6), rel=1e-6)


def test_temperature_sharpens_held_out_predictions():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    # tau -> 0 makes p(y_ho|x) one-hot: the calibrated table becomes the identity here
    calibrated = calibrated_held_out_probabilities(logits, y, tau=0.001)
    assert torch.allclose(calibrated, torch.eye(2, dtype=torch.float64), atol=1e-9)


def test_shift_is_finite_at_small_tau_and_for_a_never_predicted_class():
    # three classes; the held-out model never predicts class 2 and is extremely confident
    logits = torch.tensor([[50.0, 0.0, -50.0], [0.0, 50.0, -50.0], [50.0, 0.0, -50.0], [0.0, 40.0, -60.0]])
    y = torch.tensor([0, 1, 2, 2])
    shift = memorization_aware_shift(logits, y, tau=0.001)
    assert torch.isfinite(shift).all()
    probabilities = shift.double().exp()
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-6)
    # example 0 is predicted class 0; among examples predicted 0, half are class 0 and half class 2
    assert probabilities[0, 0].item() == pytest.approx(0.5, abs=1e-6)
    assert probabilities[0, 2].item() == pytest.approx(0.5, abs=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="tau must be positive"):
        memorization_aware_shift(torch.zeros(2, 2), torch.tensor([0, 1]), tau=0.0)
    with pytest.raises(ValueError, match="held-out logits must be"):
        memorization_aware_shift(torch.zeros(3, 2), torch.tensor([0, 1]), tau=0.1)

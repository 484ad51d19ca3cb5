"""opensora_core.eval.frechet against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from opensora_core.eval.frechet import frechet_distance, gaussian


def test_diagonal_gaussians_match_the_closed_form():
    # N(m1, diag(a)) vs N(m2, diag(b)): |m1 - m2|^2 + sum(a + b - 2 sqrt(a b))
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1.0 + 0.0 + 4.0 + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_rotated_covariances_and_identity():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s = q @ np.diag([1.0, 2.0, 3.0, 4.0]) @ q.T
    assert frechet_distance(np.zeros(4), s, np.zeros(4), s) == pytest.approx(0.0, abs=1e-8)
    # scaled copy: tr(S + c^2 S - 2 c S) = (1 - c)^2 tr(S)
    assert frechet_distance(np.zeros(4), s, np.ones(4), 9 * s) == pytest.approx(4 + 4 * 10.0, rel=1e-8)


def test_sample_statistics_converge_to_the_population_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal(3.0, 2.0, size=(20000, 2))
    d = frechet_distance(*gaussian(x), *gaussian(y))
    assert d == pytest.approx(2 * 9 + 2 * (1 + 4 - 4), rel=0.03)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))

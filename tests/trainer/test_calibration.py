"""Sigma-vs-error report: rank correlation, bins, visibility mask."""
import json
import math

import numpy as np
import pytest

from trainer.metrics.calibration import average_ranks, calibration_table, pearson, spearman


def test_monotone_relation_gives_spearman_one():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 20, 1000)
    report = calibration_table(sigma, 3 * sigma ** 2)  # monotone, not linear
    assert report.spearman == pytest.approx(1.0, abs=1e-12)
    assert 0.5 < report.pearson < 0.999
    assert calibration_table(sigma, 2 * sigma).pearson == pytest.approx(1.0, abs=1e-12)
    medians = [b.error_median for b in report.bins]
    assert medians == sorted(medians)


def test_independent_data_gives_near_zero_correlation():
    rng = np.random.default_rng(1)
    report = calibration_table(rng.uniform(1, 5, 20000), rng.exponential(3.0, 20000))
    assert abs(report.spearman) < 0.03 and abs(report.pearson) < 0.03


def test_bins_counts_and_statistics():
    sigma = np.arange(1.0, 11.0)
    report = calibration_table(sigma, sigma, bins=5)
    assert [b.count for b in report.bins] == [2] * 5
    assert report.bins[0].sigma_lo == 1.0 and report.bins[0].sigma_hi == 2.0
    assert report.bins[0].error_median == pytest.approx(1.5)
    assert report.bins[4].error_p90 == pytest.approx(9.0 + 0.9)  # linear interpolation between 9 and 10
    assert all(b.ratio_median == pytest.approx(1.0) for b in report.bins)
    rng = np.random.default_rng(2)
    sigma, error = np.round(rng.uniform(0, 3, 503), 1), rng.uniform(0, 10, 503)  # many ties
    visible = rng.uniform(size=503) > 0.3
    masked = calibration_table(sigma, error, bins=7, visible=visible)
    assert sum(b.count for b in masked.bins) == masked.num_points == visible.sum()
    assert sum(b.count for b in calibration_table(sigma, error, bins=5).bins) == 503
    json.dumps(masked.to_dict())
    assert "Spearman" in masked.format_table()


def test_average_ranks_and_spearman_with_ties_by_hand():
    np.testing.assert_allclose(average_ranks(np.array([10, 20, 20, 30])), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 3.0])), [3, 1, 3, 3])
    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]: sum(dx dy) = 4.5, sum dx² = 4.5, sum dy² = 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_errors_are_one_line():
    with pytest.raises(ValueError, match="differ in length"):
        calibration_table(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        calibration_table(np.array([1.0, np.nan]), np.ones(2))

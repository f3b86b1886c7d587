"""How well RLE's predicted sigma ranks the actual keypoint error.

RLE's ``sigma`` is the scale of a learned residual distribution (the flow reshapes a Laplace base),
not a calibrated standard deviation: nothing says that ~68% of errors fall within one sigma. What
it can still be is a *ranking* of difficulty. This module reports that: joints binned by sigma
quantiles, the error distribution per bin, and the Spearman (rank) and Pearson correlations between
sigma and error. Sigma and error must share one unit (image pixels, or both divided by box size).
Pure numpy; Spearman uses average ranks for ties (as ``scipy.stats.spearmanr``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CalibrationBin:
    """One sigma-quantile bin: sigma range [sigma_lo, sigma_hi], count, error statistics."""

    sigma_lo: float
    sigma_hi: float
    count: int
    sigma_median: float
    error_median: float
    error_p90: float
    ratio_median: float  # median of error / sigma; constant across bins if sigma were a calibrated scale


@dataclass(frozen=True)
class CalibrationReport:
    """Per-bin table plus overall correlations between sigma and error over ``num_points`` joints."""

    bins: tuple[CalibrationBin, ...]
    spearman: float
    pearson: float
    num_points: int
    unit: str = "px"

    def to_dict(self) -> dict:
        """JSON-ready dict; non-finite correlations (constant input) become None."""
        return {"spearman": _finite_or_none(self.spearman), "pearson": _finite_or_none(self.pearson),
                "num_points": self.num_points, "unit": self.unit,
                "bins": [asdict(b) for b in self.bins]}

    def format_table(self) -> str:
        """Aligned per-bin rows (sigma range, count, error median / p90, median error/sigma)."""
        header = (f"{'sigma range (' + self.unit + ')':<24}{'count':>8}{'err med':>10}"
                  f"{'err p90':>10}{'err/sigma':>11}")
        rows = [f"{f'{b.sigma_lo:.4g} - {b.sigma_hi:.4g}':<24}{b.count:8d}{b.error_median:10.4g}"
                f"{b.error_p90:10.4g}{b.ratio_median:11.3g}" for b in self.bins]
        footer = (f"Spearman {self.spearman:.3f}  Pearson {self.pearson:.3f}  "
                  f"({self.num_points} visible joints)")
        return "\n".join([header, *rows, footer])


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks (M,) of a 1-D array; tied values share the mean of their ranks."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.concatenate([[0], np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(x)]])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (M,) arrays; NaN if either is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the average ranks; NaN if either is constant."""
    return pearson(average_ranks(x), average_ranks(y))


def calibration_table(sigma: np.ndarray, error: np.ndarray, bins: int = 5,
                      visible: np.ndarray | None = None, unit: str = "px") -> CalibrationReport:
    """Bin joints by sigma quantiles and relate sigma to the actual error.

    Args:
        sigma: (M,) predicted sigma per joint (e.g. the mean of its x and y sigma), in ``unit``.
        error: (M,) Euclidean distance of the prediction to the ground truth, same unit.
        bins: number of sigma-quantile bins; bins left empty by tied sigmas are dropped.
        visible: optional (M,) bool mask; only visible ground-truth joints should be scored.
        unit: the unit's name for the table (``"px"`` or ``"box"``).
    Returns:
        CalibrationReport; the counts of its bins sum to the number of joints scored.
    """
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    error = np.asarray(error, dtype=np.float64).reshape(-1)
    if sigma.shape != error.shape:
        raise ValueError(f"calibration_table: sigma {sigma.shape} and error {error.shape} differ in length")
    if visible is not None:
        keep = np.asarray(visible, dtype=bool).reshape(-1)
        sigma, error = sigma[keep], error[keep]
    if len(sigma) < 2 or bins < 1:
        raise ValueError(f"calibration_table: need at least 2 joints and 1 bin, got {len(sigma)} and {bins}")
    if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(error))):
        raise ValueError("calibration_table: sigma and error must be finite")
    edges = np.quantile(sigma, np.linspace(0.0, 1.0, bins + 1))
    index = np.clip(np.searchsorted(edges[1:-1], sigma, side="right"), 0, bins - 1)
    table = tuple(_bin_stats(sigma[index == b], error[index == b])
                  for b in range(bins) if np.any(index == b))
    return CalibrationReport(bins=table, spearman=spearman(sigma, error), pearson=pearson(sigma, error),
                             num_points=len(sigma), unit=unit)


def _bin_stats(sigma: np.ndarray, error: np.ndarray) -> CalibrationBin:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.median(error / sigma))
    return CalibrationBin(sigma_lo=float(sigma.min()), sigma_hi=float(sigma.max()), count=len(sigma),
                          sigma_median=float(np.median(sigma)), error_median=float(np.median(error)),
                          error_p90=float(np.percentile(error, 90)), ratio_median=ratio)

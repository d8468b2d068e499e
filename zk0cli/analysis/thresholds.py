"""Thresholds of the anomaly detectors, with their documented defaults.

Counts of "evaluations" are counted over the rounds that have a finite server composite
eval loss (round 0 included), in round order. Relative amounts are fractions (0.05 = 5%).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AnalysisThresholds(BaseModel):
    """When a detector reports a finding. Defaults are documented in docs/analyze-run.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    divergence_rises: int = Field(
        3, ge=1, description="Divergence: server composite loss rises this many consecutive "
        "evaluations."
    )
    divergence_min_rise: float = Field(
        0.10, ge=0.0, description="Divergence: a rising stretch is an error only when its "
        "last loss is at least this fraction above its first (smaller steady rises are "
        "reported as a warning: early-round noise of a small eval set looks like that)."
    )
    divergence_ratio: float = Field(
        2.0, gt=1.0, description="Divergence: server composite loss above this multiple of "
        "the best loss so far."
    )
    stall_window: int = Field(
        5, ge=2, description="Stall: this many consecutive evaluations without a new best."
    )
    stall_min_improvement: float = Field(
        0.01, ge=0.0, description="Stall: a new best must be this fraction below the old best."
    )
    outlier_std: float = Field(
        2.0, gt=0.0, description="Outlier client: loss above mean + this many std of the "
        "other clients' losses in the round."
    )
    outlier_min_excess: float = Field(
        0.25, ge=0.0, description="Outlier client: and at least this fraction above the other "
        "clients' mean (so near-identical clients are not flagged)."
    )
    outlier_min_clients: int = Field(
        3, ge=3, description="Outlier client: only rounds with at least this many clients."
    )
    gap_window: int = Field(
        3, ge=2, description="Generalisation gap: evaluations in the window compared first "
        "to last."
    )
    gap_min_change: float = Field(
        0.05, ge=0.0, description="Generalisation gap: client training loss falls and server "
        "loss rises each by at least this fraction over the window."
    )
    zero_tolerance: float = Field(
        0.0, ge=0.0, description="Zeroed metric: |value| <= this counts as zero for a loss or "
        "norm that should be positive."
    )
    verify_checksums: bool = Field(
        True, description="Incomplete checkpoint: hash every file against manifest.json "
        "(sizes are always checked)."
    )

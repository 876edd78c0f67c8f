"""Sufficient statistics of requests, in a module of their own: every command that lists
serving metrics needs them, and importing them must not import the statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Moments:
    """Sufficient statistics of requests: count, errors, sums and sums of squares."""

    n: int = 0
    errors: int = 0
    confidence_sum: float = 0.0
    confidence_sum_squares: float = 0.0
    time_sum: float = 0.0
    time_sum_squares: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def avg_confidence(self) -> float:
        return self.confidence_sum / self.n if self.n else 0.0

    @property
    def avg_inference_time_ms(self) -> float:
        return self.time_sum / self.n if self.n else 0.0

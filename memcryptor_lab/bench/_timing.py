"""Timing primitives: warm-up, calibrated samples, order statistics. No assertions here."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Samples:
    """Per-operation times in seconds, one per sample (a sample may batch `inner` ops)."""

    seconds: tuple[float, ...]
    inner: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        if len(ordered) == 1:
            return ordered[0]
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def calibrate(op: Callable[[], object], min_sample_s: float) -> int:
    """How many calls make one sample last at least `min_sample_s` (timer noise stays small)."""
    inner = 1
    while True:
        started = time.perf_counter()
        for _ in range(inner):
            op()
        elapsed = time.perf_counter() - started
        if elapsed >= min_sample_s or inner >= 1 << 20:
            return inner
        inner *= 2 if elapsed * 4 >= min_sample_s else 8


def measure(
    op: Callable[[], object], *, samples: int, warmup: int = 3, min_sample_s: float = 0.0
) -> Samples:
    """Time `op`. With min_sample_s=0 every call is its own sample (for p99 latencies)."""
    for _ in range(warmup):
        op()
    inner = calibrate(op, min_sample_s) if min_sample_s > 0 else 1
    times = []
    clock = time.perf_counter
    for _ in range(samples):
        started = clock()
        for _ in range(inner):
            op()
        times.append((clock() - started) / inner)
    return Samples(tuple(times), inner)

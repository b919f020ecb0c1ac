"""Shared timing helper of the micro-benchmarks."""
import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call
    (page faults and lazy imports are not the steady state)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steps_per_second(records, warmup: int) -> float:
    """Training steps per second from a loss log (records with ``step`` and ``elapsed_s``),
    over the steps after the first ``warmup`` (compilation, caches)."""
    timed = [r for r in records if r["step"] > warmup]
    start = next(r["elapsed_s"] for r in records if r["step"] == warmup) if warmup else 0.0
    return len(timed) / max(timed[-1]["elapsed_s"] - start, 1e-9)

"""Side-by-side timing: candidates alternate, medians of repeats after warm-up.

Used by the benchmark scripts and the profiler.  Each candidate is a callable
with no arguments.  Every round calls each candidate ``number`` times in a
row (``number`` chosen in warm-up so that one sample lasts about
``target_seconds``), in an order that alternates between rounds, so that a
slow phase of a shared machine hits all candidates alike.
"""

import statistics
import time


def _calibrate(fn, target_seconds):
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target_seconds or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * target_seconds / max(elapsed, 1e-9)))


def compare(candidates, repeats=7, target_seconds=0.01, warmup=2):
    """Time candidates side by side.

    Parameters
    ----------
    candidates : dict name -> callable()
    repeats : number of samples per candidate (rounds).
    target_seconds : the length of one sample.
    warmup : untimed calls of each candidate before calibration.

    Returns
    -------
    dict name -> {"median": s, "min": s, "max": s, "samples": [s, ...]},
    seconds per call.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    numbers = {name: _calibrate(candidates[name], target_seconds) for name in names}
    samples = {name: [] for name in names}
    for round_ in range(repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            fn, number = candidates[name], numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return {
        name: {"median": statistics.median(s), "min": min(s), "max": max(s), "samples": s}
        for name, s in samples.items()
    }

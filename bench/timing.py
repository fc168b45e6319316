"""Timing helpers shared by the benchmarks (not a benchmark itself: `make bench` runs bench/bench_*.py only)."""
import ctypes
import time

import numpy as np


def interleaved_seconds(fns: dict, repeats: int) -> dict:
    "Wall times (s) of `repeats` rounds, each calling every function of `fns` once (so load spikes hit all alike)."
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_seconds(fn, repeats: int) -> float:
    "Median wall time (s) of `repeats` calls of `fn()`."
    return float(np.median(interleaved_seconds({"fn": fn}, repeats)["fn"]))


def median_ms(fns: dict, repeats: int) -> dict:
    "Median wall time (ms) of each callable over `repeats` interleaved rounds."
    return {name: float(np.median(t)) * 1e3 for name, t in interleaved_seconds(fns, repeats).items()}


def keep_freed_memory() -> bool:
    """glibc: serve allocations up to 32 MB from the heap and never trim it (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD), so every
    timed case runs on warm memory; on this VM a first touch of fresh pages is slow and erratic. False when not glibc."""
    try: libc = ctypes.CDLL("libc.so.6")
    except OSError: return False
    return bool(libc.mallopt(-3, 32 * 1024 * 1024) and libc.mallopt(-1, 1 << 30))

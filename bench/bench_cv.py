"""Benchmark of `oi_ml.cv` split generation against a plain numpy boolean-mask reference (same run, same data).

Target (issue 4): `PurgedKFold(n_splits=5, embargo_frac=0.02)` over 1,000,000 samples within 1.5x of the reference.
Run from the repo root: `.venv/bin/python bench/bench_cv.py`; writes bench/results/cv.json."""
import itertools
import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from oi_ml.cv import CombinatorialPurgedCV, PurgedKFold
from timing import median_ms

N_SAMPLES = 1_000_000
N_SPLITS, EMBARGO_FRAC = 5, 0.02
REPEATS = 7
TARGET_RATIO = 1.5
RESULTS = Path("bench/results/cv.json")


def make_intervals(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    "One sample per bar; label lengths uniform in 1..100 bars."
    rng = np.random.default_rng(seed)
    event_time = np.arange(n_samples, dtype=np.int64)
    return event_time, event_time + rng.integers(1, 101, n_samples)


def reference_splits(event_time, label_end_time, test_blocks_per_split, embargo_frac):
    "The straightforward version: one boolean mask over all rows per split, then flatnonzero."
    n = len(event_time)
    embargo = math.ceil(round(embargo_frac * n, 9))
    out = []
    for blocks in test_blocks_per_split:
        keep = np.ones(n, dtype=bool)
        for start, stop in blocks:
            block_end = label_end_time[start:stop].max()
            keep &= ~((event_time <= block_end) & (label_end_time >= event_time[start]))   # purge (closed intervals)
            after = np.searchsorted(event_time, block_end, side="right")
            keep[start:stop] = False
            keep[after: after + embargo] = False                                          # embargo after the purge
        test = np.concatenate([np.arange(a, b) for a, b in blocks])
        out.append((np.flatnonzero(keep), test))
    return out


def kfold_blocks(n, n_splits):
    "Contiguous test folds as single blocks."
    return [[(int(p[0]), int(p[-1]) + 1)] for p in np.array_split(np.arange(n), n_splits)]


def cpcv_blocks(n, n_groups, n_test_groups):
    "Test blocks of every CPCV split, adjacent groups merged."
    groups = [(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(n), n_groups)]
    splits = []
    for combo in itertools.combinations(range(n_groups), n_test_groups):
        blocks = []
        for g in combo:
            if blocks and blocks[-1][1] == groups[g][0]: blocks[-1] = (blocks[-1][0], groups[g][1])
            else: blocks.append(groups[g])
        splits.append(blocks)
    return splits


def assert_same(ours, reference):
    "Both generate identical (train, test) index arrays."
    assert len(ours) == len(reference)
    for (tr, te), (rtr, rte) in zip(ours, reference):
        np.testing.assert_array_equal(tr, rtr)
        np.testing.assert_array_equal(te, rte)


def main():
    event_time, label_end_time = make_intervals(N_SAMPLES)
    index = pd.date_range("2025-08-01 03:45", periods=N_SAMPLES, freq="min", tz="UTC")
    label_end_dt = index + pd.to_timedelta(label_end_time - event_time, unit="min")
    event_ns, label_end_ns = index.as_unit("ns").asi8, label_end_dt.as_unit("ns").asi8

    kfold = PurgedKFold(N_SPLITS, EMBARGO_FRAC, label_end_times=label_end_time)
    cpcv = CombinatorialPurgedCV(6, 2, EMBARGO_FRAC, label_end_times=label_end_time)
    cases = {
        "PurgedKFold, bar positions": (
            lambda: list(kfold.split(None)),
            lambda: reference_splits(event_time, label_end_time, kfold_blocks(N_SAMPLES, N_SPLITS), EMBARGO_FRAC)),
        "PurgedKFold, UTC datetimes (incl. conversion)": (
            lambda: list(PurgedKFold(N_SPLITS, EMBARGO_FRAC).split(None, label_end_times=label_end_dt, event_times=index)),
            lambda: reference_splits(event_ns, label_end_ns, kfold_blocks(N_SAMPLES, N_SPLITS), EMBARGO_FRAC)),
        "CombinatorialPurgedCV(6, 2), 15 splits": (
            lambda: list(cpcv.split(None)),
            lambda: reference_splits(event_time, label_end_time, cpcv_blocks(N_SAMPLES, 6, 2), EMBARGO_FRAC)),
    }
    rows = []
    for name, (ours, reference) in cases.items():
        assert_same(ours(), reference())                       # also the warm-up
        ms = median_ms({"oi_ml": ours, "reference": reference}, REPEATS)
        rows.append({"case": name, "n_samples": N_SAMPLES, "oi_ml_ms": round(ms["oi_ml"], 2),
                     "reference_ms": round(ms["reference"], 2), "ratio": round(ms["oi_ml"] / ms["reference"], 3)})

    headline = rows[0]
    print(f"oi_ml.cv split generation, {N_SAMPLES:,} samples, label lengths 1-100 bars, median of {REPEATS} runs")
    print(f"{'case':48s} {'oi_ml ms':>9s} {'reference ms':>13s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['case']:48s} {r['oi_ml_ms']:9.1f} {r['reference_ms']:13.1f} {r['ratio']:6.2f}")
    verdict = "meets" if headline["ratio"] <= TARGET_RATIO else "MISSES"
    print(f"headline (PurgedKFold, 5 folds): ratio {headline['ratio']:.2f} {verdict} the target <= {TARGET_RATIO}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "cv", "target_ratio": TARGET_RATIO, "headline_ratio": headline["ratio"],
        "meets_target": headline["ratio"] <= TARGET_RATIO, "repeats": REPEATS,
        "n_splits": N_SPLITS, "embargo_frac": EMBARGO_FRAC, "cases": rows,
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
                    "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

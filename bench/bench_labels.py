"""Benchmark of `oi_ml.labels` / `oi_ml.meta_labels` (run by `make bench` from the repo root).

Measures, in one run, on 1,000,000 synthetic one-minute bars:
- triple-barrier labelling with horizon 100 by `triple_barrier_labels`, against (a) a minimal parallel numba
  first-touch kernel that computes only the first-touch index (target: ours within 1.5x of it) and (b) a plain numpy
  implementation (loop over the horizon offsets with vectorised comparisons) computing the same outputs;
- average-uniqueness weights of the resulting 1,000,000 labels (target: under 1 s), against a plain numpy
  implementation that loops over interval offsets instead of using a difference array and prefix sums.
Two barrier settings: Quant-bot's 1.75 / 1.0 x ATR (most labels end at a horizontal barrier within a few bars) and a
wide 6 / 6 x ATR (most labels run to the vertical barrier: the worst case for a first-touch scan).
Prints a table and writes bench/results/labels.json. Figures are medians of several repeats after a numba warm-up."""
import json
import os
import platform
import statistics
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from oi_ml.labels import (
    HIT_NONE,
    HIT_PROFIT,
    HIT_STOP,
    HIT_VERTICAL,
    atr_volatility,
    triple_barrier_labels,
)
from oi_ml.meta_labels import average_uniqueness, sample_weights
from timing import interleaved_seconds, median_seconds

N_BARS, HORIZON, SEED = 1_000_000, 100, 0
SETTINGS = {"quantbot_1.75x1.0": (1.75, 1.0), "wide_6x6": (6.0, 6.0)}
RESULTS = Path("bench/results/labels.json")


def make_bars(n: int, seed: int):
    "Random-walk one-minute bars (relative step 5e-4) with ATR(14) / close as the barrier volatility."
    rng = np.random.default_rng(seed)
    close = 24500.0 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 2.5e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 2.5e-4, n)))
    return close, high, low, atr_volatility(high, low, close, 14)


@njit(parallel=True)
def minimal_first_touch(close, high, low, vol, horizon, profit_mult, stop_mult):
    "Reference: index of the first bar touching either barrier (or last + 1), nothing else."
    n = close.shape[0]
    out = np.empty(n, np.int64)
    for t in prange(n):
        upper, lower = close[t] * (1.0 + profit_mult * vol[t]), close[t] * (1.0 - stop_mult * vol[t])
        last = min(t + horizon, n - 1)
        j = t + 1
        while j <= last and high[j] < upper and low[j] > lower:
            j += 1
        out[t] = j
    return out


def numpy_triple_barrier(close, high, low, vol, horizon, profit_mult, stop_mult):
    "Plain numpy: for each offset k = 1..horizon, compare all bars at once; same outputs as the kernel (long side)."
    n = close.shape[0]
    valid = np.isfinite(vol) & (vol > 0)
    upper, lower = close * (1.0 + profit_mult * vol), close * (1.0 - stop_mult * vol)
    first = np.full(n, -1, np.int64)
    stop = np.zeros(n, bool)
    for k in range(1, horizon + 1):
        m = n - k
        up, down = high[k:] >= upper[:m], low[k:] <= lower[:m]
        new = np.flatnonzero((first[:m] < 0) & (up | down) & valid[:m])
        first[new], stop[new] = new + k, down[new]
    t = np.arange(n)
    touched = first >= 0
    vertical = ~touched & valid & (t + horizon <= n - 1)
    end = np.where(touched, first, np.where(vertical, t + horizon, -1))
    hit = np.where(touched, np.where(stop, HIT_STOP, HIT_PROFIT), np.where(vertical, HIT_VERTICAL, HIT_NONE))
    j = np.clip(end, 0, None)
    exit_price = np.where(touched, np.minimum(np.maximum(np.where(stop, lower, upper), low[j]), high[j]), close[j])
    ret = np.where(hit != HIT_NONE, exit_price / close - 1.0, np.nan)
    label = np.where(hit == HIT_PROFIT, 1, np.where(hit == HIT_STOP, -1, 0)).astype(np.int8)
    return label, ret, end, hit.astype(np.int8)


def numpy_uniqueness(start, end, n_bars):
    "Plain numpy average uniqueness: loop over interval offsets (no difference array, no prefix sums)."
    valid = end >= 0
    s, length = start[valid], end[valid] - start[valid] + 1
    conc = np.zeros(n_bars)
    for k in range(int(length.max())):
        conc += np.bincount(s[length > k] + k, minlength=n_bars)
    inv = np.divide(1.0, conc, out=np.zeros(n_bars), where=conc > 0)
    acc = np.zeros(s.shape[0])
    for k in range(int(length.max())):
        m = length > k
        acc[m] += inv[s[m] + k]
    out = np.full(start.shape[0], np.nan)
    out[valid] = acc / length
    return out


def bench_setting(bars, profit_mult, stop_mult) -> tuple[dict, object]:
    "Time the three triple-barrier implementations on one barrier setting; check they agree."
    close, high, low, vol = bars
    ours = lambda: triple_barrier_labels(close, high, low, vol, HORIZON, profit_mult, stop_mult)
    minimal = lambda: minimal_first_touch(close, high, low, vol, HORIZON, profit_mult, stop_mult)
    res, first = ours(), minimal()                         # warm-up (compilation) and agreement checks
    plain = numpy_triple_barrier(close, high, low, vol, HORIZON, profit_mult, stop_mult)
    touched = (res.barrier_hit == HIT_PROFIT) | (res.barrier_hit == HIT_STOP)
    assert np.array_equal(res.label_end_index[touched], first[touched]), "kernel disagrees with the minimal kernel"
    for name, a, b in zip(("label", "realised_return", "label_end_index", "barrier_hit"),
                          (res.label, res.realised_return, res.label_end_index, res.barrier_hit), plain):
        assert np.array_equal(a, b, equal_nan=name == "realised_return"), f"numpy baseline disagrees on {name}"
    paired = interleaved_seconds({"ours": ours, "minimal": minimal}, 15)
    row = {"ours_s": statistics.median(paired["ours"]), "minimal_numba_s": statistics.median(paired["minimal"]),
           "numpy_s": median_seconds(lambda: numpy_triple_barrier(close, high, low, vol, HORIZON, profit_mult, stop_mult), 3),
           "hit_share": {k: float(np.mean(res.barrier_hit == c)) for k, c in
                         (("profit", HIT_PROFIT), ("stop", HIT_STOP), ("vertical", HIT_VERTICAL), ("none", HIT_NONE))},
           "mean_bars_to_exit": float(np.mean((res.label_end_index - np.arange(len(close)))[res.has_label]))}
    row["ours_vs_minimal"] = statistics.median(a / b for a, b in zip(paired["ours"], paired["minimal"]))
    row["numpy_vs_ours"] = row["numpy_s"] / row["ours_s"]
    row["target_within_1.5x_minimal"] = row["ours_vs_minimal"] <= 1.5
    return row, res


def bench_uniqueness(res) -> dict:
    "Time average uniqueness of the labels in `res` (and the frame-level sample_weights) against plain numpy."
    import pandas as pd
    n = res.label_end_index.shape[0]
    start, end = np.arange(n, dtype=np.int64), res.label_end_index
    ours = lambda: average_uniqueness(start, end, n)
    assert np.allclose(ours(), numpy_uniqueness(start, end, n), rtol=1e-9, equal_nan=True), "uniqueness disagrees"
    ts = pd.Series(pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC"))
    end_time = pd.Series(pd.DatetimeIndex(ts).take(np.clip(end, 0, None)).where(end >= 0))
    row = {"ours_s": median_seconds(ours, 7), "numpy_s": median_seconds(lambda: numpy_uniqueness(start, end, n), 3),
           "sample_weights_frame_s": median_seconds(lambda: sample_weights(ts, end_time, oldest_weight=0.5), 3)}
    row["numpy_vs_ours"] = row["numpy_s"] / row["ours_s"]
    row["target_under_1s"] = row["ours_s"] < 1.0
    return row


def main():
    bars = make_bars(N_BARS, SEED)
    triple_barrier_labels(*bars[:3], bars[3], 5, 1.0, 1.0)                    # compile / load the numba cache
    minimal_first_touch(*bars[:3], bars[3], 5, 1.0, 1.0)
    report = {"n_bars": N_BARS, "horizon": HORIZON, "numba_threads": numba.get_num_threads(),
              "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
              "numba": numba.__version__, "triple_barrier": {}}
    res = None
    for name, (pm, sm) in SETTINGS.items():
        report["triple_barrier"][name], out = bench_setting(bars, pm, sm)
        res = out if res is None else res
    report["uniqueness"] = bench_uniqueness(res)
    print(f"triple barrier, {N_BARS:,} bars, horizon {HORIZON}, {report['numba_threads']} numba threads")
    print(f"{'setting':<20}{'ours s':>9}{'minimal s':>11}{'numpy s':>9}{'ours/minimal':>14}{'numpy/ours':>12}{'bars to exit':>14}")
    for name, r in report["triple_barrier"].items():
        print(f"{name:<20}{r['ours_s']:>9.3f}{r['minimal_numba_s']:>11.3f}{r['numpy_s']:>9.3f}"
              f"{r['ours_vs_minimal']:>13.2f}x{r['numpy_vs_ours']:>11.1f}x{r['mean_bars_to_exit']:>14.1f}")
    u = report["uniqueness"]
    print(f"average uniqueness, {N_BARS:,} labels: ours {u['ours_s']:.3f} s, numpy offsets loop {u['numpy_s']:.3f} s "
          f"({u['numpy_vs_ours']:.1f}x); frame-level sample_weights {u['sample_weights_frame_s']:.3f} s")
    met = all(r["target_within_1.5x_minimal"] for r in report["triple_barrier"].values()) and u["target_under_1s"]
    print(f"targets (ours <= 1.5x minimal kernel; uniqueness < 1 s): {'met' if met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

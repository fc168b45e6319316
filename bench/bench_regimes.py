"""Benchmark of oi_ml.regimes: one-row `filter_step` latency (runtime budget ~100 µs) and batch `transform` on
94,000 rows, against references measured in the same run (hmmlearn `predict_proba`, a plain-numpy filter step).
Run from the repo root: `.venv/bin/python bench/bench_regimes.py`; writes bench/results/regimes.json."""
import json
import logging
import os
import platform
import time
from pathlib import Path

import hmmlearn
import numba
import numpy as np
import pandas as pd

from oi_ml.regimes import RegimeHMMTransformer
from timing import median_seconds

logging.getLogger("hmmlearn").setLevel(logging.ERROR)
N_ROWS, TRAIN_ROWS, SESSION_ROWS = 94_000, 20_000, 375   # bars; 375 one-minute bars = one NSE session
STEP_CALLS, STEP_WARMUP, STEP_REPEATS = 10_000, 1_000, 3
BATCH_REPEATS, WINDOW_CALLS = 5, 200
RESULTS = Path("bench/results/regimes.json")


def simulate(n_rows, seed=0):
    "3-regime Markov chain driving the default regime features (as in tests/test_regimes.py)."
    rng = np.random.default_rng(seed)
    transmat = np.array([[0.97, 0.02, 0.01], [0.02, 0.96, 0.02], [0.02, 0.04, 0.94]])
    uniform, cum = rng.random(n_rows), np.cumsum(transmat, axis=1)
    state = np.zeros(n_rows, dtype=np.int64)
    for t in range(1, n_rows):
        state[t] = min(np.searchsorted(cum[state[t - 1]], uniform[t], side="right"), 2)
    vol = np.array([0.0005, 0.001, 0.0025])[state]
    return pd.DataFrame({"ret_1": rng.normal(0, vol), "realized_vol": vol * np.exp(rng.normal(0, 0.3, n_rows)),
                         "vix": np.array([11.0, 15.0, 24.0])[state] + rng.normal(0, 3.0, n_rows),
                         "pcr_oi": np.array([1.1, 1.0, 0.8])[state] + rng.normal(0, 0.15, n_rows)})


def numpy_step(params, prev_probs, x):
    "Reference one-row filter step in plain vectorised numpy (same maths, no numba)."
    z = (x - params.feature_mean) / params.feature_std
    dev = np.einsum("kij,kj->ki", params.prec_chol, z - params.means)
    log_alpha = np.log(prev_probs @ params.transmat) + params.log_norm - 0.5 * (dev * dev).sum(axis=1)
    alpha = np.exp(log_alpha - log_alpha.max())
    return alpha / alpha.sum()


def hmmlearn_twin(params):
    "Fixed-parameter hmmlearn GaussianHMM with exactly the fitted (ordered) parameters."
    from hmmlearn.hmm import GaussianHMM
    hmm = GaussianHMM(n_components=len(params.startprob), covariance_type="diag", init_params="", params="")
    hmm.startprob_, hmm.transmat_, hmm.means_ = params.startprob, params.transmat, params.means
    hmm.covars_ = np.diagonal(params.covars, axis1=1, axis2=2)
    return hmm


def per_call_us(fn, rows, n_calls, warmup):
    "Per-call latencies (µs) of fn(state, row) chained over `rows`, after `warmup` untimed calls."
    state = fn(None, rows[0])
    for i in range(warmup): state = fn(state, rows[i % len(rows)])
    out = np.empty(n_calls)
    for i in range(n_calls):
        x = rows[(warmup + i) % len(rows)]
        t0 = time.perf_counter_ns(); state = fn(state, x); out[i] = time.perf_counter_ns() - t0
    return out / 1e3


def step_latency(fn, rows):
    "Median over repeats of the p50 and p99 per-call latency (µs)."
    runs = [per_call_us(fn, rows, STEP_CALLS, STEP_WARMUP) for _ in range(STEP_REPEATS)]
    return {"p50_us": float(np.median([np.percentile(r, 50) for r in runs])),
            "p99_us": float(np.median([np.percentile(r, 99) for r in runs])),
            "mean_us": float(np.median([r.mean() for r in runs]))}


def main():
    frame = simulate(N_ROWS)
    t0 = time.perf_counter()
    model = RegimeHMMTransformer().fit(frame.iloc[:TRAIN_ROWS])
    fit_s = time.perf_counter() - t0
    params, rows = model.params, frame[list(model.feature_columns)].to_numpy()
    z = (rows - params.feature_mean) / params.feature_std
    hmm = hmmlearn_twin(params)
    model.transform(frame.iloc[:100]); hmm.predict_proba(z[:100])          # warm up numba and hmmlearn

    step = step_latency(lambda s, x: model.filter_step(s, x), rows)
    ref_step = step_latency(lambda s, x: numpy_step(params, params.startprob if s is None else s, x), rows)
    window_s = median_seconds(lambda: [hmm.predict_proba(z[t - SESSION_ROWS:t])[-1]
                                       for t in range(SESSION_ROWS, SESSION_ROWS + WINDOW_CALLS)], 3) / WINDOW_CALLS

    transform_s = median_seconds(lambda: model.transform(frame), BATCH_REPEATS)
    filter_rows_s = median_seconds(lambda: model.filter_rows(rows), BATCH_REPEATS)
    hmm_s = median_seconds(lambda: hmm.predict_proba((rows - params.feature_mean) / params.feature_std), BATCH_REPEATS)

    same_last = bool(np.allclose(model.filter_rows(rows)[-1], hmm.predict_proba(z)[-1], rtol=0, atol=1e-10))
    results = {
        "rows": N_ROWS, "train_rows": TRAIN_ROWS, "fit_seconds": fit_s,
        "filter_step": step, "numpy_step_reference": ref_step,
        "hmmlearn_session_window_per_row_us": window_s * 1e6,
        "filter_step_p50_speedup_vs_numpy_step": ref_step["p50_us"] / step["p50_us"],
        "filter_step_p50_speedup_vs_hmmlearn_session_window": window_s * 1e6 / step["p50_us"],
        "transform_seconds": transform_s, "filter_rows_seconds": filter_rows_s, "hmmlearn_predict_proba_seconds": hmm_s,
        "transform_speedup_vs_hmmlearn": hmm_s / transform_s, "filter_rows_speedup_vs_hmmlearn": hmm_s / filter_rows_s,
        "last_row_matches_hmmlearn": same_last,
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "numba": numba.__version__,
                     "hmmlearn": hmmlearn.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform()},
    }
    print(f"regimes benchmark: {N_ROWS:,} rows, fitted on {TRAIN_ROWS:,} in {fit_s:.2f} s")
    print(f"{'one new row':44s} {'p50 µs':>10s} {'p99 µs':>10s}")
    print(f"{'  filter_step (numba)':44s} {step['p50_us']:10.2f} {step['p99_us']:10.2f}")
    print(f"{'  numpy step (reference)':44s} {ref_step['p50_us']:10.2f} {ref_step['p99_us']:10.2f}"
          f"   ratio {results['filter_step_p50_speedup_vs_numpy_step']:.1f}x")
    print(f"{'  hmmlearn predict_proba, 375-row window':44s} {window_s * 1e6:10.1f} {'':>10s}"
          f"   ratio {results['filter_step_p50_speedup_vs_hmmlearn_session_window']:.0f}x")
    print(f"{'batch, 94,000 rows':44s} {'median s':>10s}")
    print(f"{'  transform (DataFrame in/out)':44s} {transform_s:10.4f}   ratio {results['transform_speedup_vs_hmmlearn']:.1f}x")
    print(f"{'  filter_rows (numpy in/out)':44s} {filter_rows_s:10.4f}   ratio {results['filter_rows_speedup_vs_hmmlearn']:.1f}x")
    print(f"{'  hmmlearn predict_proba (smoothed)':44s} {hmm_s:10.4f}")
    print(f"last filtered row == hmmlearn last smoothed row: {same_last}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark of oi_ml.automl: wall time per AutoML trial (median over trials) on one exchange, against the time of one
bare `train.fit_booster` call on the same rows (a CV fold's training rows of segment 0, same columns) with the search
space's median settings, measured in the same run. A trial is `n_folds` such fits plus prediction and scoring, so the
ideal ratio is about n_folds x (its sampled size / the median size).
Run from the repo root: `.venv/bin/python bench/bench_automl.py`; writes bench/results/automl.json."""
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import lightgbm
import numpy as np
import optuna
import pandas as pd

from oi_ml.automl import (
    OrchestratorConfig,
    SearchSpace,
    prepare_segment,
    run_orchestrator,
)
from oi_ml.config import RunConfig
from oi_ml.cv import walk_forward_segments
from oi_ml.datasets import export_training_window, load_dataset
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import TrainConfig, build_training_table, fit_booster

N_DAYS, WINDOW_DAYS, STEP_DAYS, TRIALS = 40, 20, 10, 6      # 40 sessions -> validation on sessions 20-29 and 30-39
REFERENCE_REPEATS = 3
RESULTS = Path("bench/results/automl.json")


def median_settings(space: SearchSpace) -> dict:
    "The middle of each range (geometric for log-scale ones)."
    geo = lambda r: float(np.sqrt(r[0] * r[1]))
    mid = lambda r: (r[0] + r[1]) / 2
    return dict(learning_rate=geo(space.learning_rate), lambda_l2=geo(space.lambda_l2), num_leaves=int(mid(space.num_leaves)),
                min_data_in_leaf=int(mid(space.min_data_in_leaf)), feature_fraction=mid(space.feature_fraction),
                bagging_fraction=mid(space.bagging_fraction), rounds=int(mid(space.rounds)))


def segment0_fold0(run_cfg: RunConfig, config: OrchestratorConfig):
    "(X, y, w) of segment 0's first purged-CV fold training rows, as a trial sees them."
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    table = build_training_table(raw, config.train)
    window = walk_forward_segments(table.features.timestamp, WINDOW_DAYS, STEP_DAYS, label_end_times=table.label_end_time)[0]
    fold = prepare_segment(table, table.features[table.feature_columns].to_numpy("float64"), window, config.train, config.n_folds).folds[0]
    return fold.X_fit, table.y[fold.fit_rows], table.weight[fold.fit_rows]


def bare_fit_seconds(X, y, w, params: dict, num_threads: int) -> float:
    "Median time of one bare fit_booster call with `params` (LightGBM settings plus rounds)."
    cfg = TrainConfig(num_threads=num_threads, **{k: v for k, v in params.items() if k != "rounds"})
    fit_booster("lightgbm", cfg, 3, X[:500], y[:500], w[:500], 5)                        # warm up
    times = []
    for _ in range(REFERENCE_REPEATS):
        t0 = time.perf_counter(); fit_booster("lightgbm", cfg, 3, X, y, w, params["rounds"]); times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    run_cfg = RunConfig(data_dir=tempfile.mkdtemp(prefix="bench_automl_"))
    t0 = time.perf_counter()
    with connect(run_cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=N_DAYS, seed=0, run_cfg=run_cfg)
        dm = export_training_window(con, "NSE", run_cfg=run_cfg)
    simulate_s = time.perf_counter() - t0
    config = OrchestratorConfig("NSE", window_days=WINDOW_DAYS, step_days=STEP_DAYS, families=("lightgbm",), optuna_trials=TRIALS, progress=False)

    t0 = time.perf_counter()
    run = run_orchestrator(config, run_cfg)
    run_s = time.perf_counter() - t0
    X, y, w = segment0_fold0(run_cfg, config)
    ref_rows, ref_cols, ref_params = X.shape[0], X.shape[1], median_settings(config.search)
    ref_s = bare_fit_seconds(X, y, w, ref_params, config.train.num_threads)

    trials = pd.DataFrame(run.summary["trials"])
    complete = trials[trials.state == "COMPLETE"].sort_values("duration_s")
    per_trial = float(trials.duration_s.median())
    middle = complete.iloc[len(complete) // 2]                      # a median-duration complete trial, refit bare with its own settings
    own_s = bare_fit_seconds(X, y, w, middle.params, config.train.num_threads)
    results = {
        "dataset": {"days": N_DAYS, "rows": dm["row_count"], "labelled_rows": run.summary["dataset"]["labelled_rows"]},
        "config": {"window_days": WINDOW_DAYS, "step_days": STEP_DAYS, "segments": run.summary["segmentation"]["n_segments"],
                   "families": ["lightgbm"], "trials_per_study": TRIALS, "n_folds": config.n_folds, "pruner": config.pruner,
                   "num_threads": config.train.num_threads},
        "trials": {"total": len(trials), "complete": len(complete), "pruned": int((trials.state == "PRUNED").sum())},
        "trial_seconds_median": per_trial, "complete_trial_seconds_median": float(complete.duration_s.median()),
        "trial_seconds_all": trials.duration_s.round(3).tolist(),
        "reference_fit_seconds": ref_s, "reference_rows": ref_rows, "reference_columns": ref_cols, "reference_params": ref_params,
        "ratio_trial_to_reference_fit": per_trial / ref_s,
        "ratio_complete_trial_to_n_folds_fits": float(complete.duration_s.median()) / (config.n_folds * ref_s),
        "median_trial": {"trial_key": middle.trial_key, "seconds": float(middle.duration_s), "params": middle.params,
                         "bare_fit_seconds_same_params": own_s,
                         "overhead_ratio_vs_n_folds_bare_fits": float(middle.duration_s) / (config.n_folds * own_s)},
        "run_seconds": run_s, "seconds_outside_trials": run_s - float(trials.duration_s.sum()), "simulate_export_seconds": simulate_s,
        "versions": {"lightgbm": lightgbm.__version__, "optuna": optuna.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform()},
    }
    print(f"automl benchmark: {N_DAYS} simulated sessions ({dm['row_count']:,} bars), {results['config']['segments']} segments x "
          f"1 family x {TRIALS} trials, {config.n_folds}-fold purged CV, {config.pruner} pruner, {config.train.num_threads} thread")
    print(f"{'':46s} {'median s':>10s} {'ratio':>8s}")
    print(f"{'  AutoML trial (all finished trials)':46s} {per_trial:10.2f} {results['ratio_trial_to_reference_fit']:7.1f}x")
    print(f"{'  AutoML trial (complete trials only)':46s} {results['complete_trial_seconds_median']:10.2f} "
          f"{complete.duration_s.median() / ref_s:7.1f}x   ({results['ratio_complete_trial_to_n_folds_fits']:.2f} x n_folds fits)")
    print(f"{'  bare fit_booster, median settings (reference)':46s} {ref_s:10.2f} {1.0:7.1f}x   ({ref_rows:,} rows x {ref_cols} columns)")
    print(f"{'  median trial vs n_folds bare fits, its settings':46s} {middle.duration_s:10.2f} "
          f"{results['median_trial']['overhead_ratio_vs_n_folds_bare_fits']:7.2f}x   (overhead of CV, prediction, scoring, Optuna)")
    print(f"whole run {run_s:.1f} s, of which {results['seconds_outside_trials']:.1f} s outside trials (table, HMMs, refits, files); "
          f"{results['trials']['pruned']} of {len(trials)} trials pruned")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark of oi_ml.signals: per-call latency of `MLSignalGenerator.generate_signal` (regime filter, per-regime
booster, calibration, sizing; audit buffered to DuckDB + JSONL) against a bare LightGBM `Booster.predict` on one
contiguous float64 row of the same width, measured in the same run; plus the audit overhead (audit on vs off).
Each call is timed on the wall clock (what the issue's targets are stated in) and in thread CPU time (the same calls
without the time other processes held the core: on a shared, loaded machine the wall-clock p99 is set by preemption).
Targets (issue 6): p99 under 250 µs and within 4x the bare call; audit adds under 50 µs p99.
A tiny model is trained and deployed in a temporary data directory first (~20 s).
Run from the repo root: `.venv/bin/python bench/bench_signals.py`; writes bench/results/signals.json."""
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd

from oi_ml.config import RunConfig
from oi_ml.datasets import export_training_window, load_dataset
from oi_ml.features import prepare_training_features
from oi_ml.registry import deploy_model
from oi_ml.signals import MLSignalGenerator
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import TrainConfig, train_model

logging.getLogger("hmmlearn").setLevel(logging.ERROR)
CALLS, WARMUP, REPEATS, BLOCK = 20_000, 1_000, 3, 1_000
SMALL = TrainConfig(n_splits=3, min_regime_rows=600, max_rounds=60, top_k_features=20, shap_rows=200)
RESULTS = Path("bench/results/signals.json")


def deployed_model(data_dir: str) -> tuple[RunConfig, pd.DataFrame]:
    "Simulate 8 NSE days, train the small model, deploy it; returns (run config, raw dataset rows)."
    cfg = RunConfig(data_dir=data_dir)
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=8, run_cfg=cfg)
        dm = export_training_window(con, "NSE", run_cfg=cfg)
    manifest = train_model("NSE", dm["version"], cfg=SMALL, run_cfg=cfg)
    deploy_model("NSE", manifest["run_id"], "bench", "latency benchmark", run_cfg=cfg, ungated=True)   # a bench model, not gated
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    return cfg, raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)


def interleaved_latencies(variants: dict, n_inputs: int) -> dict:
    """Per-call wall-clock and thread-CPU latencies (µs) of every variant: CALLS calls each, run in blocks of BLOCK calls
    that alternate between the variants (so a load change on the shared machine hits all of them alike), after WARMUP
    untimed calls each. CPU time excludes the time the thread was preempted by other processes."""
    for fn in variants.values():
        for i in range(WARMUP): fn(i % n_inputs)
    wall, cpu = ({name: np.empty(CALLS) for name in variants} for _ in range(2))
    for start in range(0, CALLS, BLOCK):
        for name, fn in variants.items():
            w, c = wall[name], cpu[name]
            for i in range(start, start + BLOCK):
                c0 = time.thread_time_ns(); t0 = time.perf_counter_ns()
                fn((WARMUP + i) % n_inputs)
                w[i] = time.perf_counter_ns() - t0; c[i] = time.thread_time_ns() - c0
    return {name: (wall[name] / 1e3, cpu[name] / 1e3) for name in variants}


def summarise(runs: list[np.ndarray]) -> dict:
    "Median over repeats of p50, p90, p99, mean (µs) and of the share of calls over 1 ms."
    med = lambda f: float(np.median([f(r) for r in runs]))
    return {"p50_us": med(lambda r: np.percentile(r, 50)), "p90_us": med(lambda r: np.percentile(r, 90)),
            "p99_us": med(lambda r: np.percentile(r, 99)), "mean_us": med(np.mean), "share_over_1ms": med(lambda r: np.mean(r > 1000))}


def targets(sig: dict, bare: dict, off: dict) -> dict:
    "The issue's targets on one clock: p99 < 250 µs, p99 within 4x the bare call, audit adds < 50 µs p99."
    return {"p99_under_250us": sig["p99_us"] < 250, "p99_within_4x_bare": sig["p99_us"] <= 4 * bare["p99_us"],
            "audit_overhead_p99_under_50us": sig["p99_us"] - off["p99_us"] < 50}


def main():
    tmp = tempfile.mkdtemp(prefix="bench_signals_")
    t0 = time.perf_counter()
    cfg, raw = deployed_model(str(Path(tmp) / "data"))
    setup_s = time.perf_counter() - t0
    # min_confidence 0: every arg-max BUY/SELL is served and sized, the slowest path (the gated default holds below 0.65)
    on = MLSignalGenerator("NSE", run_cfg=cfg, audit=True, min_confidence=0.0)   # default AuditLog: background writer when idle
    off = MLSignalGenerator("NSE", run_cfg=cfg, audit=False, min_confidence=0.0)
    features = prepare_training_features(raw, on.plan.input_features)
    dicts = features[list(on.plan.input_features)].to_dict("records")
    closes = raw.close.to_numpy()
    for d, c in zip(dicts, closes): d["close"] = float(c)
    booster = on.bundle.model_set.boosters["pooled"]
    width = len(on.bundle.model_set.selected)
    rows = np.ascontiguousarray(np.random.default_rng(0).normal(size=(len(dicts), width)))  # float64, C order

    variants = {
        "bare_predict": lambda i: booster.predict(rows[i:i + 1]),
        "bare_predict_1thread": lambda i: booster.predict(rows[i:i + 1], num_threads=1),
        "generate_signal_audit_off": lambda i: off.generate_signal(dicts[i]),
        "generate_signal_audit_on": lambda i: on.generate_signal(dicts[i]),
    }
    runs = {k: ([], []) for k in variants}
    for _ in range(REPEATS):
        for name, (wall, cpu) in interleaved_latencies(variants, len(dicts)).items():
            runs[name][0].append(wall); runs[name][1].append(cpu)
    on.close()
    stats = {clock: {k: summarise(v[i]) for k, v in runs.items()} for i, clock in enumerate(("wall", "cpu"))}
    with connect(cfg, read_only=True) as con:
        audited = con.sql("SELECT count(*) FROM recommendations").fetchall()[0][0]

    results = {
        "calls_per_repeat": CALLS, "warmup_calls": WARMUP, "repeats": REPEATS, "block_calls": BLOCK, "setup_seconds": setup_s,
        "row_width": width, "used_features": len(on.plan.used_features), "input_features": len(on.plan.input_features),
        "regimes": on.plan.regime_model.n_regimes, "boosters": len(on.bundle.model_set.boosters), "rounds": on.plan.rounds,
        "latency_wall": stats["wall"], "latency_thread_cpu": stats["cpu"],
        "audit_rows_stored": int(audited), "audit_rows_expected": REPEATS * (CALLS + WARMUP),
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "lightgbm": lightgbm.__version__,
                     "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform()},
    }
    print(f"signals benchmark: {CALLS:,} calls x {REPEATS} repeats after {WARMUP:,} warm-up calls; "
          f"row width {width}, {results['boosters']} boosters x {on.plan.rounds} rounds; setup {setup_s:.1f} s")
    for clock, title in (("wall", "wall clock (what a caller sees; includes preemption by other processes)"),
                         ("cpu", "thread CPU time (the same calls, preemption excluded)")):
        st = stats[clock]
        sig, bare, bare1, off = (st[k] for k in ("generate_signal_audit_on", "bare_predict", "bare_predict_1thread",
                                                 "generate_signal_audit_off"))
        results[f"ratios_{clock}"] = {"p50_vs_bare": sig["p50_us"] / bare["p50_us"], "p99_vs_bare": sig["p99_us"] / bare["p99_us"],
                                      "p50_vs_bare_1thread": sig["p50_us"] / bare1["p50_us"], "p99_vs_bare_1thread": sig["p99_us"] / bare1["p99_us"],
                                      "audit_overhead_p50_us": sig["p50_us"] - off["p50_us"], "audit_overhead_p99_us": sig["p99_us"] - off["p99_us"]}
        results[f"targets_{clock}"] = targets(sig, bare, off)
        print(f"\n{title}")
        print(f"{'  one bar':44s} {'p50 µs':>9s} {'p90 µs':>9s} {'p99 µs':>9s} {'>1 ms':>7s}  ratio p50 / p99 vs bare")
        for name, s in st.items():
            print(f"  {name:42s} {s['p50_us']:9.1f} {s['p90_us']:9.1f} {s['p99_us']:9.1f} {s['share_over_1ms']:7.2%}  "
                  f"{s['p50_us'] / bare['p50_us']:5.2f}x / {s['p99_us'] / bare['p99_us']:5.2f}x")
        r = results[f"ratios_{clock}"]
        print(f"  audit overhead (on - off): p50 {r['audit_overhead_p50_us']:+.1f} µs, p99 {r['audit_overhead_p99_us']:+.1f} µs; "
              f"vs 1-thread bare: p50 {r['p50_vs_bare_1thread']:.2f}x, p99 {r['p99_vs_bare_1thread']:.2f}x")
        print("  targets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in results[f"targets_{clock}"].items()))
    print(f"\n{audited:,} of {results['audit_rows_expected']:,} audited rows in DuckDB; "
          f"load average {results['machine']['loadavg_1m']:.1f} on {os.cpu_count()} cores")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

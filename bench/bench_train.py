"""Benchmark of `oi_ml.train` (run by `make bench` from the repo root).

Issue 4's target: the overhead of `train_model` for one exchange (one year of 1-minute data) against the bare LightGBM
fits it contains, at most 1.5x. Setup (not timed): simulate `--days` NSE trading days (default 250, ~94 000 bars)
into a temporary data dir and export a dataset version. Measured in the same run: `train_model` end to end with the
default `TrainConfig` (threads from `--threads`), while timing wrappers record the time spent inside every
`lightgbm.train` call (the bare fits, Dataset binning included) and inside `oi_ml.train.fit_booster`, plus the main
stages (features/labels table, CV, HMM fits, feature selection, prediction, calibration, report, SHAP, saving).
Figure: total / time in `lightgbm.train`. Prints a table and writes bench/results/train.json."""
import argparse
import dataclasses
import json
import os
import platform
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd

import oi_ml.train as train_mod
from oi_ml.config import RunConfig
from oi_ml.datasets import export_training_window
from oi_ml.regimes import RegimeHMMTransformer
from oi_ml.simulate import simulate_market
from oi_ml.store import connect

RESULTS = Path("bench/results/train.json")
TARGET_RATIO = 1.5
STAGES = ("build_training_table", "cross_validate", "fit_model_set", "select_features", "predict_model_set", "add_regimes",
          "fit_calibration", "_evaluate_holdout", "_importance", "_report", "_save_run", "fit_booster")


class Timers:
    "Accumulated seconds and call counts per name, filled by wrapped functions."
    def __init__(self):
        self.seconds, self.calls = defaultdict(float), defaultdict(int)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try: return fn(*args, **kwargs)
            finally: self.seconds[name] += time.perf_counter() - t0; self.calls[name] += 1
        return timed


def instrument(timers: Timers) -> list:
    "Wrap lightgbm.train, the HMM fit and the train module's stages; returns the (owner, name, original) list to restore."
    patched = [(lightgbm, "train", "lightgbm.train"), (RegimeHMMTransformer, "fit", "RegimeHMMTransformer.fit")]
    patched += [(train_mod, name, name) for name in STAGES]
    originals = []
    for owner, attr, label in patched:
        original = getattr(owner, attr); originals.append((owner, attr, original))
        setattr(owner, attr, timers.wrap(label, original))
    return originals


def restore(originals: list) -> None:
    for owner, attr, original in reversed(originals): setattr(owner, attr, original)


def simulate_dataset(root: Path, n_days: int, seed: int) -> tuple[RunConfig, dict]:
    "Setup: `n_days` simulated NSE days exported as a dataset version."
    cfg = RunConfig(data_dir=str(root / "data"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2024-08-01", n_days=n_days, seed=seed, run_cfg=cfg)
        return cfg, export_training_window(con, "NSE", run_cfg=cfg)


def warm_up(cfg: RunConfig, version: str, tcfg: train_mod.TrainConfig) -> None:
    "Untimed tiny run so numba kernels, imports and LightGBM's first call are out of the measurement."
    lightgbm.train(dict(objective="binary", verbosity=-1, num_threads=1), lightgbm.Dataset(np.random.default_rng(0).normal(size=(500, 3)),
                   np.arange(500) % 2), 5)
    train_mod.prepare_training_features(train_mod.load_dataset("NSE", version, cfg)[0].iloc[:400])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=250, help="simulated NSE trading days (one year = 250)")
    parser.add_argument("--threads", type=int, default=train_mod.TrainConfig().num_threads, help="TrainConfig.num_threads")
    parser.add_argument("--target", default="triple_barrier", help="training head")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tcfg = dataclasses.replace(train_mod.TrainConfig(), num_threads=args.threads, target=args.target)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        t0 = time.perf_counter(); cfg, dm = simulate_dataset(Path(tmp), args.days, args.seed); setup_s = time.perf_counter() - t0
        print(f"setup: {args.days} simulated NSE days, {dm['row_count']:,} bars, dataset {dm['version']} in {setup_s:.0f} s")
        warm_up(cfg, dm["version"], tcfg)
        timers = Timers(); originals = instrument(timers)
        load0 = os.getloadavg()[0]; cpu0 = time.process_time()
        try:
            t0 = time.perf_counter()
            manifest = train_mod.train_model("NSE", dm["version"], target=args.target, cfg=tcfg, run_cfg=cfg, reuse=False)
            total_s = time.perf_counter() - t0
        finally:
            restore(originals)
        cpu_s = time.process_time() - cpu0
        report = json.loads((Path(cfg.models_dir) / "NSE" / manifest["run_id"] / "reports" / "training_report.json").read_text())

    lgb_s, booster_s = timers.seconds["lightgbm.train"], timers.seconds["fit_booster"]
    results = {
        "days": args.days, "bars": int(dm["row_count"]), "target": args.target, "num_threads": args.threads,
        "train_config": train_mod.config_to_dict(tcfg), "setup_seconds": setup_s,
        "total_seconds": total_s, "process_cpu_seconds": cpu_s,
        "lightgbm_train_seconds": lgb_s, "lightgbm_train_calls": timers.calls["lightgbm.train"],
        "fit_booster_seconds": booster_s, "fit_booster_calls": timers.calls["fit_booster"],
        "ratio_total_vs_lightgbm_train": total_s / lgb_s if lgb_s else None,
        "ratio_total_vs_fit_booster": total_s / booster_s if booster_s else None,
        "target_ratio_at_most_1.5": bool(lgb_s and total_s / lgb_s <= TARGET_RATIO),
        "stage_seconds": {k: timers.seconds[k] for k in ["RegimeHMMTransformer.fit", *STAGES]},
        "stage_calls": {k: timers.calls[k] for k in ["RegimeHMMTransformer.fit", *STAGES]},
        "rows": report["rows"], "cv_rounds": report["cv"]["rounds"], "routes": report["regimes"]["routes"],
        "holdout_calibrated": {k: report["holdout"]["calibrated"][k] for k in ("accuracy", "directional_auc", "log_loss")} if report["classes"] else None,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "versions": {"lightgbm": lightgbm.__version__, "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_start": load0, "loadavg_1m_end": os.getloadavg()[0], "platform": platform.platform()},
    }
    print(f"train_model, {args.days} days ({dm['row_count']:,} bars), target {args.target}, num_threads={args.threads}")
    print(f"{'':44s} {'seconds':>9s} {'calls':>6s}")
    print(f"{'  train_model end to end':44s} {total_s:9.1f} {1:6d}   (process CPU {cpu_s:.1f} s)")
    print(f"{'  inside lightgbm.train (the bare fits)':44s} {lgb_s:9.1f} {timers.calls['lightgbm.train']:6d}")
    print(f"{'  inside fit_booster':44s} {booster_s:9.1f} {timers.calls['fit_booster']:6d}")
    for k in ["build_training_table", "RegimeHMMTransformer.fit", "select_features", "predict_model_set", "add_regimes",
              "fit_calibration", "_evaluate_holdout", "_importance", "_save_run"]:
        print(f"{'    ' + k:44s} {timers.seconds[k]:9.2f} {timers.calls[k]:6d}")
    ratio = results["ratio_total_vs_lightgbm_train"]
    print(f"ratio total / lightgbm.train = {ratio:.2f}x (target <= {TARGET_RATIO}x: {results['target_ratio_at_most_1.5']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

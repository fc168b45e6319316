"""Benchmark of `oi_ml.features` (run by `make bench` from the repo root).

Issue 3's target: the full feature build (`prepare_training_features`) for one year of 1-minute data of one exchange
in under 30 s and under 2 GiB. Setup (not timed): simulate `--days` NSE trading days (default 250, ~94 000 bars) into
a temporary warehouse and read its `ml_features` back. Measured in the same run:
- the full build, median of `--repeats` after a warm-up call on a small slice (numba kernels compiled/cached);
- its parts: the indicator library (`compute_indicators_by_symbol`) and the option/market/time families;
- a reference: the same option/market/time families written directly in plain pandas (diff/rolling/ewm on the
  columns of one symbol), checked equal to the library's output -> ratios build / reference and families / reference;
- memory: tracemalloc peak of one build (Python-level allocations incl. numpy) and the peak RSS (VmHWM) of a fresh child
  process that only loads the frame and builds the features (its peak after loading and warm-up reported too).
Prints a table and writes bench/results/features.json."""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from oi_ml.config import IST, RunConfig
from oi_ml.features import (
    REQUIRED_FEATURE_COLUMNS,
    buildup_features,
    flow_features,
    pcr_features,
    prepare_training_features,
    structure_features,
    time_features,
    volatility_features,
)
from oi_ml.indicators import compute_indicators_by_symbol
from oi_ml.simulate import simulate_market
from oi_ml.store import connect, load_historical_data_for_ml
from timing import median_seconds

RESULTS = Path("bench/results/features.json")
TARGET_SECONDS, TARGET_BYTES = 30.0, 2 * 1024 ** 3
FAMILY_INPUTS = ["close", "pcr_oi", "pcr_volume", "pcr_oi_atm", "max_pain_strike", "atm_strike", "oi_concentration_atm", "call_oi",
                 "put_oi", "futures_price", "futures_oi", "atm_iv", "next_atm_iv", "iv_skew", "vix", "vix_near", "vix_far", "gex",
                 "futures_basis", "advances", "declines", "fii_flow", "dii_flow", "book_bid_qty", "book_ask_qty", "days_to_expiry"]
STRIKE_STEP, OPEN_MINUTE, SESSION_MINUTES = 50.0, 9 * 60 + 15, 375     # NSE NIFTY


def pandas_reference_families(raw: pd.DataFrame) -> pd.DataFrame:
    "The option-chain, market and time families of one symbol, written directly in plain pandas (the reference)."
    f = raw[FAMILY_INPUTS].astype("float64")
    lpo, lpv = np.log(f.pcr_oi.where(f.pcr_oi > 0)), np.log(f.pcr_volume.where(f.pcr_volume > 0))
    fp, foi = f.futures_price.diff(15), f.futures_oi.diff(15)
    known = fp.notna() & foi.notna()
    local = raw.timestamp.dt.tz_convert(IST)
    return pd.DataFrame({
        "log_pcr_oi": lpo, "log_pcr_oi_chg_15": lpo.diff(15), "log_pcr_oi_chg_60": lpo.diff(60), "log_pcr_volume": lpv,
        "log_pcr_volume_ema_15": lpv.ewm(span=15, adjust=False, ignore_na=True).mean(),
        "log_pcr_oi_atm": np.log(f.pcr_oi_atm.where(f.pcr_oi_atm > 0)),
        "max_pain_distance": (f.max_pain_strike - f.close) / f.close,
        "atm_shift_1": f.atm_strike.diff() / STRIKE_STEP, "atm_shift_15": f.atm_strike.diff(15) / STRIKE_STEP,
        "oi_concentration_atm": f.oi_concentration_atm,
        "call_oi_chg_rate_15": f.call_oi.pct_change(15, fill_method=None), "put_oi_chg_rate_15": f.put_oi.pct_change(15, fill_method=None),
        "long_buildup": ((fp > 0) & (foi > 0)).astype(float).where(known), "short_buildup": ((fp < 0) & (foi > 0)).astype(float).where(known),
        "short_covering": ((fp > 0) & (foi < 0)).astype(float).where(known), "long_unwinding": ((fp < 0) & (foi < 0)).astype(float).where(known),
        "atm_iv": f.atm_iv, "iv_skew": f.iv_skew, "iv_term": f.atm_iv - f.next_atm_iv, "atm_iv_chg_15": f.atm_iv.diff(15),
        "vix": f.vix, "vix_chg_15": np.log(f.vix.where(f.vix > 0)).diff(15), "vix_term": f.vix_far - f.vix_near,
        "gex_sign": np.sign(f.gex), "gex_log": np.sign(f.gex) * np.log1p(f.gex.abs() / 1e7), "futures_basis": f.futures_basis,
        "futures_oi_chg_15": f.futures_oi.pct_change(15, fill_method=None),
        "breadth": (f.advances - f.declines) / (f.advances + f.declines), "fii_flow": f.fii_flow / 1000, "dii_flow": f.dii_flow / 1000,
        "book_imbalance": (f.book_bid_qty - f.book_ask_qty) / (f.book_bid_qty + f.book_ask_qty),
        "days_to_expiry": f.days_to_expiry, "is_expiry_day": (f.days_to_expiry < 1).astype(float).where(f.days_to_expiry.notna()),
        "time_of_day": (local.dt.hour * 60 + local.dt.minute - OPEN_MINUTE) / SESSION_MINUTES,
        "day_of_week": local.dt.day_of_week.astype(float)})


def library_families(raw: pd.DataFrame) -> pd.DataFrame:
    "The same families through oi_ml.features' public family functions."
    return pd.concat([pcr_features(raw), structure_features(raw, STRIKE_STEP), buildup_features(raw), volatility_features(raw),
                      flow_features(raw), time_features(raw, OPEN_MINUTE, SESSION_MINUTES)], axis=1)


def library_indicators(raw: pd.DataFrame) -> pd.DataFrame:
    "The indicator library as `compute_all_features` calls it (session = IST trading date)."
    session = raw.timestamp.dt.tz_convert(IST).dt.strftime("%Y%m%d").astype("int64")
    return compute_indicators_by_symbol(raw.assign(session_id=session), symbol_col="symbol", time_col="timestamp", session_col="session_id")


def simulate_year(root: Path, n_days: int) -> pd.DataFrame:
    "Setup: `n_days` simulated NSE days in a temporary warehouse, read back as `ml_features` rows."
    cfg = RunConfig(data_dir=str(root / "data"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2024-08-01", n_days=n_days, seed=0, run_cfg=cfg)
        return load_historical_data_for_ml(con, "NSE")


def peak_rss_bytes() -> int:
    "This process image's peak resident set (VmHWM). Unlike getrusage's ru_maxrss it is not inherited across fork/exec."
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child_build(path: str) -> None:
    "Child process: load the frame, build the features once, print peak RSS (bytes) after loading and after the build."
    raw = pd.read_parquet(path)
    prepare_training_features(raw.iloc[:500])                                   # warm-up (numba cache load)
    base = peak_rss_bytes()
    t0 = time.perf_counter(); prepare_training_features(raw); seconds = time.perf_counter() - t0
    print(json.dumps({"rss_after_load_bytes": base, "max_rss_bytes": peak_rss_bytes(), "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=250, help="simulated NSE trading days (one year = 250)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        t0 = time.perf_counter(); raw = simulate_year(Path(tmp), args.days); setup_s = time.perf_counter() - t0
        print(f"setup: {args.days} simulated NSE days, {len(raw):,} bars x {raw.shape[1]} columns in {setup_s:.0f} s")
        prepare_training_features(raw.iloc[:500]); library_indicators(raw.iloc[:500])             # warm-up

        ours = library_families(raw); ref = pandas_reference_families(raw)
        worst = max(float(np.nanmax(np.abs(ours[c].to_numpy() - ref[c].to_numpy()), initial=0.0)) for c in ref.columns)
        assert list(ours.columns) == list(ref.columns) and all(ours[c].isna().equals(ref[c].isna()) for c in ref.columns)
        assert worst < 1e-9, worst

        build_s = median_seconds(lambda: prepare_training_features(raw), args.repeats)
        indicators_s = median_seconds(lambda: library_indicators(raw), args.repeats)
        families_s = median_seconds(lambda: library_families(raw), args.repeats)
        reference_s = median_seconds(lambda: pandas_reference_families(raw), args.repeats)

        tracemalloc.start(); prepare_training_features(raw); _, traced_peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
        path = Path(tmp) / "raw.parquet"; raw.to_parquet(path)
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(path)], capture_output=True, text=True, check=True)
        rss = json.loads(child.stdout.strip().splitlines()[-1])

    results = {
        "days": args.days, "bars": len(raw), "input_columns": int(raw.shape[1]), "feature_columns": len(REQUIRED_FEATURE_COLUMNS),
        "repeats": args.repeats, "setup_seconds": setup_s,
        "build_seconds": build_s, "indicators_seconds": indicators_s, "families_seconds": families_s,
        "pandas_reference_families_seconds": reference_s,
        "build_vs_pandas_reference": build_s / reference_s, "families_vs_pandas_reference": families_s / reference_s,
        "families_max_abs_diff_vs_reference": worst,
        "bars_per_second": len(raw) / build_s,
        "tracemalloc_peak_bytes": traced_peak, "child_rss_after_load_bytes": rss["rss_after_load_bytes"],
        "child_max_rss_bytes": rss["max_rss_bytes"], "child_build_seconds": rss["seconds"],
        "parent_peak_rss_bytes_incl_simulation": peak_rss_bytes(),
        "target_under_30s": build_s < TARGET_SECONDS, "target_under_2GiB": max(traced_peak, rss["max_rss_bytes"]) < TARGET_BYTES,
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "numba": numba.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0], "platform": platform.platform()},
    }
    mib = lambda b: b / 2 ** 20
    print(f"{'feature build, ' + format(len(raw), ',') + ' bars':44s} {'median s':>10s} {'ratio':>8s}")
    print(f"{'  prepare_training_features (full)':44s} {build_s:10.2f} {results['build_vs_pandas_reference']:7.1f}x   target < {TARGET_SECONDS:.0f} s: {results['target_under_30s']}")
    print(f"{'  indicator library part':44s} {indicators_s:10.2f}")
    print(f"{'  option/market/time families (library)':44s} {families_s:10.2f} {results['families_vs_pandas_reference']:7.1f}x")
    print(f"{'  same families in plain pandas (reference)':44s} {reference_s:10.2f} {1.0:7.1f}x")
    print(f"memory: tracemalloc peak {mib(traced_peak):,.0f} MiB; child process peak RSS {mib(rss['max_rss_bytes']):,.0f} MiB "
          f"(after loading {mib(rss['rss_after_load_bytes']):,.0f} MiB); target < 2 GiB: {results['target_under_2GiB']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child": child_build(sys.argv[2])
    else: main()

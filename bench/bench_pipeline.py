"""Benchmark: simulate -> store -> ml_features -> export for one exchange over one year of 1-minute bars.

Targets (issue 2): one year for one exchange in under 60 s and under 2 GiB peak memory.
Reference measured in the same run: bulk-loading the same simulated frames into a DuckDB table without keys
(`CREATE TABLE AS SELECT` from pandas), the floor of any store; the store's overhead is reported as a ratio to it.
Usage: python bench/bench_pipeline.py [--days 250] [--exchange NSE]
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from oi_ml.config import RunConfig, get_exchange_config
from oi_ml.datasets import export_training_window
from oi_ml.simulate import (_resolve_days, _chunks, book_frame, chain_frame, market_state, simulate_latent, simulate_market,
                            underlying_frames)
from oi_ml.store import build_ml_features, connect


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_bulk_load(exchange: str, days: int, cfg: RunConfig) -> tuple[float, float, int]:
    "Generate the same frames, then time a key-less bulk load into a scratch DuckDB (the store's floor)."
    ex = get_exchange_config(exchange)
    t0 = time.perf_counter()
    lp = simulate_latent(ex, _resolve_days(ex, cfg.simulation.start, None, days), 1, 0, 1.0)
    frames = underlying_frames(ex, lp, 0, cfg.risk_free_rate)
    state = market_state(lp, frames)
    chain = [chain_frame(ex, lp, state, s, 0, cfg.simulation, cfg.risk_free_rate, 3) for s in _chunks(lp, cfg.simulation.chunk_days, False, "")]
    book = [book_frame(ex, lp, state, s, 0) for s in _chunks(lp, cfg.simulation.chunk_days, False, "")]
    generate_s = time.perf_counter() - t0
    con = duckdb.connect(str(Path(tempfile.mkdtemp()) / "ref.duckdb"))
    t0 = time.perf_counter()
    n = 0
    for name, frame_list in [("bars", [frames["underlying_bars"]]), ("chain", chain), ("book", book), ("vix", [frames["vix_term_structure"]])]:
        for i, f in enumerate(frame_list):
            con.register("f", f)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM f" if i == 0 else f"INSERT INTO {name} SELECT * FROM f")
            con.unregister("f"); n += len(f)
    con.close()
    return generate_s, time.perf_counter() - t0, n


def main(days: int, exchange: str) -> dict:
    cfg = RunConfig(data_dir=tempfile.mkdtemp(prefix="oi_ml_bench_"))
    con = connect(cfg)
    simulate_market(con, exchange, n_days=1, run_cfg=cfg)                      # warm-up: numba compile, SQL plans
    t0 = time.perf_counter(); summary = simulate_market(con, exchange, cfg.simulation.start, n_days=days, run_cfg=cfg); sim_s = time.perf_counter() - t0
    t0 = time.perf_counter(); build_ml_features(con, exchange); feat_s = time.perf_counter() - t0
    t0 = time.perf_counter(); manifest = export_training_window(con, exchange, run_cfg=cfg); export_s = time.perf_counter() - t0
    con.close()
    peak = peak_mib()
    gen_s, ref_load_s, ref_rows = reference_bulk_load(exchange, days, cfg)
    rows = sum(summary["rows"].values())
    total = sim_s + export_s
    out = dict(exchange=exchange, days=days, bars=summary["rows"]["underlying_bars"], rows_written=rows,
               simulate_store_features_s=round(sim_s, 2), ml_features_rebuild_s=round(feat_s, 2), export_s=round(export_s, 2),
               total_s=round(total, 2), rows_per_s=round(rows / sim_s), peak_rss_mib=round(peak),
               reference_generate_s=round(gen_s, 2), reference_bulk_load_s=round(ref_load_s, 2), reference_rows=ref_rows,
               store_overhead_ratio=round((sim_s - gen_s) / ref_load_s, 2),
               targets=dict(total_s_under=60, peak_rss_mib_under=2048),
               meets_targets=bool(total < 60 and peak < 2048), dataset_version=manifest["version"])
    print(f"one year ({days} trading days) of 1-minute bars, {exchange}: {out['bars']:,} bars, {rows:,} rows written")
    print(f"  simulate+store+ml_features {sim_s:6.1f} s   ({out['rows_per_s']:,} rows/s)")
    print(f"  ml_features rebuild (SQL)  {feat_s:6.1f} s")
    print(f"  export dataset version     {export_s:6.1f} s")
    print(f"  total                      {total:6.1f} s   (target < 60 s)")
    print(f"  peak RSS                   {peak:6.0f} MiB (target < 2048 MiB)")
    print(f"  reference: generate frames {gen_s:.1f} s, key-less bulk load {ref_load_s:.1f} s; "
          f"store+SQL overhead = {out['store_overhead_ratio']}x the bulk load")
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/pipeline.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(); p.add_argument("--days", type=int, default=250); p.add_argument("--exchange", default="NSE")
    a = p.parse_args(); main(a.days, a.exchange)

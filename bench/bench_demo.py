"""Benchmark: `make demo` stage timings for one exchange, and the approval pack's overhead over the steps it reports on.

Runs simulate + the whole retrain pipeline (as `make demo` does per exchange) in a temporary data dir and reads each
step's wall time from the run manifest. Target (issue 7): the pack step costs under 30 % of the steps it reports on.
Usage: python bench/bench_demo.py [--days 60] [--exchange NSE]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from oi_ml.config import RunConfig
from oi_ml.pipeline import RetrainConfig, run_retrain
from oi_ml.simulate import simulate_market
from oi_ml.store import connect


def main(days: int, exchange: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="oi_ml_demo_bench_"))
    cfg = RunConfig(data_dir=str(root / "data"), reports_dir=str(root / "reports"))
    t0 = time.perf_counter()
    with connect(cfg) as con: simulate_market(con, exchange, n_days=days, run_cfg=cfg)
    simulate_s = time.perf_counter() - t0
    t0 = time.perf_counter(); out = run_retrain(RetrainConfig(exchange), cfg); retrain_s = time.perf_counter() - t0
    steps = {k: v for k, v in out["timings"].items() if v is not None}
    reported = sum(v for k, v in steps.items() if k != "pack")
    result = dict(exchange=exchange, days=days, simulate_s=round(simulate_s, 1), retrain_s=round(retrain_s, 1),
                  steps_s={k: round(v, 1) for k, v in steps.items()}, pack_s=round(steps.get("pack", 0), 1),
                  pack_overhead_ratio=round(steps.get("pack", 0) / reported, 3), target_pack_overhead_under=0.30,
                  gate=out["gate_line"])
    print(f"make demo stages for {exchange}, {days} simulated trading days:")
    print(f"  simulate            {simulate_s:7.1f} s")
    for k, v in steps.items(): print(f"  {k:<19} {v:7.1f} s")
    print(f"  pack overhead = pack / other steps = {result['pack_overhead_ratio']:.1%} (target < 30 %)")
    print(f"  {out['gate_line']}")
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/demo.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(); p.add_argument("--days", type=int, default=60); p.add_argument("--exchange", default="NSE")
    a = p.parse_args(); main(a.days, a.exchange)

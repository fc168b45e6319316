"""Study (not a benchmark: `make bench` runs bench/bench_*.py only): does the promotion gate separate a planted signal
from noise on seeds other than the one its thresholds were set on?

For each seed it simulates 60 NSE sessions with a planted signal (strength 2) and a null market (strength 0), runs the
whole retrain pipeline exactly as `tests/test_pipeline.py::planted_and_null` does (4 AutoML trials per walk-forward
segment, 20-day windows, 10-day steps, then the gate), and records each gate report's decision, failed criteria,
deflated Sharpe ratio, PBO and out-of-sample trade count. Run from the repo root:
`.venv/bin/python bench/study_gate_seeds.py [seeds, default 2,3,4,5]` (about 2.5 min per market on this machine);
writes bench/results/gate_seeds.json."""
import json
import sys
import tempfile
import time
from pathlib import Path

from oi_ml.config import RunConfig
from oi_ml.pipeline import RetrainConfig, run_retrain
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import TrainConfig

RESULTS = Path("bench/results/gate_seeds.json")
RETRAIN = RetrainConfig("NSE", automl=True, automl_trials=4, automl_window_days=20, automl_step_days=10,
                        train=TrainConfig(n_splits=3, max_rounds=150, min_regime_rows=1500))


def gate_of_market(root: Path, strength: float, seed: int) -> dict:
    "The gate report's key facts for one simulated market run through the whole pipeline."
    started = time.perf_counter()
    name = f"strength{strength:g}_seed{seed}"
    cfg = RunConfig(data_dir=str(root / name / "data"), reports_dir=str(root / name / "reports"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=60, seed=seed, signal_strength=strength, run_cfg=cfg)
    run_id = run_retrain(RETRAIN, cfg)["candidate_run"]
    gate = json.loads((Path(cfg.models_dir) / "NSE" / run_id / "reports" / "gate_report.json").read_text())
    value = {c["name"]: c["value"] for c in gate["criteria"]}
    return {"signal_strength": strength, "seed": seed, "decision": gate["decision"], "failed": gate["failed"],
            "dsr": gate["dsr"].get("dsr"), "n_trials": gate["dsr"].get("n_trials"), "pbo": gate["pbo"].get("pbo"),
            "oos_sharpe": value["oos_sharpe"], "n_trades": value["min_trades"],
            "minutes": round((time.perf_counter() - started) / 60, 1)}


def main():
    seeds = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "2,3,4,5").split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for strength in (2.0, 0.0):
                rows.append(gate_of_market(Path(tmp), strength, seed))
                r = rows[-1]
                print(f"seed {seed}, strength {strength:g}: {r['decision']:4s} dsr {r['dsr']:.3f}, pbo {r['pbo']:.2f}, "
                      f"{r['n_trades']} trades, failed {r['failed']}", flush=True)
    planted = [r for r in rows if r["signal_strength"] > 0]
    null = [r for r in rows if r["signal_strength"] == 0]
    print(f"planted markets passed: {sum(r['decision'] == 'PASS' for r in planted)} of {len(planted)}; "
          f"null markets passed: {sum(r['decision'] == 'PASS' for r in null)} of {len(null)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"study": "gate_seeds", "markets": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

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

from oi_ml.pipeline import run_retrain

sys.path.insert(0, "tests")
from test_pipeline import GATE_RETRAIN, _gate, _market  # noqa: E402  the slow gate tests' settings and helpers, not a copy

RESULTS = Path("bench/results/gate_seeds.json")


def gate_of_market(root: Path, strength: float, seed: int) -> dict:
    "The gate report's key facts for one simulated market run through the whole pipeline."
    started = time.perf_counter()
    cfg = _market(root, f"strength{strength:g}_seed{seed}", days=60, strength=strength, seed=seed)
    gate = _gate(cfg, run_retrain(GATE_RETRAIN, cfg)["candidate_run"])
    value = {c["name"]: c["value"] for c in gate["criteria"]}
    return {"signal_strength": strength, "seed": seed, "decision": gate["decision"], "failed": gate["failed"],
            "dsr": gate["dsr"].get("dsr"), "n_trials": gate["dsr"].get("n_trials"), "pbo": gate["pbo"].get("pbo"),
            "policy_psr": value.get("policy_psr"),
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
                fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
                print(f"seed {seed}, strength {strength:g}: {r['decision']:4s} dsr {fmt(r['dsr'], '.3f')}, "
                      f"policy psr {fmt(r['policy_psr'], '.3f')}, pbo {fmt(r['pbo'], '.2f')}, "
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

"""Study (not a benchmark: `make bench` runs bench/bench_*.py only): does the promotion gate separate a planted signal
from noise on seeds other than the one its thresholds were set on?

For each seed it simulates 60 NSE sessions with a planted signal (strength 2) and a null market (strength 0), runs the
whole retrain pipeline exactly as `tests/test_pipeline.py::planted_and_null` does (4 AutoML trials per walk-forward
segment, 20-day windows, 10-day steps, then the gate), and records each gate report's decision, failed criteria,
deflated Sharpe ratio, PBO and out-of-sample trade count, and the walk-forward backtests (the candidate's training procedure
re-fit per AutoML segment; the gate's `walk_forward` criterion reads them): each window's trades and net return, and the
pooled windows' net return and probabilistic Sharpe ratio against zero of their daily net returns. Run from the repo root:
`.venv/bin/python bench/study_gate_seeds.py [seeds, default 2,3,4,5]` (about 2.5 min per market on this machine);
writes bench/results/gate_seeds.json."""
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from oi_ml.gate import policy_sharpe, walk_forward_evidence
from oi_ml.pipeline import run_retrain

sys.path.insert(0, "tests")
from test_pipeline import GATE_RETRAIN, _gate, _market  # noqa: E402  the slow gate tests' settings and helpers, not a copy

RESULTS = Path("bench/results/gate_seeds.json")


def walk_forward_of_run(run_dir: Path) -> dict:
    "Each walk-forward window's trades and net return, and the pooled windows' net return and PSR vs 0 (daily, net)."
    evidence = walk_forward_evidence(run_dir)   # what the gate's `walk_forward` criterion reads, with the same checks
    windows = [{k: w[k] for k in ("window", "n_trades", "return_net")} for w in evidence.get("windows", [])]
    policy = policy_sharpe(pd.Series(evidence.get("daily_returns", {}), dtype=float))
    return {"windows": windows, "pooled_return_net": evidence.get("return_net"), "pooled_days": evidence.get("sessions", 0),
            "pooled_psr_vs_zero": policy["psr_vs_zero"], "pooled_sr_daily": policy["sr_daily"],
            "losing_windows": sum(w["n_trades"] > 0 and w["return_net"] < 0 for w in windows),
            "windows_without_trades": sum(w["n_trades"] == 0 for w in windows)}


def gate_of_market(root: Path, strength: float, seed: int) -> dict:
    "The gate report's key facts for one simulated market run through the whole pipeline."
    started = time.perf_counter()
    cfg = _market(root, f"strength{strength:g}_seed{seed}", days=60, strength=strength, seed=seed)
    run_id = run_retrain(GATE_RETRAIN, cfg)["candidate_run"]
    gate = _gate(cfg, run_id)
    value = {c["name"]: c["value"] for c in gate["criteria"]}
    return {"signal_strength": strength, "seed": seed, "decision": gate["decision"], "failed": gate["failed"],
            "dsr": gate["dsr"].get("dsr"), "n_trials": gate["dsr"].get("n_trials"), "pbo": gate["pbo"].get("pbo"),
            "policy_psr": value.get("policy_psr"),
            "oos_sharpe": value["oos_sharpe"], "n_trades": value["min_trades"],
            "walk_forward": walk_forward_of_run(Path(cfg.models_dir) / "NSE" / run_id),
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
                wf = r["walk_forward"]
                print(f"  walk-forward: {[(w['n_trades'], fmt(w['return_net'], '.4f')) for w in wf['windows']]}, pooled return "
                      f"{fmt(wf['pooled_return_net'], '.4f')} over {wf['pooled_days']} days, PSR vs 0 {fmt(wf['pooled_psr_vs_zero'], '.3f')}",
                      flush=True)
    planted = [r for r in rows if r["signal_strength"] > 0]
    null = [r for r in rows if r["signal_strength"] == 0]
    print(f"planted markets passed: {sum(r['decision'] == 'PASS' for r in planted)} of {len(planted)}; "
          f"null markets passed: {sum(r['decision'] == 'PASS' for r in null)} of {len(null)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"study": "gate_seeds", "markets": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""End-to-end tests of the retrain pipeline (issue 7) and the gate on planted vs null markets (issue 6).

Tiny simulated markets made here; every data/reports dir is a tmp_path.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from oi_ml.config import RunConfig
from oi_ml.packs import check_in_browser, chromium_path
from oi_ml.datasets import list_datasets, verify_dataset
from oi_ml.pipeline import PipelineStepError, RetrainConfig, run_retrain
from oi_ml.gate import evaluate_candidate
from oi_ml.registry import RegistryError, current_version, deploy_model, load_version
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import TrainConfig, verify_run

from conftest import TINY_TRAIN


def _market(tmp_path, name, days=6, strength=1.0, seed=0):
    cfg = _market_cfg(tmp_path, name)
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=days, seed=seed, signal_strength=strength, run_cfg=cfg)
    return cfg


def _market_cfg(tmp_path, name):
    return RunConfig(data_dir=str(tmp_path / name / "data"), reports_dir=str(tmp_path / name / "reports"))


def _gate(cfg, run_id):
    return json.loads((Path(cfg.models_dir) / "NSE" / run_id / "reports" / "gate_report.json").read_text())


def test_retrain_is_reproducible_and_reuses_finished_steps(tmp_path):
    rc = RetrainConfig("NSE", automl=False, train=TINY_TRAIN)
    a, b = _market(tmp_path, "a"), _market(tmp_path, "b")
    out_a = run_retrain(rc, a)
    out_b = run_retrain(rc, b)                      # same inputs, another machine-like fresh data dir
    assert out_a["candidate_run"] == out_b["candidate_run"] and out_a["dataset_version"] == out_b["dataset_version"]
    files_a = json.loads((Path(a.models_dir) / "NSE" / out_a["candidate_run"] / "manifest.json").read_text())["files"]
    files_b = json.loads((Path(b.models_dir) / "NSE" / out_b["candidate_run"] / "manifest.json").read_text())["files"]
    assert files_a == files_b                       # byte-identical models and training report
    ga, gb = _gate(a, out_a["candidate_run"]), _gate(b, out_b["candidate_run"])
    assert ga["criteria"] == gb["criteria"] and ga["candidate"]["backtest"] == gb["candidate"]["backtest"]
    assert out_a["gate_line"] == out_b["gate_line"] and out_a["gate_line"].startswith("gate: FAIL (")
    again = run_retrain(rc, a)                      # rerun: every step reused from the content-addressed cache
    steps = json.loads(Path(again["manifest"]).read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"reused"}
    assert Path(again["pack"]).exists() and (Path(a.reports_dir) / "index.html").exists()
    windows = json.loads((Path(a.models_dir) / "NSE" / out_a["candidate_run"] / "reports" / "backtest_windows.json").read_text())
    assert windows["walk_forward"]["reason"].startswith("no walk-forward segment: index spans")   # 6 sessions < 20 + 10
    assert set(windows["windows"]) == {"in_sample", "out_of_sample"}
    model_file = Path(a.models_dir) / "NSE" / out_a["candidate_run"] / sorted(files_a)[0]
    model_file.write_bytes(model_file.read_bytes() + b" ")   # a corrupted artefact behind a cached step
    with pytest.raises(PipelineStepError, match=f"step 'train' failed: ModelIntegrityError: {re.escape(str(model_file))}"):
        run_retrain(rc, a)                          # not silently reused, and not silently retrained over
    steps = json.loads(Path(again["manifest"]).read_text())["steps"]
    assert steps["dataset"]["status"] == "reused" and steps["train"]["status"] == "failed"
    assert str(model_file) in steps["train"]["cache_rejected"] and "does not match" in steps["train"]["cache_rejected"]


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_candidate_pack_renders_every_chart_in_chromium(tmp_path):
    cfg = _market(tmp_path, "p", strength=3.0)   # a model that trades: the out-of-sample histogram needs trades
    out = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)
    shot = tmp_path / "pack.png"
    check = check_in_browser(out["pack"], screenshot=shot)
    assert check["charts_expected"] >= 8 and check["charts_rendered"] == check["charts_expected"], check
    assert check["console_errors"] == [], check["console_errors"]
    assert shot.exists() and shot.stat().st_size > 50_000            # a real rendered page, not a blank one
    html = Path(out["pack"]).read_text()
    assert "SIMULATED DATA" in html and "GATE FAIL" in html and "Sign-off" in html and "plotly" in html
    # every window carries the random-signal distribution; the pack shows its table and the out-of-sample histogram
    saved = json.loads((Path(cfg.models_dir) / "NSE" / out["candidate_run"] / "reports" / "backtest_windows.json").read_text())
    for name, window in saved["windows"].items():
        dist, trades = window["random_distribution"], window["benchmarks"]["ml_signal"]["n_trades"]
        assert "random_signal_distribution" not in window["benchmarks"]           # the benchmark rows stay strategies only
        assert dist["target_trades"] == trades and dist["n_runs"] == (200 if trades else 0), (name, dist["note"])
        if trades: assert 1 / 201 <= dist["p_value_return_net"] <= 1 and len(dist["draws"]["return_net"]) == 200
    assert "Does the strategy beat chance?" in html and "p (net return)" in html and "random_signal (one draw)" in html
    assert "random-signal draws and the strategy" in html and "not measured in this run" not in html
    index = (Path(cfg.reports_dir) / "index.html").read_text()
    assert "approval_pack.html" in index and "FAIL" in index


def test_walk_forward_windows_are_traded_by_models_fit_only_before_them(tmp_path, monkeypatch):
    import oi_ml.pipeline as pipeline
    fits = []
    real_fit = pipeline.fit_calibrated
    monkeypatch.setattr(pipeline, "fit_calibrated", lambda table, rows, cfg: fits.append((table, rows)) or real_fit(table, rows, cfg))
    cfg = _market(tmp_path, "wf")
    out = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN, automl_window_days=2, automl_step_days=1), cfg)
    folder = Path(cfg.models_dir) / "NSE" / out["candidate_run"]
    saved = json.loads((folder / "reports" / "backtest_windows.json").read_text())
    segments, oos_start = saved["walk_forward"]["segments"], saved["windows"]["out_of_sample"]["start"]
    assert len(segments) == len(fits) >= 2 and saved["walk_forward"]["reason"] is None
    assert set(saved["windows"]) == {"in_sample", *[f"walk_forward_{i}" for i in range(len(segments))], "out_of_sample"}
    assert all(w["random_distribution"]["n_runs"] in (0, 200) for w in saved["windows"].values())
    ist = lambda t: pd.DatetimeIndex(t).tz_convert("Asia/Kolkata").date.astype(str)
    for seg, (table, rows) in zip(segments, fits):
        window = saved["windows"][f"walk_forward_{seg['segment']}"]
        assert [window["start"], window["end"]] == seg["window"] and window["end"] < oos_start
        first_bar = table.features.timestamp[ist(table.features.timestamp) >= window["start"]].min()
        assert table.label_end_time.iloc[rows].max() < first_bar           # no training label reaches the window
        train_days = sorted(set(ist(table.features.timestamp.iloc[rows])))
        assert len(train_days) <= 2 and train_days[-1] < window["start"]   # the rolling two sessions before it
        trades = pd.read_parquet(folder / "reports" / f"trades_walk_forward_{seg['segment']}.parquet")
        assert set(trades.model_version) <= {seg["model_version"]} and seg["model_version"] != out["candidate_run"]
    oos = pd.read_parquet(folder / "reports" / "trades_out_of_sample.parquet")
    assert set(oos.model_version) <= {out["candidate_run"]}
    pack = Path(out["pack"]).read_text()                                 # the reviewer sees which model traded each window
    assert "not by the candidate model" in pack and all(s["model_version"] in pack for s in segments)
    # the training window's length is the backtest's own record (no AutoML run here to borrow it from)
    assert (saved["walk_forward"]["window_days"], saved["walk_forward"]["step_days"]) == (2, 1)
    assert "rolling 2 sessions (automl_window_days)" in pack


def test_a_failed_step_stops_the_run_and_leaves_the_registry(tmp_path, monkeypatch):
    cfg = _market(tmp_path, "m")
    first = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)
    (Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "reports" / "gate_report.json").write_text(
        json.dumps({"candidate_run": first["candidate_run"], "baseline": None, "passed": True, "decision": "PASS", "note": "forced for the test",
                    "candidate_manifest_sha256": hashlib.sha256((Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "manifest.json").read_bytes()).hexdigest()}))
    deploy_model("NSE", first["candidate_run"], "tester", "baseline for the fault test", run_cfg=cfg)
    before = current_version("NSE", cfg)
    import oi_ml.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("injected failure inside training")
    monkeypatch.setattr(pipeline, "train_model", boom)
    with pytest.raises(PipelineStepError, match="step 'train' failed: RuntimeError: injected failure"):
        run_retrain(RetrainConfig("NSE", automl=False, train=TrainConfig(n_splits=2, max_rounds=41, min_regime_rows=10**6,
                                                                           top_k_features=15, shap_rows=50)), cfg)
    assert current_version("NSE", cfg) == before
    load_version("NSE", before, cfg)                # still verifies
    for row in list_datasets(cfg, "NSE").itertuples(): verify_dataset("NSE", row.version, cfg)
    verify_run(Path(cfg.models_dir) / "NSE" / first["candidate_run"])


def test_horizon_key_picks_the_production_model_the_gate_compares_with(tmp_path):
    cfg = _market(tmp_path, "h")
    first = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)
    (Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "reports" / "gate_report.json").write_text(
        json.dumps({"candidate_run": first["candidate_run"], "baseline": None, "passed": True, "decision": "PASS", "note": "forced for the test",
                    "candidate_manifest_sha256": hashlib.sha256((Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "manifest.json").read_bytes()).hexdigest()}))
    deploy_model("NSE", first["candidate_run"], "tester", "15m baseline", run_cfg=cfg, horizon="15m")
    assert current_version("NSE", cfg) is None and current_version("NSE", cfg, horizon="15m") == "v0001"
    other = TrainConfig(n_splits=2, max_rounds=41, min_regime_rows=10**6, top_k_features=15, shap_rows=50)
    keyed = run_retrain(RetrainConfig("NSE", automl=False, train=other, horizon="15m"), cfg)
    assert keyed["gate"]["baseline"] == "v0001"                       # compared with the NSE/15m production model
    assert _gate(cfg, keyed["candidate_run"])["horizon"] == "15m"
    assert "registry line: <strong>NSE/15m</strong>" in Path(keyed["pack"]).read_text()   # the reviewer sees the key
    plain = run_retrain(RetrainConfig("NSE", automl=False, train=other), cfg)
    assert plain["gate"]["baseline"] is None                           # the exchange's own pointer is empty
    assert "registry line: <strong>NSE</strong>" in Path(plain["pack"]).read_text()
    with pytest.raises(ValueError, match="invalid horizon"):
        run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN, horizon="15min"), cfg)
    with pytest.raises(RegistryError, match="label horizon is 15m .*not the requested horizon 30m; not retraining"):
        run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN, horizon="30m"), cfg)   # refused before any step runs
    with pytest.raises(RegistryError, match="not gating it against the NSE/30m production model"):
        evaluate_candidate("NSE", keyed["candidate_run"], run_cfg=cfg, write=False, horizon="30m")


def test_killing_a_step_midway_leaves_earlier_artefacts_and_registry_intact(tmp_path):
    cfg = _market(tmp_path, "k")
    first = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)
    (Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "reports" / "gate_report.json").write_text(
        json.dumps({"candidate_run": first["candidate_run"], "baseline": None, "passed": True,   # forced for the test
                    "candidate_manifest_sha256": hashlib.sha256((Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "manifest.json").read_bytes()).hexdigest()}))
    deploy_model("NSE", first["candidate_run"], "tester", "baseline", run_cfg=cfg)
    before = current_version("NSE", cfg)
    code = ("from oi_ml.pipeline import RetrainConfig, run_retrain; from oi_ml.train import TrainConfig; from oi_ml.config import RunConfig; "
            f"run_retrain(RetrainConfig('NSE', automl=False, train=TrainConfig(n_splits=3, max_rounds=60, min_regime_rows=10**6, "
            f"top_k_features=15, shap_rows=50)), RunConfig(data_dir={cfg.data_dir!r}, reports_dir={cfg.reports_dir!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    runs = Path(cfg.data_dir) / "runs" / "NSE"
    deadline = time.time() + 300
    killed_in = None
    while time.time() < deadline and proc.poll() is None:       # kill the process while training is running
        for m in runs.glob("*/run_manifest.json"):
            try: steps = json.loads(m.read_text())["steps"]
            except (OSError, ValueError): continue
            if steps.get("train", {}).get("status") == "running" and m.parent.name != Path(first["manifest"]).parent.name:
                time.sleep(1.0); os.killpg(proc.pid, signal.SIGKILL); killed_in = "train"
        time.sleep(0.2)
    proc.wait(timeout=30)
    assert killed_in == "train", "the subprocess finished before it could be killed mid-training"
    assert current_version("NSE", cfg) == before
    load_version("NSE", before, cfg)
    for row in list_datasets(cfg, "NSE").itertuples(): verify_dataset("NSE", row.version, cfg)
    for run in (Path(cfg.models_dir) / "NSE").glob("run-*"):   # no half-written run folder is visible
        verify_run(run)


GATE_RETRAIN = RetrainConfig("NSE", automl=True, automl_trials=4, automl_window_days=20, automl_step_days=10,
                             train=TrainConfig(n_splits=3, max_rounds=150, min_regime_rows=1500))


@pytest.fixture(scope="module")
def planted_and_null(tmp_path_factory):
    """A planted-signal market (strength 2) and a null one (strength 0), 60 sessions each, through the whole pipeline with
    4 AutoML trials per walk-forward segment (20-day windows, 10-day steps): 12 holdout days for the gate."""
    tmp = tmp_path_factory.mktemp("gate")
    planted = run_retrain(GATE_RETRAIN, _market(tmp, "planted", days=60, strength=2.0, seed=1))
    null = run_retrain(GATE_RETRAIN, _market(tmp, "null", days=60, strength=0.0, seed=1))
    return (_gate(_market_cfg(tmp, "planted"), planted["candidate_run"]), _gate(_market_cfg(tmp, "null"), null["candidate_run"]),
            Path(planted["pack"]))


@pytest.mark.slow
def test_gate_rejects_the_null_market(planted_and_null):
    _, null, _ = planted_and_null
    assert null["decision"] == "FAIL" and "deflated_sharpe" in null["failed"], null["failed"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_gate_rejects_null_markets_of_other_seeds(tmp_path, seed):
    "The thresholds were set looking at seed 1: noise from other seeds must fail on the deflated Sharpe ratio too."
    cfg = _market(tmp_path, "null", days=60, strength=0.0, seed=seed)
    report = _gate(cfg, run_retrain(GATE_RETRAIN, cfg)["candidate_run"])
    assert report["decision"] == "FAIL" and "deflated_sharpe" in report["failed"], report["failed"]


@pytest.mark.slow
def test_gate_finds_the_planted_signal(planted_and_null):
    """Every criterion but PBO passes on the planted market. PBO is not asserted: for trials that all find the same edge,
    the in-sample winner's out-of-sample rank is close to a lottery (see 41_gate). Since AutoML is kept out of the
    holdout (two segments on the 48 in-sample sessions), this seed's PBO measured 0.556 and the gate FAILs it on PBO
    alone. On seeds 2-5 (bench/study_gate_seeds.py, 24 Nov 2026, after the roll masks of 10_features) seeds 2, 3 and 4
    pass outright and seed 5 fails on PBO alone (0.55): a known false negative, not hidden. The `walk_forward` criterion reads the real
    walk-forward windows the backtest step wrote (the training procedure re-fit per segment) and passes here."""
    planted, _, _ = planted_and_null
    assert set(planted["failed"]) <= {"pbo"}, planted["failed"]
    wf = planted["walk_forward"]
    assert wf["available"] and len(wf["windows"]) >= 2 and wf["n_trades"] > 0 and wf["return_net"] > 0
    assert planted["dsr"]["dsr"] >= 0.95 and planted["dsr"]["n_trials"] >= 9 and planted["dsr"]["variance_basis"].startswith("pooled")
    assert planted["pbo"]["pbo"] is not None and len(planted["pbo"]["per_segment"]) >= 2


@pytest.mark.slow
def test_the_automl_pack_says_what_the_dsr_counts_and_prints_no_warnings(planted_and_null):
    """The pack of a run with AutoML: its DSR sentence says the count is the AutoML trials plus the candidate (one more
    than AutoML's own total, shown in the AutoML section), and no warning (optuna's tqdm) leaks into the reviewer's page."""
    import nbformat
    planted, _, pack = planted_and_null
    nb = nbformat.read(pack.with_suffix(".ipynb"), as_version=4)
    streams = [o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    assert not [s for s in streams if "Warning" in s], streams
    n = planted["dsr"]["n_trials"]
    assert f"({n} trials: the {n - 1} AutoML trials and the candidate;" in pack.read_text()
    assert f"{n - 1} AutoML trials in total" in pack.read_text()


def test_a_refused_deploy_is_the_runs_failed_step(tmp_path):
    """--promote with a passing gate whose baseline production has since moved on (or any other refusal): the retrain's
    manifest records the deploy step as failed and the error is a PipelineStepError naming the step."""
    from oi_ml.pipeline import RetrainRun, step_deploy
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    run_id = "run-20251030-aaaaaaaaaaaa"
    reports = Path(cfg.models_dir) / "NSE" / run_id / "reports"
    reports.mkdir(parents=True)
    (reports.parent / "manifest.json").write_text(json.dumps({"run_id": run_id, "exchange": "NSE"}))   # the run exists (deploy checks first)
    (reports / "gate_report.json").write_text(json.dumps({"candidate_run": run_id, "baseline": "v0007", "passed": True, "decision": "PASS"}))
    run = RetrainRun(RetrainConfig("NSE", promote=True), cfg, tmp_path / "run")
    run.folder.mkdir()
    with pytest.raises(PipelineStepError, match="step 'deploy' failed: RegistryError: run run-20251030-aaaaaaaaaaaa: the gate compared it with v0007"):
        step_deploy(run, {"run_id": run_id}, {"decision": "PASS"})
    recorded = json.loads((run.folder / "run_manifest.json").read_text())["steps"]["deploy"]
    assert recorded["status"] == "failed" and "serves nothing now" in recorded["error"]


def _statuses(run_cfg, rc=RetrainConfig("NSE", automl=False, train=TINY_TRAIN), until="gate"):
    """Run consolidate, dataset, features_labels, train, backtest and gate (or up to `until`) as run_retrain does;
    (step -> status, dataset step, train step)."""
    from oi_ml.pipeline import (RetrainRun, retrain_folder, step_backtest, step_consolidate, step_dataset, step_features_labels,
                                step_gate, step_train)
    run = RetrainRun(rc, run_cfg, retrain_folder(rc, run_cfg))
    ds = step_dataset(run, step_consolidate(run))
    step_features_labels(run, ds)
    trained = step_train(run, ds)
    if until != "train":
        step_backtest(run, ds, trained)
        step_gate(run, trained, None)
    return {k: v["status"] for k, v in run.steps.items()}, ds, trained


def test_a_step_runs_again_when_a_run_config_field_it_reads_changes(tmp_path):
    """The step keys hashed RetrainConfig only: with another risk_free_rate the reused 'consolidate' left ml_features with
    the old GEX, with another monitoring.live_rows the reused 'train' returned a run id train_model would not produce, and
    bar_minutes reached neither the backtest nor the gate key; then psi_alert (the drift family's calibration level) and
    bar_minutes (the labels: daily bars label across sessions) reached neither the features_labels nor the train key, so
    a run id train_model would not make was reused. A field no step reads re-runs nothing."""
    import dataclasses
    from oi_ml.datasets import read_json
    from oi_ml.store import build_ml_features
    from oi_ml.train import run_id_for, train_config_for_bars, training_code_sha256
    cfg = _market(tmp_path, "rc")
    done, reused = "done", "reused"
    first, _, trained = _statuses(cfg)
    assert set(first.values()) == {done}
    unrelated = dataclasses.replace(cfg, seed=5, quality=dataclasses.replace(cfg.quality, max_gap_minutes=9),
                                    simulation=dataclasses.replace(cfg.simulation, days=3),
                                    monitoring=dataclasses.replace(cfg.monitoring, psi_warn=0.2))
    assert set(_statuses(unrelated)[0].values()) == {reused}

    live = dataclasses.replace(cfg, monitoring=dataclasses.replace(cfg.monitoring, live_rows=500))
    steps, ds, trained_500 = _statuses(live)
    assert steps == dict(consolidate=reused, dataset=reused, features_labels=reused, train=done, backtest=done, gate=done)
    dm = read_json(Path(cfg.datasets_dir) / "NSE" / ds["version"] / "manifest.json", ValueError)
    psi = cfg.monitoring.psi_alert
    assert trained_500["run_id"] == run_id_for("NSE", dm, TINY_TRAIN, training_code_sha256(), 500, psi) != trained["run_id"]

    short = dataclasses.replace(cfg, monitoring=dataclasses.replace(cfg.monitoring, live_rows=300))   # windows short enough for a drift family
    _, _, trained_300 = _statuses(short, until="train")
    alert = dataclasses.replace(short, monitoring=dataclasses.replace(short.monitoring, psi_alert=0.4))
    steps, _, trained_04 = _statuses(alert, until="train")
    assert steps == dict(consolidate=reused, dataset=reused, features_labels=reused, train=done)
    assert trained_04["run_id"] == run_id_for("NSE", dm, TINY_TRAIN, training_code_sha256(), 300, 0.4) != trained_300["run_id"]
    drift = json.loads((Path(cfg.models_dir) / "NSE" / trained_04["run_id"] / "manifest.json").read_text())["drift_family"]
    assert drift["psi_alert"] == 0.4                        # calibrated at the level the monitor will use

    assert _statuses(dataclasses.replace(cfg, bar_minutes=5))[0] == dict(consolidate=reused, dataset=reused, features_labels=done,
                                                                        train=done, backtest=done, gate=done)
    daily = dataclasses.replace(cfg, bar_minutes=375)      # one bar a session: labels cross sessions
    steps, _, trained_daily = _statuses(daily, until="train")
    assert steps == dict(consolidate=reused, dataset=reused, features_labels=done, train=done)
    tcfg = train_config_for_bars(TINY_TRAIN, "NSE", 375)
    assert not tcfg.labels.session_segments
    assert trained_daily["run_id"] == run_id_for("NSE", dm, tcfg, training_code_sha256(), cfg.monitoring.live_rows, psi) != trained["run_id"]
    rate = dataclasses.replace(cfg, risk_free_rate=0.10)
    steps, ds_rate, _ = _statuses(rate)
    assert steps["consolidate"] == done and steps["dataset"] == done and ds_rate["content_sha256"] != ds["content_sha256"]
    with connect(rate) as con:                              # the warehouse holds ml_features at the new rate
        left = con.execute("SELECT sum(hash(x)) FROM ml_features x WHERE exchange = 'NSE'").fetchone()[0]
        build_ml_features(con, "NSE", None, None, rate)
        assert con.execute("SELECT sum(hash(x)) FROM ml_features x WHERE exchange = 'NSE'").fetchone()[0] == left


def test_the_gate_step_reruns_when_another_retrain_overwrote_its_report(tmp_path):
    """Retrains of one candidate for the NSE and NSE/15m keys share reports/gate_report.json (and the approval pack): the
    cached 'gate' verdict was reused while the file on disk, which deploy reads, was the other key's."""
    cfg = _market(tmp_path, "g")
    first = run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)
    report = Path(cfg.models_dir) / "NSE" / first["candidate_run"] / "reports" / "gate_report.json"   # forced to PASS for the test
    report.write_text(json.dumps({**_gate(cfg, first["candidate_run"]), "passed": True, "decision": "PASS", "failed": []}))
    deploy_model("NSE", first["candidate_run"], "tester", "NSE baseline", run_cfg=cfg)
    other = TrainConfig(n_splits=2, max_rounds=41, min_regime_rows=10**6, top_k_features=15, shap_rows=50)
    plain = run_retrain(RetrainConfig("NSE", automl=False, train=other), cfg)
    assert plain["gate"]["baseline"] == "v0001" and _gate(cfg, plain["candidate_run"])["horizon"] is None
    keyed = run_retrain(RetrainConfig("NSE", automl=False, train=other, horizon="15m"), cfg)
    assert keyed["candidate_run"] == plain["candidate_run"] and _gate(cfg, plain["candidate_run"])["horizon"] == "15m"
    again = run_retrain(RetrainConfig("NSE", automl=False, train=other), cfg)
    steps = json.loads(Path(again["manifest"]).read_text())["steps"]
    assert steps["train"]["status"] == "reused" and steps["gate"]["status"] == "done", steps["gate"]
    assert "gate_report.json: changed since the step wrote it" in steps["gate"]["cache_rejected"]
    report = _gate(cfg, again["candidate_run"])                     # what deploy reads is this key's again
    assert report["horizon"] is None and report["baseline"] == "v0001" == again["gate"]["baseline"]
    assert steps["pack"]["status"] == "done" and "registry line: <strong>NSE</strong>" in Path(again["pack"]).read_text()
    final = json.loads(Path(run_retrain(RetrainConfig("NSE", automl=False, train=other), cfg)["manifest"]).read_text())["steps"]
    assert {s["status"] for s in final.values()} == {"reused"}      # unchanged files: the cache is used again


def test_an_adhoc_cli_backtest_leaves_the_holdout_result_the_pack_reads(tmp_path, capsys):
    """`oi-ml backtest --run R --start D --end D` wrote the run's reports/backtest_summary.json, the holdout result the
    approval pack reads, and the pipeline's 'backtest' step only checked that the file existed."""
    from oi_ml import cli
    cfg = _market(tmp_path, "b", strength=3.0)   # a model that trades on its holdout
    rc = RetrainConfig("NSE", automl=False, train=TINY_TRAIN)
    out = run_retrain(rc, cfg)
    reports = Path(cfg.models_dir) / "NSE" / out["candidate_run"] / "reports"
    holdout = (reports / "backtest_summary.json").read_bytes()
    # the pack's out-of-sample backtest is the gate's: the holdout is whole sessions and both stop entries at its last row
    start = pd.Timestamp(json.loads((reports.parent / "manifest.json").read_text())["holdout_window"][0]).tz_convert("Asia/Kolkata")
    assert start.strftime("%H:%M") == "09:15", start
    gated, shown = json.loads((reports / "gate_report.json").read_text())["candidate"]["backtest"], json.loads(holdout)["metrics"]
    assert gated["n_trades"] == shown["n_trades"] > 0 and gated["total_pnl_net"] == pytest.approx(shown["total_pnl_net"], rel=1e-9)
    assert cli.main(["--data-dir", cfg.data_dir, "--reports-dir", cfg.reports_dir, "backtest", "--exchange", "NSE",
                     "--run", out["candidate_run"], "--start", "2025-08-04", "--end", "2025-08-05"]) == 0
    assert (reports / "backtest_summary.json").read_bytes() == holdout
    adhoc = json.loads((reports / "backtests" / "2025-08-04_2025-08-05" / "backtest_summary.json").read_text())
    assert (adhoc["config"]["start"], adhoc["config"]["end"]) == ("2025-08-04", "2025-08-05")
    # both sessions lie before the holdout: the model trained on them, and the CLI says so and records it
    manifest = json.loads((reports.parent / "manifest.json").read_text())
    assert pd.Timestamp(manifest["train_window"][0]).tz_convert("Asia/Kolkata").date() <= pd.Timestamp("2025-08-04").date()
    assert adhoc["sample"] == dict(sessions=2, in_sample_sessions=2, holdout_sessions=0, holdout_window=manifest["holdout_window"])
    assert "sample: 2 of 2 sessions lie before the model's holdout, in its training data" in capsys.readouterr().out
    assert cli.main(["--data-dir", cfg.data_dir, "--reports-dir", cfg.reports_dir, "backtest", "--exchange", "NSE",
                     "--run", out["candidate_run"], "--start", str(start.date())]) == 0   # the holdout's sessions only
    held = pd.read_parquet(reports / "equity_out_of_sample.parquet").timestamp.dt.tz_convert("Asia/Kolkata").dt.date.nunique()
    sample = json.loads((reports / "backtests" / f"{start.date()}_last" / "backtest_summary.json").read_text())["sample"]
    assert sample == dict(sessions=held, in_sample_sessions=0, holdout_sessions=held, holdout_window=manifest["holdout_window"])
    assert f"sample: all {held} sessions in the model's holdout (out of sample)" in capsys.readouterr().out

    steps = json.loads(Path(run_retrain(rc, cfg)["manifest"]).read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"reused"}
    (reports / "backtest_summary.json").write_text(json.dumps(adhoc))  # what the old CLI left: another window's result
    steps = json.loads(Path(run_retrain(rc, cfg)["manifest"]).read_text())["steps"]
    assert steps["backtest"]["status"] == "done" and "backtest_summary.json: changed" in steps["backtest"]["cache_rejected"]
    assert (reports / "backtest_summary.json").read_bytes() == holdout   # the holdout result restored, byte for byte
    assert steps["pack"]["status"] == "reused"                      # so the pack, rendered from those bytes, still holds


def test_the_consolidate_step_records_bars_blanked_as_stale(tmp_path):
    "A VIX outage of an hour: the bars past the 15-minute limit lose VIX, the warning is raised and the run manifest counts them."
    from oi_ml.pipeline import RetrainRun, retrain_folder, step_consolidate
    from oi_ml.store import StaleFeatureWarning
    cfg = _market(tmp_path, "stale", days=2)
    outage = [pd.Timestamp(f"2025-08-01 {t}", tz="Asia/Kolkata").to_pydatetime() for t in ("10:00", "11:00")]
    with connect(cfg) as con:
        con.execute("DELETE FROM vix_term_structure WHERE timestamp > ? AND timestamp <= ?", outage)   # last print 10:00
    rc = RetrainConfig("NSE", automl=False, train=TINY_TRAIN)
    run = RetrainRun(rc, cfg, retrain_folder(rc, cfg))
    with pytest.warns(StaleFeatureWarning, match="vix 45"):
        out = step_consolidate(run)
    assert out["stale_bars"] == {"vix": 45, "vix_near": 45, "vix_far": 45}     # 10:16 .. 11:00: more than 15 minutes old
    recorded = json.loads((run.folder / "run_manifest.json").read_text())["steps"]["consolidate"]
    assert recorded["outputs"]["stale_bars"] == out["stale_bars"]


def test_the_gate_step_reruns_when_its_walk_forward_evidence_changes(tmp_path):
    """The gate reads the run's walk-forward windows (`walk_forward`): a cached verdict must follow those files, so the
    gate step's key holds their sha256 (`walk_forward_digests`); the other steps are reused."""
    from oi_ml.pipeline import walk_forward_digests
    cfg = _market(tmp_path, "wf")
    first, _, trained = _statuses(cfg)
    assert set(first.values()) == {"done"}
    folder = Path(cfg.models_dir) / "NSE" / trained["run_id"]
    before = walk_forward_digests(folder)
    assert set(before) == {"reports/backtest_windows.json"}                 # six sessions: no walk-forward segment
    pd.DataFrame(dict(timestamp=pd.to_datetime(["2025-08-01 09:59"], utc=True), equity_net=[1.0])).to_parquet(
        folder / "reports" / "equity_walk_forward_0.parquet")              # evidence appears beside the backtest's files
    assert set(walk_forward_digests(folder)) == {"reports/backtest_windows.json", "reports/equity_walk_forward_0.parquet"}
    assert _statuses(cfg)[0] == dict(consolidate="reused", dataset="reused", features_labels="reused", train="reused",
                                     backtest="reused", gate="done")


def _recording(config, sink: list, prefix: str = ""):
    """A copy of the frozen config dataclass `config` that adds the dotted name of every field read (sections too) to the
    set in `sink[0]` (nothing while it is None)."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(config)}

    class Recording(type(config)):
        def __getattribute__(self, name):
            if name in names and sink[0] is not None: sink[0].add(prefix + name)
            return object.__getattribute__(self, name)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return Recording(**{k: _recording(v, sink, f"{prefix}{k}.") if dataclasses.is_dataclass(v) else v for k, v in values.items()})


def test_every_run_config_field_a_step_reads_is_in_its_cache_key(tmp_path, monkeypatch):
    """RUN_CONFIG_READS was kept by reading the code: features_labels, train and automl read bar_minutes and train read
    monitoring.psi_alert without them being listed, so their cached outputs were reused under another setting. Each step
    runs here on a RunConfig that records the fields read; every one besides the paths must be in the step's entry.
    (automl and pack are not run: run_orchestrator reads bar_minutes only, the pack template `monitoring`.)"""
    from oi_ml.pipeline import (RUN_CONFIG_READS, RetrainRun, retrain_folder, step_backtest, step_consolidate, step_dataset,
                                step_features_labels, step_gate, step_train)
    cfg = _market(tmp_path, "reads")
    rc = RetrainConfig("NSE", automl=False, train=TINY_TRAIN)
    sink, reads = [None], {}
    run = RetrainRun(rc, _recording(cfg, sink), retrain_folder(rc, cfg))
    save = RetrainRun.save

    def quiet_save(self):   # the run manifest records every listed field: not a read of the step's
        held, sink[0] = sink[0], None
        try: save(self)
        finally: sink[0] = held
    monkeypatch.setattr(RetrainRun, "save", quiet_save)
    import oi_ml.datasets
    as_dict = oi_ml.datasets.config_to_dict

    def quiet_as_dict(config):   # the dataset manifest's provenance copy: the content, hence the version, does not depend on it
        held, sink[0] = sink[0], None
        try: return as_dict(config)
        finally: sink[0] = held
    monkeypatch.setattr(oi_ml.datasets, "config_to_dict", quiet_as_dict)

    def step(name, fn, *args):
        sink[0] = reads[name] = set()
        try: return fn(run, *args)
        finally: sink[0] = None
    ds = step("dataset", step_dataset, step("consolidate", step_consolidate))
    step("features_labels", step_features_labels, ds)
    trained = step("train", step_train, ds)
    step("backtest", step_backtest, ds, trained)
    step("gate", step_gate, trained, None)
    assert {k: v["status"] for k, v in run.steps.items()} == dict.fromkeys(reads, "done")   # every step ran: nothing hidden by a cache

    def listed(name, entry):   # a field, or a section on the way to a listed field
        return any(name == e or name.startswith(e + ".") or e.startswith(name + ".") for e in entry)
    unlisted = {s: sorted(n for n in r - {"data_dir", "reports_dir"} if not listed(n, RUN_CONFIG_READS.get(s, ()))) for s, r in reads.items()}
    assert unlisted == dict.fromkeys(reads, []), unlisted
    assert {"risk_free_rate", "bar_minutes", "monitoring.live_rows", "monitoring.psi_alert"} <= set().union(*reads.values())


def test_the_run_manifest_and_folder_hold_the_run_config_the_steps_read(tmp_path):
    """The run manifest held the RetrainConfig only and its folder hashed only that: retrains differing only in psi_alert,
    live_rows, bar_minutes or risk_free_rate wrote the same run_manifest.json and it did not say which values were used."""
    import dataclasses
    from oi_ml.pipeline import RUN_CONFIG_READS, RetrainRun, retrain_folder, run_config_reads
    cfg = _market_cfg(tmp_path, "m")
    rc = RetrainConfig("NSE", automl=False, train=TINY_TRAIN)
    variants = [cfg, dataclasses.replace(cfg, monitoring=dataclasses.replace(cfg.monitoring, psi_alert=0.4)),
                dataclasses.replace(cfg, monitoring=dataclasses.replace(cfg.monitoring, live_rows=500)),
                dataclasses.replace(cfg, bar_minutes=375), dataclasses.replace(cfg, risk_free_rate=0.1)]
    folders = [retrain_folder(rc, v) for v in variants]
    assert len(set(folders)) == len(variants)
    unrelated = dataclasses.replace(cfg, seed=3, quality=dataclasses.replace(cfg.quality, max_gap_minutes=9))
    assert retrain_folder(rc, unrelated) == folders[0]       # a field no step reads keeps the folder
    run = RetrainRun(rc, variants[1], folders[1])
    run.save()
    recorded = json.loads((folders[1] / "run_manifest.json").read_text())["run_config"]
    union = {k: v for s in RUN_CONFIG_READS for k, v in run_config_reads(variants[1], s).items()}
    assert recorded == json.loads(json.dumps(union)) and recorded["monitoring.psi_alert"] == 0.4
    assert {"bar_minutes", "risk_free_rate", "staleness", "monitoring.live_rows"} <= set(recorded)


@pytest.mark.parametrize("as_of", ["2025-08-04 10:00", "2025-08-04T00:00+05:30", "20250804"])
def test_an_as_of_with_a_time_or_offset_is_refused_before_anything_is_written(tmp_path, as_of):
    """`as_of` is a whole IST session: '2025-08-04 10:00' exported data up to 2025-08-05 09:59:59 IST (a day of
    look-ahead), an offset raised a raw TypeError; both left a run folder named after the value."""
    cfg = _market_cfg(tmp_path, "asof")
    with pytest.raises(ValueError, match=re.escape(f"RetrainConfig.as_of={as_of!r} is not a date written YYYY-MM-DD")):
        run_retrain(RetrainConfig("NSE", as_of=as_of, automl=False, train=TINY_TRAIN), cfg)
    assert not Path(cfg.data_dir).exists()


def test_a_single_class_walk_forward_segment_is_named_in_the_error(tmp_path):
    """A walk-forward segment whose training rows hold one class is refused (as train and AutoML refuse it); the error
    names the segment and its training dates, not only the CV fold inside it that found it."""
    import dataclasses
    from oi_ml.datasets import export_training_window, load_dataset
    from oi_ml.pipeline import walk_forward_signals
    cfg = _market(tmp_path, "one_class_wf")
    with connect(cfg) as con: dm = export_training_window(con, "NSE", run_cfg=cfg)
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    raw = raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    all_hold = dataclasses.replace(TINY_TRAIN, labels=dataclasses.replace(TINY_TRAIN.labels, profit_mult=1000.0, stop_mult=1000.0))
    signals = raw[["timestamp"]].assign(signal=0, confidence=0.0)
    last_day = str(raw.timestamp.dt.tz_convert("Asia/Kolkata").dt.date.max())
    with pytest.raises(ValueError, match=r"^walk-forward segment 0 \(training rows 2025-08-01.* automl_window_days 2\): CV fold 0: "
                                         r"its \d+ training rows .* fewer than 2 classes"):
        walk_forward_signals(raw, signals, all_hold, last_day, 2, 1, "candidate")


def test_a_retrain_exports_one_symbol_of_an_exchange_holding_two(tmp_path):
    """Review proof: a second index imported on NSE (BANKNIFTY beside the simulated NIFTY) made every retrain fail in
    'features_labels' on 'timestamp is not strictly increasing'. The dataset step exports one symbol: the exchange's
    index by default, `RetrainConfig.symbol` when given; its features and labels are then written."""
    from oi_ml import pipeline
    from oi_ml.datasets import load_manifest
    from oi_ml.ingest import import_ohlcv
    from test_datasets import ohlcv_sessions_csv
    cfg = _market(tmp_path, "two_symbols", days=2)
    with connect(cfg) as con: import_ohlcv(con, ohlcv_sessions_csv(tmp_path / "bank.csv"), "BANKNIFTY", exchange="NSE", run_cfg=cfg)
    for given, held in (({}, "NIFTY"), ({"symbol": "BANKNIFTY"}, "BANKNIFTY")):
        run = pipeline.RetrainRun(RetrainConfig("NSE", **given), cfg, tmp_path / f"run-{held}")
        run.folder.mkdir()
        ds = pipeline.step_dataset(run, pipeline.step_consolidate(run))
        out = pipeline.step_features_labels(run, ds)
        assert load_manifest("NSE", ds["version"], cfg)["symbols"] == [held] and ds["rows"] == 750 and out["labels_sha256"]


def test_an_as_of_before_the_stored_data_names_the_stored_range(tmp_path):
    "Review proof: `retrain --as-of` before the first stored session said 'no data for NSE in the warehouse'; it names what is stored."
    cfg = _market(tmp_path, "early", days=2)
    with pytest.raises(ValueError, match=re.escape("no data for NSE up to as_of 2025-07-31 (--as-of): NSE has underlying bars "
                                                   "2025-08-01..2025-08-04 (IST); pass a day from 2025-08-01 on, or no --as-of for all data")):
        run_retrain(RetrainConfig("NSE", as_of="2025-07-31", automl=False, train=TINY_TRAIN), cfg)

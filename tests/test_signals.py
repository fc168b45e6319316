"""Tests of oi_ml.signals: the runtime generator gives the backtest's probabilities (no second code path), refuses
tampered models, audits every recommendation to DuckDB and JSONL (surviving a locked warehouse), and joins outcomes.
One tiny model (8 simulated days, small TrainConfig) is trained and deployed once for the module."""
import dataclasses
import json
import warnings
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import deploy_tiny_model, private_copy

from oi_ml.config import RunConfig
from oi_ml.features import FEATURE_DEFAULTS, prepare_training_features
from oi_ml.registry import version_dir
from oi_ml.signals import (AuditLog, MLSignalGenerator, reconcile_audit, build_plan, calibrate_row, row_calibration, kelly_fraction, outcome_correct,
                           recommendations_with_outcomes, record_outcome, record_outcomes, suggested_lots)
from oi_ml.store import connect
from oi_ml.train import ModelIntegrityError, apply_calibration, load_bundle, score_frame

CLASSES = ("SELL", "HOLD", "BUY")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    "(run config, raw dataset rows, deployed version folder) of a tiny model, trained once per module."
    cfg, raw, _ = deploy_tiny_model(tmp_path_factory.mktemp("signals"), "signals tests")
    return cfg, raw, version_dir("NSE", run_cfg=cfg)


@pytest.fixture(scope="module")
def batch(deployed):
    "(prepared feature rows, score_frame output) of the whole dataset: the backtest path."
    _, raw, folder = deployed
    bundle = load_bundle(folder)
    return prepare_training_features(raw, bundle.input_features), score_frame(bundle, raw), bundle


def serve(gen: MLSignalGenerator, batch, rows: slice = slice(None)) -> list[dict]:
    "Signals for the batch's feature rows `rows`, each stamped with its bar's timestamp."
    features, _, bundle = batch
    return [gen.generate_signal(f, timestamp=t) for f, t in
            zip(features[bundle.input_features].iloc[rows].to_dict("records"), features.timestamp.iloc[rows])]


def test_stream_equals_batch_scoring(deployed, batch):
    "Streaming every bar through generate_signal reproduces score_frame: probabilities, regimes, signals, confidence."
    cfg, _, _ = deployed
    features, scored, bundle = batch
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False, min_confidence=0.0)   # every arg-max signal, as score_frame
    out = serve(gen, batch)
    probs = np.array([[o["probabilities"][c] for c in CLASSES] for o in out])
    expected = scored[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.abs(probs - expected).max() <= 1e-12
    assert [o["regime"] for o in out] == scored.regime.tolist()
    assert np.array_equal([{"BUY": 1, "SELL": -1, "HOLD": 0}[o["action"]] for o in out], scored.signal.to_numpy())
    assert np.abs(np.array([o["confidence"] for o in out]) - scored.confidence.to_numpy()).max() <= 1e-12
    assert len(set(scored.regime)) > 1                  # more than one regime booster was exercised
    assert {o["model_version"] for o in out} == {"v0001"}


def test_stream_from_a_later_start_differs_until_reset(deployed, batch):
    "The filter state carries between calls: starting mid-stream differs from the batch; reset restarts the stream."
    cfg, _, _ = deployed
    features, scored, bundle = batch
    rows = features[bundle.input_features].to_numpy()
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    for i in range(50): gen.score_features(rows[i])
    gen.reset()
    first = np.array([gen.score_features(rows[i]) for i in range(200)])
    assert np.abs(first - scored[[f"prob_{c}" for c in CLASSES]].to_numpy()[:200]).max() <= 1e-12
    gen.reset()
    assert np.isnan(gen.regime_state).all()


def test_score_features_vector_matches_and_checks_shape(deployed, batch):
    cfg, _, _ = deployed
    features, scored, bundle = batch
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    rows = features[bundle.input_features].to_numpy()
    got = np.array([gen.score_features(rows[i]) for i in range(len(rows))])
    assert np.abs(got - scored[[f"prob_{c}" for c in CLASSES]].to_numpy()).max() <= 1e-12
    with pytest.raises(ValueError, match="input_features order"):
        gen.score_features(rows[0][:-1])


def test_calibrate_row_equals_apply_calibration(batch):
    "The one-row calibration is the batch calibration, bit for bit, including edge probabilities."
    _, _, bundle = batch
    plan = build_plan(bundle)
    rng = np.random.default_rng(3)
    raw = rng.dirichlet([1, 1, 1], size=500)
    raw[:3] = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]]
    expected = apply_calibration(bundle.calibration, raw)
    assert np.array_equal(np.vstack([calibrate_row(p, plan.calibration) for p in raw]), expected)
    for other in (_isotonic(), {"method": "temperature", "temperature": 1.7}):   # each method, whichever the run chose
        fast = row_calibration(other, 3)
        assert isinstance(fast, tuple)                                  # the one-row kernel, not apply_calibration again
        assert np.array_equal(np.vstack([calibrate_row(p, fast) for p in raw]), apply_calibration(other, raw))


def _isotonic() -> dict:
    "Isotonic maps fitted on random probabilities (the kernel's case, whichever calibration the tiny run chose)."
    from oi_ml.train import fit_calibration
    rng = np.random.default_rng(5)
    return fit_calibration(rng.integers(0, 3, 400), rng.dirichlet([1, 1, 1], size=400), "isotonic")


def test_calibration_falls_back_when_the_kernel_disagrees(batch, monkeypatch, caplog):
    "If apply_calibration changes (here: a different transform), the load-time check notices and the exact path is used."
    import oi_ml.signals as signals
    maps = _isotonic()
    assert isinstance(row_calibration(maps, 3), tuple)
    changed = lambda cal, probs: np.maximum(apply_calibration(cal, probs), 0.01) / np.maximum(apply_calibration(cal, probs), 0.01).sum(1, keepdims=True)
    monkeypatch.setattr(signals, "apply_calibration", changed)
    with caplog.at_level("WARNING", logger="oi_ml.signals"):
        chosen = row_calibration(maps, 3)
    assert chosen is maps and "disagrees with apply_calibration" in caplog.text
    row = np.array([0.001, 0.2, 0.799])
    assert np.array_equal(calibrate_row(row, chosen), changed(maps, row[None])[0])


def test_missing_and_bad_values_take_neutral_defaults(deployed, batch):
    cfg, _, _ = deployed
    _, _, bundle = batch
    plan = build_plan(bundle)
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    with pytest.warns(UserWarning, match=f"{len(plan.used_features)} of the model's {len(plan.used_features)} used features are not in the feature dict"):
        empty = gen.generate_signal({})
    gen.reset()
    neutral = gen.generate_signal({n: FEATURE_DEFAULTS.get(n, 0.5) for n in plan.used_features})
    gen.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # present but NaN/inf: defaulted without a warning (warm-up bars have NaNs)
        broken = gen.generate_signal({n: (np.nan if i % 2 else np.inf) for i, n in enumerate(plan.used_features)} | {"x": "y"})
    with pytest.warns(UserWarning, match=r"1 of the model's \d+ used features are not in the feature dict \(" + plan.used_features[0]):
        gen.generate_signal({n: 0.0 for n in plan.used_features[1:]})
    assert empty["probabilities"] == neutral["probabilities"] == broken["probabilities"]
    with pytest.raises(ValueError, match=f"feature '{plan.used_features[0]}' must be a number"):
        gen.generate_signal({plan.used_features[0]: "abc"})


def test_prepare_features_equals_batch_row(deployed, batch):
    "The feature dict of the last bar of a history is the batch feature row (exactly), plus close; short histories refused."
    cfg, raw, _ = deployed
    features, _, bundle = batch
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    for cut in (200, 377, 1000):   # from the dataset's first bar: exact whatever the length
        got = gen.prepare_features(raw.iloc[:cut].sample(frac=1, random_state=cut), min_history=200)   # order is restored
        assert all(got[c] == features[c].iloc[cut - 1] for c in bundle.input_features)
        assert got["close"] == raw.close.iloc[cut - 1]
    with pytest.raises(ValueError, match="at least 1000 bars"):
        gen.prepare_features(raw.iloc[:999])
    with pytest.raises(ValueError, match="at least 200 bars"):
        gen.prepare_features(raw.iloc[:199], min_history=200)
    with pytest.raises(ValueError, match="one symbol"):
        gen.prepare_features(pd.concat([raw.iloc[:300], raw.iloc[:300].assign(symbol="BANKNIFTY")]))


def quiet_audit(cfg) -> AuditLog:
    "An audit log that writes only on flush() and close() (no idle writer), so a test sees what was buffered."
    return AuditLog(cfg, idle_seconds=3600, flush_seconds=3600)


def test_a_resent_or_older_bar_is_refused_and_changes_nothing(deployed, batch, tmp_path):
    """Review finding: the same bar sent twice moved the regime filter again and was audited twice; an older bar after a
    newer one was accepted. Both are refused naming the two timestamps; state, last timestamp and audit are unchanged."""
    import datetime as dt
    cfg = private_copy(deployed[0], tmp_path)
    features, _, bundle = batch
    rows, times = features[bundle.input_features].to_dict("records"), features.timestamp
    reference = serve(MLSignalGenerator("NSE", run_cfg=cfg, audit=False), batch, slice(100, 111))
    with MLSignalGenerator("NSE", run_cfg=cfg, audit=quiet_audit(cfg)) as gen:
        served = [gen.generate_signal(rows[i], timestamp=times.iloc[i]) for i in range(100, 110)]
        state, last = gen.regime_state, times.iloc[109].to_pydatetime()
        ist = last.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).replace(tzinfo=None)   # the same bar, naive IST
        older = times.iloc[50].to_pydatetime()
        for i, when, shown, kind in ((109, last, last, "the same bar again"), (109, ist, last, "the same bar again"),
                                     (50, older, older, "an older bar")):
            with pytest.raises(ValueError, match=re.escape(f"bar at {shown.isoformat()} is not after the last bar served, "
                                                           f"at {last.isoformat()} ({kind}): nothing was scored or audited")):
                gen.generate_signal(rows[i], timestamp=when)
            assert np.array_equal(gen.regime_state, state) and gen.last_timestamp == last and gen.audit_log.pending == 10
        served.append(gen.generate_signal(rows[110], timestamp=times.iloc[110]))
    assert [s["probabilities"] for s in served] == [s["probabilities"] for s in reference]   # the refusals left no trace
    with connect(cfg, read_only=True) as con:
        audited = con.sql("SELECT id, timestamp FROM recommendations ORDER BY timestamp").df()
    assert audited.id.tolist() == [s["id"] for s in served] and audited.timestamp.is_unique   # one row per bar, none twice


def test_a_bar_without_a_lot_size_in_force_changes_nothing_and_can_be_sent_again(deployed, batch):
    """Diff review: the lot size was looked up after scoring, so a bar dated before the lot-size schedule raised after the
    regime filter had moved and its timestamp was recorded: the corrected bar was then refused as 'the same bar again'."""
    cfg, _, _ = deployed
    features, _, bundle = batch
    rows, times = features[bundle.input_features].to_dict("records"), features.timestamp
    with MLSignalGenerator("NSE", run_cfg=cfg, audit=False) as gen:
        gen.generate_signal(rows[100], timestamp=times.iloc[100])
        state, last = gen.regime_state, gen.last_timestamp
        typo = times.iloc[101] - pd.DateOffset(years=7)                          # a year typed wrong: before the lot schedule (2019)
        gen.reset(state, times.iloc[100] - pd.DateOffset(years=8))               # the stream resumed before it, so it is in order
        with pytest.raises(ValueError, match="nothing in force on 2018"):
            gen.generate_signal(rows[101], timestamp=typo)
        assert np.array_equal(gen.regime_state, state) and gen.last_timestamp == times.iloc[100] - pd.DateOffset(years=8)
        assert gen.generate_signal(rows[101], timestamp=typo + pd.DateOffset(years=7))["timestamp"] == times.iloc[101]   # the corrected bar


def test_reset_starts_a_new_stream_or_resumes_after_the_last_bar(deployed, batch):
    "reset() accepts any bar again; reset(state, last_timestamp) resumes after the audited bar and refuses it."
    cfg, _, _ = deployed
    features, _, bundle = batch
    rows, times = features[bundle.input_features].to_dict("records"), features.timestamp
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    first = serve(gen, batch, slice(100, 105))
    gen.reset()
    assert gen.last_timestamp is None                                         # a new stream: the same bars again are accepted
    assert [s["probabilities"] for s in serve(gen, batch, slice(100, 105))] == [s["probabilities"] for s in first]
    gen.reset(first[1]["regime_probabilities"], first[1]["timestamp"])          # resume after bar 101, as after a restart
    with pytest.raises(ValueError, match="is not after the last bar served"):
        gen.generate_signal(rows[101], timestamp=times.iloc[101])
    assert [gen.generate_signal(rows[i], timestamp=times.iloc[i])["probabilities"] for i in (102, 103)] == [s["probabilities"] for s in first[2:4]]
    with pytest.raises(ValueError, match="regime_state must be"):               # a bad resume changes nothing
        gen.reset([0.5, 0.6, 0.1], first[0]["timestamp"])
    assert gen.last_timestamp == times.iloc[103]


def test_a_bar_of_another_exchange_or_symbol_is_refused(deployed, batch, tmp_path):
    """Review finding: a BSE/SENSEX bar (and history) was accepted by an NSE/NIFTY generator and audited as NSE with NSE's
    lot size. Refused naming both, before anything is scored or audited; the model's own bars still pass."""
    cfg = private_copy(deployed[0], tmp_path)
    _, raw, _ = deployed
    features, _, bundle = batch
    rows, times = features[bundle.input_features].to_dict("records"), features.timestamp
    with MLSignalGenerator("NSE", run_cfg=cfg, audit=quiet_audit(cfg)) as gen:
        gen.generate_signal(rows[100], timestamp=times.iloc[100])
        state = gen.regime_state
        bse = raw.tail(1200).assign(exchange="BSE", symbol="SENSEX")
        with pytest.raises(ValueError, match=r"prepare_features: the history is of exchange 'BSE', but this generator serves the NSE model v0001"):
            gen.prepare_features(bse)
        with pytest.raises(ValueError, match=r"prepare_features: the history is of symbol 'SENSEX', but the NSE model v0001 was trained on \['NIFTY'\]"):
            gen.prepare_features(raw.tail(1200).assign(symbol="SENSEX"))
        for foreign, message in (({"exchange": "BSE", "symbol": "SENSEX"}, "the bar is of exchange 'BSE', but this generator serves the NSE model v0001 \\(exchange 'NSE'\\)"),
                                 ({"symbol": "SENSEX"}, "the bar is of symbol 'SENSEX', but the NSE model v0001 was trained on \\['NIFTY'\\]")):
            with pytest.raises(ValueError, match=message):
                gen.generate_signal(rows[101] | foreign, timestamp=times.iloc[101])
            assert np.array_equal(gen.regime_state, state) and gen.last_timestamp == times.iloc[100] and gen.audit_log.pending == 1
        own = gen.prepare_features(raw.iloc[:1000])                          # the model's own history: its identity rides along
        assert (own["exchange"], own["symbol"]) == ("NSE", "NIFTY")
        assert gen.generate_signal(own | {"symbol": "nifty"}, timestamp=times.iloc[101])["exchange"] == "NSE"
        assert gen.symbols == ("NIFTY",)                                      # the dataset version's symbols
        gen.symbols = ("BANKNIFTY", "NIFTY")                                  # stream pinning (training takes one symbol per dataset)
        with pytest.raises(ValueError, match="this stream's bars are of 'NIFTY'"):
            gen.generate_signal(rows[102] | {"symbol": "BANKNIFTY"}, timestamp=times.iloc[102])
        gen.reset()                                                           # a new stream may be of the other index
        gen.generate_signal(rows[102] | {"symbol": "BANKNIFTY"}, timestamp=times.iloc[102])
    with connect(cfg, read_only=True) as con:
        assert con.sql("SELECT DISTINCT exchange FROM recommendations").fetchall() == [("NSE",)]
        assert con.sql("SELECT count(*) FROM recommendations").fetchall()[0][0] == 3


def test_tampered_version_refused(deployed, tmp_path):
    cfg = private_copy(deployed[0], tmp_path)
    target = version_dir("NSE", run_cfg=cfg) / "calibration.json"
    target.chmod(0o644)
    target.write_text(target.read_text() + " ")   # changed bytes, whichever calibration the run chose
    with pytest.raises(ModelIntegrityError, match="calibration.json"):
        MLSignalGenerator("NSE", run_cfg=cfg)


def test_generator_loads_the_horizon_version(deployed, tmp_path):
    "horizon='15m' loads the current version of the NSE/15m registry key; the exchange's own pointer is unchanged."
    from oi_ml.registry import RegistryError, deploy_model
    cfg = private_copy(deployed[0], tmp_path)
    run_id = json.loads((version_dir("NSE", run_cfg=cfg) / "manifest.json").read_text())["run_id"]
    with pytest.raises(RegistryError, match="no model deployed for NSE/15m"):
        MLSignalGenerator("NSE", run_cfg=cfg, audit=False, horizon="15m")
    with pytest.raises(RegistryError, match="label horizon is 15m"):        # the tiny model's labels: 15 one-minute bars
        deploy_model("NSE", run_id, "pytest", "wrong key", run_cfg=cfg, horizon="30m", ungated=True)
    assert deploy_model("NSE", run_id, "pytest", "15m key", run_cfg=cfg, horizon="15m", ungated=True)["version"] == "v0002"
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False, horizon="15m")
    assert gen.model_version == "v0002" and Path(gen.bundle.run_dir) == Path(cfg.models_dir) / "NSE" / "v0002"
    assert MLSignalGenerator("NSE", run_cfg=cfg, audit=False).model_version == "v0001"
    with pytest.raises(ValueError, match="invalid horizon '15'"):
        MLSignalGenerator("NSE", run_cfg=cfg, audit=False, horizon="15")


def test_served_threshold_is_the_gated_policys(deployed, batch, tmp_path):
    """By default the generator serves the policy the gate judged: the min_confidence of the backtest in the version's
    gate result (a run folder: its reports/gate_report.json), and the gate's default for a model never gated."""
    from oi_ml.gate import default_backtest_config
    from oi_ml.registry import deploy_model
    cfg = private_copy(deployed[0], tmp_path)
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)                 # the fixture's version was deployed ungated
    assert gen.min_confidence == default_backtest_config("NSE").min_confidence == 0.65
    features, scored, bundle = batch
    served = [o["action"] for o in serve(gen, batch, slice(0, 400))]
    assert served == [a if c >= 0.65 else "HOLD" for a, c in zip(scored.signal.map({1: "BUY", -1: "SELL", 0: "HOLD"})[:400], scored.confidence[:400])]
    run_id = json.loads((version_dir("NSE", run_cfg=cfg) / "manifest.json").read_text())["run_id"]
    gate = dict(candidate_run=run_id, baseline="v0001", passed=True, decision="PASS", failed=[],
                backtest_config={**dataclasses.asdict(default_backtest_config("NSE")), "min_confidence": 0.55})
    assert deploy_model("NSE", run_id, "pytest", "gated at 0.55", gate=gate, run_cfg=cfg, ungated=True)["version"] == "v0002"
    assert MLSignalGenerator("NSE", run_cfg=cfg, audit=False).min_confidence == 0.55                  # the version's gate result
    run_folder = Path(cfg.models_dir) / "NSE" / run_id
    (run_folder / "reports" / "gate_report.json").write_text(json.dumps({**gate, "backtest_config": {"min_confidence": 0.6}}))
    assert MLSignalGenerator("NSE", run_cfg=cfg, run_dir=run_folder, audit=False).min_confidence == 0.6  # a run's own report
    assert MLSignalGenerator("NSE", run_cfg=cfg, audit=False, min_confidence=0.2).min_confidence == 0.2   # chosen on purpose


def test_explicit_run_dir_and_wrong_exchange(deployed):
    cfg, _, folder = deployed
    gen = MLSignalGenerator("NSE", run_cfg=cfg, run_dir=folder, audit=False)
    assert gen.model_version == "v0001"
    with pytest.raises(ValueError, match="trained for NSE, not BSE"):
        MLSignalGenerator("BSE", run_cfg=cfg, run_dir=folder, audit=False)


def test_sizing_by_hand():
    assert math.isclose(kelly_fraction(0.55, 1.5, 1.0), 0.55 - 0.45 / 1.5)      # 0.25
    assert kelly_fraction(0.3, 1.0, 0.25) == 0.0 and kelly_fraction(0.99, 1.0, 0.25) == 0.25
    # ₹10 lakh × 0.25 = ₹2.5 lakh; a SENSEX lot at 80,000 × 20 units × 12 % = ₹1.92 lakh -> 1 lot
    assert suggested_lots(0.25, 1_000_000, 80_000.0, 20, 0.12) == 1
    assert suggested_lots(0.25, 1_000_000, float("nan"), 20, 0.12) is None
    with pytest.raises(ValueError, match="payoff_ratio"):
        kelly_fraction(0.6, 0.0, 0.25)


def test_payoff_ratio_with_a_barrier_switched_off(tmp_path):
    "A barrier the labels switched off (inf, stored as null in the training report) defines no payoff: 1.0, as the backtest's Kelly."
    from types import SimpleNamespace
    from oi_ml.signals import payoff_ratio
    def payoff(labels):
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        (folder / "reports").mkdir(parents=True)
        (folder / "reports" / "training_report.json").write_text(json.dumps(dict(target="triple_barrier", config=dict(labels=labels))))
        return payoff_ratio(SimpleNamespace(run_dir=folder))
    assert payoff(dict(profit_mult=3.0, stop_mult=2.0)) == 1.5
    assert payoff(dict(profit_mult=None, stop_mult=2.0)) == 1.0          # what train._round writes for inf
    assert payoff(dict(profit_mult=3.0, stop_mult=None)) == 1.0


def test_naive_timestamps_are_ist(deployed):
    import datetime as dt
    cfg, _, _ = deployed
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # absent features: scored on defaults
        for naive in ("2025-08-22 15:00", dt.datetime(2025, 8, 22, 15, 0)):
            gen.reset()   # the same bar twice: a new stream each time (within one stream the second is refused)
            assert gen.generate_signal({}, timestamp=naive)["timestamp"] == dt.datetime(2025, 8, 22, 9, 30, tzinfo=dt.UTC)
        assert gen.generate_signal({}, timestamp="2025-08-22T15:00+00:00")["timestamp"] == dt.datetime(2025, 8, 22, 15, 0, tzinfo=dt.UTC)


def test_bad_arguments_are_refused_by_name(deployed):
    cfg, _, _ = deployed
    gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # absent features: scored on defaults
        with pytest.raises(ValueError, match="features must be a dict"):
            gen.generate_signal([1, 2, 3])
        with pytest.raises(ValueError, match="price must be a number"):
            gen.generate_signal({}, price="abc")
        with pytest.raises(ValueError, match=r"features\['close'\] must be a number"):
            gen.generate_signal({"close": "abc"})
        with pytest.raises(ValueError, match="timestamp must be a datetime"):
            gen.generate_signal({}, timestamp=12345)


def test_min_confidence_and_sizing_fields(deployed, batch):
    cfg, _, _ = deployed
    features, _, bundle = batch
    rows = features[bundle.input_features].to_dict("records")[:300]
    strict = MLSignalGenerator("NSE", run_cfg=cfg, audit=False, min_confidence=1.01)
    out = [strict.generate_signal(r, timestamp=t, price=24_000.0) for r, t in zip(rows, features.timestamp)]
    assert {o["action"] for o in out} == {"HOLD"} and {o["kelly_fraction"] for o in out} == {0.0}
    assert {o["suggested_lots"] for o in out} == {0}
    loose = MLSignalGenerator("NSE", run_cfg=cfg, audit=False, min_confidence=0.0, kelly_cap=1.0, account_size=1e9)
    for r, t in zip(rows, features.timestamp):
        o = loose.generate_signal(r, timestamp=t, price=24_000.0)
        p = o["confidence"]
        expected = max(p - (1 - p), 0.0) if o["action"] != "HOLD" else 0.0    # symmetric barriers: b = 1
        assert math.isclose(o["kelly_fraction"], expected, abs_tol=1e-15)
        assert o["lot_size"] == 75 and o["suggested_lots"] == (int(expected * 1e9 // (0.12 * 24_000 * 75)) if o["action"] != "HOLD" else 0)
        assert 1 / 3 <= o["score"] <= 1 and 0 < o["latency_us"] < 1e6


def test_audit_rows_in_duckdb_and_jsonl(deployed, batch, tmp_path):
    "Buffered records reach DuckDB and the per-day JSONL at each flush and on close; fields round-trip."
    cfg = private_copy(deployed[0], tmp_path)
    features, _, bundle = batch
    picks = [*range(372, 376), *range(376, 384)]                         # crosses the first day boundary (375 bars)
    with MLSignalGenerator("NSE", run_cfg=cfg, audit=AuditLog(cfg, idle_seconds=3600, flush_every=5)) as gen:
        served = [gen.generate_signal(features[bundle.input_features].iloc[i].to_dict() | {"close": 24_100.0},
                                      timestamp=features.timestamp.iloc[i]) for i in picks]
        with connect(cfg, read_only=True) as con:
            assert con.sql("SELECT count(*) FROM recommendations").fetchall()[0][0] == 10
        assert gen.audit_log.pending == 2
    with connect(cfg, read_only=True) as con:
        stored = con.sql("SELECT * FROM recommendations ORDER BY timestamp").df()
    assert stored.id.tolist() == [s["id"] for s in served]
    for col in ("action", "confidence", "regime", "kelly_fraction", "suggested_lots", "score", "model_version"):
        assert stored[col].tolist() == [s[col] for s in served], col
    assert (stored.timestamp == pd.to_datetime(features.timestamp.iloc[picks].to_numpy(), utc=True)).all()
    summary = json.loads(stored.features_summary.iloc[0])
    assert summary["probabilities"] == served[0]["probabilities"] and set(summary["values"]) == set(build_plan(bundle).used_features)
    days = sorted((Path(cfg.data_dir) / "signals" / "NSE").glob("*.jsonl"))
    assert [d.name for d in days] == ["2025-08-01.jsonl", "2025-08-04.jsonl"]
    lines = [json.loads(line) for d in days for line in d.read_text().splitlines()]
    assert [r["id"] for r in lines] == [s["id"] for s in served]
    assert {r["exchange"] for r in lines} == {"NSE"} and all(r["features_summary"]["lot_size"] == 75 for r in lines)
    assert lines[0]["timestamp"] == served[0]["timestamp"].isoformat()


def hold_write_lock(db_path: Path, seconds: float) -> subprocess.Popen:
    "A child process that holds the warehouse's write lock for `seconds` (returns once the lock is held)."
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(float(sys.argv[2]))", str(db_path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def audited_generator(deployed, batch, tmp_path, **audit) -> tuple[RunConfig, list[dict], MLSignalGenerator]:
    "A fresh data folder, the batch's feature rows and a generator whose audit log takes `audit` (AuditLog arguments)."
    cfg = private_copy(deployed[0], tmp_path)
    features, _, bundle = batch
    rows = features[bundle.input_features].to_dict("records")
    return cfg, rows, MLSignalGenerator("NSE", run_cfg=cfg, audit=AuditLog(cfg, **audit))


def stored_ids(cfg: RunConfig) -> list[str]:
    "Sorted ids of the recommendations in the warehouse."
    with connect(cfg, read_only=True) as con:
        return sorted(r[0] for r in con.sql("SELECT id FROM recommendations").fetchall())


def test_locked_warehouse_keeps_records_until_next_flush(deployed, batch, tmp_path):
    "Another process holding the write lock: the flush does not wait; JSONL is written, DuckDB rows stay pending and are stored later."
    cfg, rows, gen = audited_generator(deployed, batch, tmp_path, idle_seconds=3600, retry_seconds=3600)
    holder = hold_write_lock(cfg.db_path, 30)
    try:
        served = [gen.generate_signal(f) for f in rows[:3]]
        t0 = time.monotonic()
        assert gen.flush() == 0 and gen.audit_log.pending == 3 and "lock" in gen.audit_log.last_error.lower()
        assert time.monotonic() - t0 < 5                                   # the signal path never waits for the lock
    finally:
        holder.kill(); holder.wait(timeout=10)
    assert gen.flush() == 3 and gen.audit_log.pending == 0 and gen.audit_log.last_error is None
    holder = hold_write_lock(cfg.db_path, 1.5)                            # released while close() waits for it
    served.append(gen.generate_signal(rows[3]))
    gen.close()
    holder.wait(timeout=10)
    assert gen.audit_log.pending == 0
    assert stored_ids(cfg) == sorted(s["id"] for s in served)
    lines = [line for p in (Path(cfg.data_dir) / "signals" / "NSE").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(lines) == 4                                                # written once each, not again on retry


def test_rows_an_ended_process_left_in_the_jsonl_files_reach_the_warehouse(deployed, batch, tmp_path):
    "The warehouse stayed locked past close()'s wait: the rows are in the JSONL files only; the next audit log stores them."
    cfg, rows, gen = audited_generator(deployed, batch, tmp_path, idle_seconds=3600, retry_seconds=3600, close_lock_timeout=0.2)
    holder = hold_write_lock(cfg.db_path, 30)
    try:
        left = [gen.generate_signal(f)["id"] for f in rows[:3]]
        gen.close()
        assert gen.audit_log.pending == 3 and "lock" in gen.audit_log.last_error.lower()
    finally:
        holder.kill(); holder.wait(timeout=10)
    gen.audit_log._unstored.clear()                                      # this process ends here: its memory is gone
    assert stored_ids(cfg) == []
    with MLSignalGenerator("NSE", run_cfg=cfg, audit=AuditLog(cfg, idle_seconds=3600)) as later:
        served = later.generate_signal(rows[3])["id"]
        assert later.flush() == 4                                         # its own row and the three left behind
    assert stored_ids(cfg) == sorted(left + [served])
    assert reconcile_audit(cfg, "NSE") == 0                               # repeating it adds nothing


def wait_until(condition, seconds: float = 20.0) -> bool:
    "Poll `condition` every 50 ms for up to `seconds`."
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition(): return True
        time.sleep(0.05)
    return condition()


def test_background_writer_flushes_when_idle_and_retries_a_locked_warehouse(deployed, batch, tmp_path):
    "No explicit flush: the writer thread stores records once the generator is idle, retrying while another process holds the lock."
    cfg, rows, gen = audited_generator(deployed, batch, tmp_path, idle_seconds=0.1, retry_seconds=0.2)
    holder = hold_write_lock(cfg.db_path, 2.0)
    t0 = time.monotonic()
    served = [gen.generate_signal(f) for f in rows[:5]]
    assert time.monotonic() - t0 < 1.0                                    # serving never waited for the warehouse
    assert wait_until(lambda: gen.audit_log.last_error is not None)      # the writer tried, found the lock
    holder.wait(timeout=30)
    assert wait_until(lambda: gen.audit_log.pending == 0) and gen.audit_log.last_error is None
    gen.close()
    assert stored_ids(cfg) == sorted(s["id"] for s in served)


def test_records_flushed_at_exit_without_close(deployed, tmp_path):
    "A process that serves signals and exits without close() still stores them (atexit hook)."
    cfg = private_copy(deployed[0], tmp_path)
    code = ("import sys; from oi_ml.config import RunConfig; from oi_ml.signals import MLSignalGenerator, AuditLog; "
            "cfg = RunConfig(data_dir=sys.argv[1]); "
            "g = MLSignalGenerator('NSE', run_cfg=cfg, audit=AuditLog(cfg, idle_seconds=3600)); "
            "print(','.join(g.generate_signal({})['id'] for _ in range(4)))")
    proc = subprocess.run([sys.executable, "-c", code, cfg.data_dir], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = proc.stdout.strip().splitlines()[-1].split(",")
    assert stored_ids(cfg) == sorted(ids)


def test_outcomes_join_by_id(deployed, batch, tmp_path):
    cfg = private_copy(deployed[0], tmp_path)
    with MLSignalGenerator("NSE", run_cfg=cfg) as gen:
        served = serve(gen, batch, slice(400, 410))
    with connect(cfg) as con:
        for s, r in zip(served[:6], [0.01, -0.01, 0.0, 0.02, -0.03, 0.005]):
            assert record_outcome(con, s["id"], r, s["timestamp"] + pd.Timedelta(minutes=15))
        assert record_outcome(con, served[6]["id"], 0.0, served[6]["timestamp"], realised_label="HOLD")
        assert record_outcome(con, served[7]["id"], 0.0, served[7]["timestamp"], correct=True)
        assert not record_outcome(con, served[0]["id"], -1.0, served[0]["timestamp"])     # first write wins
        with pytest.raises(KeyError, match="no recommendation with id"):
            record_outcome(con, "0" * 32, 0.0, served[0]["timestamp"])
        joined = recommendations_with_outcomes(con, "nse")
        assert recommendations_with_outcomes(con, "NSE", "v0999").empty
    assert joined.id.tolist() == [s["id"] for s in served]
    assert joined.realised_return.tolist()[:8] == [0.01, -0.01, 0.0, 0.02, -0.03, 0.005, 0.0, 0.0]
    assert joined.realised_return.iloc[8:].isna().all()
    expected = [outcome_correct(s["action"], r) for s, r in zip(served[:6], [0.01, -0.01, 0.0, 0.02, -0.03, 0.005])]
    expected += [served[6]["predicted_class"] == "HOLD", True, None, None]   # a label is matched with the model's predicted class
    got = [None if pd.isna(v) else bool(v) for v in joined.correct]
    assert got == expected


def test_record_outcomes_in_bulk(deployed, batch, tmp_path):
    cfg = private_copy(deployed[0], tmp_path)
    with MLSignalGenerator("NSE", run_cfg=cfg) as gen:
        served = serve(gen, batch, slice(500, 700))
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.002, len(served))
    labels = rng.choice(["BUY", "HOLD", "SELL"], len(served))
    frame = pd.DataFrame({"id": [s["id"] for s in served], "realised_return": returns,
                          "outcome_time": [s["timestamp"] + pd.Timedelta(minutes=15) for s in served], "realised_label": labels})
    with connect(cfg) as con:
        assert record_outcomes(con, frame) == len(served)
        assert record_outcomes(con, frame) == 0                                   # idempotent
        with pytest.raises(ValueError, match="missing columns"):
            record_outcomes(con, frame.drop(columns="outcome_time"))
        with pytest.raises(KeyError, match="2 unknown"):
            record_outcomes(con, pd.concat([frame.head(1), frame.head(2).assign(id=["x1", "x2"])]))
        joined = recommendations_with_outcomes(con, "NSE").set_index("id")
    expected = [s["predicted_class"] == lab for s, lab in zip(served, labels)]  # the label decides, not the return
    assert any(s["action"] == "HOLD" and s["predicted_class"] != "HOLD" for s in served)   # held below the gated threshold
    assert joined.loc[[s["id"] for s in served], "correct"].astype(bool).tolist() == expected
    assert np.allclose(joined.loc[[s["id"] for s in served], "realised_return"], returns)


def test_outcome_correct_by_hand():
    assert outcome_correct("BUY", 0.01) and not outcome_correct("BUY", -0.01) and not outcome_correct("BUY", 0.0)
    assert outcome_correct("SELL", -0.01) and not outcome_correct("SELL", 0.01)
    assert outcome_correct("HOLD", 0.01) is None and outcome_correct("BUY", float("nan")) is None
    assert outcome_correct("SELL", 0.5, realised_label="SELL") and not outcome_correct("BUY", 0.5, realised_label="HOLD")
    assert outcome_correct("BUY", 0.0, realised_label="UP") and outcome_correct("HOLD", 0.0, realised_label="FLAT")
    assert outcome_correct("HOLD", 0.0, realised_label="SELL", predicted_class="SELL")    # the model's class is judged
    assert not outcome_correct("SELL", 0.0, realised_label="SELL", predicted_class="HOLD")
    for predicted, realised in (("bull", "bear"), ("INSIDE", "BREACH"), ("NO_BREAKOUT", "BREAKOUT")):   # non-trade targets
        assert not outcome_correct("HOLD", 0.0, realised_label=realised, predicted_class=predicted)
        assert outcome_correct("HOLD", 0.0, realised_label=realised, predicted_class=realised)


def test_a_model_served_by_other_feature_code_is_named(deployed, monkeypatch):
    """The run manifest records what the feature code computed at training (`feature_fingerprint`); a generator running
    feature code that computes other values (a default, mask or indicator changed since) warns once and keeps the
    reason, while serving on: the model would be scored on inputs it never learnt from, with nothing said."""
    import warnings
    import oi_ml.signals as signals
    from oi_ml.features import current_feature_fingerprint
    from oi_ml.signals import FeatureCodeWarning
    cfg, _, folder = deployed
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["feature_fingerprint"] == current_feature_fingerprint()   # recorded at training, this code's
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCodeWarning)
        assert MLSignalGenerator("NSE", run_cfg=cfg, audit=False).feature_code_change is None   # the same code: silent
    monkeypatch.setattr(signals, "current_feature_fingerprint", lambda: "f" * 64)   # as after a change of a definition
    with pytest.warns(FeatureCodeWarning, match=r"NSE model v0001: the feature code now computes other values than when "
                                                r"this model was trained \(feature fingerprint \w{12}… at training, "
                                                r"ffffffffffff… now.*retrain it under this code"):
        gen = MLSignalGenerator("NSE", run_cfg=cfg, audit=False)
    assert gen.feature_code_change.startswith("NSE model v0001")

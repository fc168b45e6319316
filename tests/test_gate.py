"""Tests of the promotion gate's evidence criteria (oi_ml.gate): the pooled trial-Sharpe variance by hand, the
small-sample PSR guard, the DSR against hand-computed values, and — on a tiny real model — that the DSR's candidate
series is exactly the AutoML trial rule applied to the candidate's holdout probabilities (computed for the candidate
only, with each model's training config read once) and that window probabilities follow the label classes."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oi_ml import gate as G
from oi_ml.automl import bar_forward_returns, directional_score, rule_daily_returns
from oi_ml.config import RunConfig
from oi_ml.datasets import export_training_window, load_dataset
from oi_ml.metrics import expected_max_sharpe, probabilistic_sharpe_ratio
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import build_training_table, load_bundle, score_frame, train_model

from conftest import TINY_TRAIN


def long_trials(matrix_by_segment: dict) -> pd.DataFrame:
    "Long trial-return table (trial_key, segment, family, day, return) from {segment: days x trials matrix}."
    rows = [dict(trial_key=f"s{seg}-t{j}", segment=seg, family="lightgbm", day=f"2025-08-{i + 1:02d}", **{"return": float(v)})
            for seg, mat in matrix_by_segment.items() for i, row in enumerate(np.asarray(mat)) for j, v in enumerate(row)]
    return pd.DataFrame(rows)


def sr(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(x.mean() / x.std(ddof=1))


# ---------------------------------------------------------------- pooled within-segment variance

def test_pooled_variance_by_hand():
    # segment 0: trials with Sharpe exactly 1, 2 (returns constructed so mean/std is known); segment 1: 5, 5, 8
    def series(target_sr):  # mean target_sr * std, std 1: values m-1, m+1 have mean m and std sqrt(2)
        m = target_sr * math.sqrt(2)
        return [m - 1, m + 1]
    seg0 = np.column_stack([series(1.0), series(2.0)])
    seg1 = np.column_stack([series(5.0), series(5.0), series(8.0)])
    trials = long_trials({0: seg0, 1: seg1})
    assert sorted(round(v, 12) for v in G.trial_sharpes(trials)) == [1.0, 2.0, 5.0, 5.0, 8.0]
    # within: var(1, 2) = 0.5 with 1 dof; var(5, 5, 8) = 3 with 2 dofs -> pooled (0.5 + 6) / 3
    var, basis = G.trial_sharpe_variance(trials)
    assert var == pytest.approx(6.5 / 3, rel=1e-12) and basis.startswith("pooled")
    assert var != pytest.approx(np.var([1, 2, 5, 5, 8], ddof=1))      # not what mixing segments would give (7.7)


def test_variance_falls_back_to_all_trials_without_two_per_segment():
    trials = long_trials({0: [[0.01], [0.03], [0.02]], 1: [[0.0], [0.01], [0.05]]})
    var, basis = G.trial_sharpe_variance(trials)
    assert basis.startswith("across") and var == pytest.approx(np.var(G.trial_sharpes(trials), ddof=1), rel=1e-12)


# ---------------------------------------------------------------- small-sample PSR guard

def test_conservative_psr_never_narrows_the_error():
    rng = np.random.default_rng(3)
    widened = 0
    for _ in range(200):
        r = rng.standard_t(3, size=int(rng.integers(5, 60))) * 0.01 + rng.normal(0.002, 0.002)
        psr, s, how = G.conservative_psr(r, 0.1)
        normal = probabilistic_sharpe_ratio(s, 0.1, len(r))
        if s > 0.1: assert psr <= normal + 1e-12     # above the benchmark, a wider error can only lower the PSR
        else: assert psr >= normal - 1e-12
        assert how.startswith("sample") or psr == pytest.approx(normal, abs=1e-15)
        widened += how.startswith("sample") and psr != pytest.approx(normal, abs=1e-6)
    assert widened >= 10                              # fat-tailed draws do take the sample-moment error


def test_one_lucky_day_does_not_make_a_weak_sharpe_certain():
    r = np.array([-0.00083, 0.00042, 0.00154, 0.0, 0.00097, 0.01049, 0.00056, 0.0, 0.00093, 0.00193, 0.00116, -0.00023])
    psr, s, how = G.conservative_psr(r, 0.0)
    z = s * math.sqrt(len(r) - 1) / math.sqrt(1 + s**2 / 2)
    assert how.startswith("normal") and psr == pytest.approx(stats.norm.cdf(z), rel=1e-12) and psr < 0.95


# ---------------------------------------------------------------- DSR

def test_deflated_sharpe_by_hand():
    rng = np.random.default_rng(0)
    trials = long_trials({0: rng.normal(0, 0.01, (20, 4)), 1: rng.normal(0.002, 0.01, (20, 4))})
    candidate = pd.Series(rng.normal(0.004, 0.004, 25))
    out = G.deflated_sharpe(candidate, trials)
    var, _ = G.trial_sharpe_variance(trials)
    sr0 = expected_max_sharpe(9, var)                                   # 8 trials + the candidate's configuration
    s, r = sr(candidate), candidate.to_numpy()
    skew, kurt = stats.skew(r), stats.kurtosis(r, fisher=False)        # population estimators, as sharpe_moments
    sample, normal = 1 - skew * s + (kurt - 1) / 4 * s**2, 1 + s**2 / 2
    z = (s - sr0) * math.sqrt(24) / math.sqrt(max(sample, normal))      # the wider of the two errors
    assert out["n_trials"] == 9 and out["sr_benchmark"] == pytest.approx(sr0, rel=1e-12)
    assert out["dsr"] == pytest.approx(stats.norm.cdf(z), rel=1e-9)
    assert out["moments"].startswith("sample" if sample >= normal else "normal")
    assert out["n_days"] == 25 and out["returns"].startswith("AutoML trial rule")


def test_more_trials_or_more_dispersion_deflate_more():
    rng = np.random.default_rng(1)
    candidate = pd.Series(rng.normal(0.003, 0.004, 30))
    few = G.deflated_sharpe(candidate, long_trials({0: rng.normal(0, 0.01, (20, 2))}))["dsr"]
    many = G.deflated_sharpe(candidate, long_trials({0: rng.normal(0, 0.01, (20, 40))}))["dsr"]
    assert many < few
    tight = long_trials({0: rng.normal(0, 0.01, (200, 6))})
    loose = long_trials({0: rng.normal(0, 0.01, (8, 6))})             # 8 days: noisy trial Sharpes, wider spread
    assert G.deflated_sharpe(candidate, loose)["sr_benchmark"] > G.deflated_sharpe(candidate, tight)["sr_benchmark"]


def test_no_trials_is_psr_against_zero_and_short_series_cannot_pass():
    r = pd.Series([0.01, 0.02, -0.005, 0.015, 0.01])
    out = G.deflated_sharpe(r, None)
    assert out["n_trials"] == 1 and out["sr_benchmark"] == 0.0 and "no AutoML trials" in out["reason"]
    assert math.isnan(G.deflated_sharpe(pd.Series([0.01, 0.02]), None)["dsr"])
    crit = G._criterion("deflated_sharpe", float("nan"), 0.95, ">=", True)
    assert crit["passed"] is False                                      # a NaN never passes


# ---------------------------------------------------------------- the DSR's candidate series on a real model

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    cfg = RunConfig(data_dir=str(root / "data"), reports_dir=str(root / "reports"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=16, seed=4, signal_strength=2.0, run_cfg=cfg)
        dm = export_training_window(con, "NSE", run_cfg=cfg)
    run = train_model("NSE", dm["version"], cfg=TINY_TRAIN, run_cfg=cfg)
    return cfg, run["run_id"], dm["version"]


def test_gate_dsr_uses_the_automl_rule_on_the_holdout(tiny_run):
    cfg, run_id, version = tiny_run
    bundle = load_bundle(Path(cfg.models_dir) / "NSE" / run_id)
    raw, _ = load_dataset("NSE", version, cfg)
    raw = raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    start, end = (pd.Timestamp(t) for t in bundle.manifest["holdout_window"])
    # independent recomputation: label table, holdout rows, calibrated probabilities, the AutoML rule
    tcfg = G.train_config_of(bundle)
    table = build_training_table(raw, tcfg)
    ts = table.features.timestamp
    rows = ((ts >= start) & (ts <= end)).to_numpy()
    scores = score_frame(bundle, raw).set_index("timestamp")
    probs = scores.loc[ts[rows], [f"prob_{c}" for c in bundle.model_set.classes]].to_numpy()
    expected = rule_daily_returns(directional_score(probs, table.classes), bar_forward_returns(raw, table, tcfg.labels)[rows],
                                  ts[rows], tcfg.labels.horizon_bars)
    assert len(expected) >= 2 and expected.abs().sum() > 0

    # a fake AutoML run with two segments of trials, so the DSR is a real deflation
    automl = Path(cfg.models_dir) / "NSE" / "automl-test" / "reports"
    automl.mkdir(parents=True, exist_ok=True)
    trials = long_trials({0: np.random.default_rng(0).normal(0, 0.01, (10, 3)), 1: np.random.default_rng(1).normal(0, 0.01, (10, 3))})
    trials.to_parquet(automl / "automl_trial_returns.parquet")
    report = G.evaluate_candidate("NSE", run_id, baseline=None, automl_run="automl-test", run_cfg=cfg, write=False)
    got = pd.Series(report["candidate"]["rule_daily_returns"])
    pd.testing.assert_series_equal(got, expected.round(10), check_names=False, rtol=1e-9, check_index_type=False)
    assert report["dsr"]["n_trials"] == 7 and report["dsr"]["variance_basis"].startswith("pooled")
    assert report["dsr"]["sr_daily"] == pytest.approx(sr(expected), rel=1e-6)
    assert report["policy_sharpe"]["n_days"] == len(report["candidate"]["daily_returns"])
    assert json.loads(json.dumps(report, allow_nan=False)) == report    # strict JSON, and nothing lost on the way


def _holdout(cfg, run_id, version):
    "(bundle, time-sorted raw rows, holdout start, holdout end) of a run."
    bundle = load_bundle(Path(cfg.models_dir) / "NSE" / run_id)
    raw, _ = load_dataset("NSE", version, cfg)
    raw = raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    return (bundle, raw, *(pd.Timestamp(t) for t in bundle.manifest["holdout_window"]))


def test_trial_rule_returns_only_when_asked(tiny_run):
    bundle, raw, start, end = _holdout(*tiny_run)
    tcfg = G.train_config_of(bundle)
    bt = G.default_backtest_config("NSE", dataclasses.asdict(tcfg))
    plain = G.evaluate_model(bundle, tcfg, raw, start, end, bt)
    full = G.evaluate_model(bundle, tcfg, raw, start, end, bt, rule_returns=True)
    assert "rule_daily_returns" not in plain and len(full["rule_daily_returns"]) >= 2
    assert plain["probabilities"] == full["probabilities"] and plain["backtest"] == full["backtest"]


def test_gate_reads_each_training_config_once(tiny_run, monkeypatch):
    cfg, run_id, _ = tiny_run
    real, read = G.train_config_of, []
    monkeypatch.setattr(G, "train_config_of", lambda bundle: read.append(bundle.run_dir.name) or real(bundle))
    report = G.evaluate_candidate("NSE", run_id, baseline=run_id, run_cfg=cfg, write=False)   # the run against itself
    assert read == [run_id, run_id]                                  # once for the candidate, once for the baseline
    assert "rule_daily_returns" in report["candidate"] and "rule_daily_returns" not in report["production"]
    assert report["production"]["probabilities"] == report["candidate"]["probabilities"]


def test_window_probabilities_follow_the_label_classes(tiny_run):
    bundle, raw, start, end = _holdout(*tiny_run)
    tcfg, scores = G.train_config_of(bundle), G.signals_for(bundle, raw)
    table, keep, probs = G.window_probabilities(tcfg, raw, scores, start, end)
    assert table.classes == tuple(bundle.model_set.classes) == ("SELL", "HOLD", "BUY")   # what the model was trained with
    ts = table.features.timestamp[keep]
    expected = scores.set_index("timestamp").loc[ts, ["prob_SELL", "prob_HOLD", "prob_BUY"]].to_numpy()
    np.testing.assert_array_equal(probs, expected)
    shuffled = scores[scores.columns[::-1]]                          # columns picked by name, not position
    np.testing.assert_array_equal(G.window_probabilities(tcfg, raw, shuffled, start, end)[2], expected)
    with pytest.raises(ValueError, match=r"scores lack \['prob_BUY'\]: the model's classes are not \['SELL', 'HOLD', 'BUY'\]"):
        G.window_probabilities(tcfg, raw, scores.drop(columns="prob_BUY"), start, end)

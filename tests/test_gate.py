"""Tests of the promotion gate's evidence criteria (oi_ml.gate): the pooled trial-Sharpe variance by hand, the
small-sample PSR guard, the DSR against hand-computed values, and — on a tiny real model — that the DSR's candidate
series is exactly the AutoML trial rule applied to the candidate's holdout probabilities (computed for the candidate
only, with each model's training config read once) and that window probabilities follow the label classes.
Also: an AutoML run of another dataset/target/labels, or one reaching into the candidate's holdout, is refused; the
production model is compared only on the holdout bars after its training (or not at all, saying why); rule texts follow
GateConfig; every criterion says its unit and a direction the verdict follows; the class-prior baseline uses only rows
whose labels end before the window; the report names the sha256 of the manifest it judged, and a run re-manifested
after the gate ran does not deploy under the old verdict; a production model of another index (symbols) is not
compared."""
import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from types import SimpleNamespace
from scipy import stats

from oi_ml import gate as G
from oi_ml.automl import bar_forward_returns, directional_score, rule_daily_returns
from oi_ml.config import IST, RunConfig
from oi_ml.datasets import export_training_window, load_dataset, sha256_file
from oi_ml.metrics import expected_max_sharpe, probabilistic_sharpe_ratio
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import ModelIntegrityError, TrainingTable, build_training_table, load_bundle, score_frame, train_model

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


def last_purged_row(table, start) -> pd.Timestamp:
    "The last labelled row before `start` whose label ends before it: the last row a search purged at the window may use."
    ts = table.features.timestamp
    return ts[((ts < start) & (table.label_end_time < start)).to_numpy()].iloc[-1]


def segments_to(table, start, last=None) -> list:
    "Two walk-forward segment records (as AutoML writes them), the second validating up to `last` (default: `last_purged_row`)."
    ts = table.features.timestamp
    a, b, c = (ts.iloc[len(ts) * k // 8].isoformat() for k in (1, 2, 3))
    last = (last_purged_row(table, start) if last is None else last).isoformat()
    return [dict(segment=0, train_start=ts.iloc[0].isoformat(), train_end=a, valid_start=a, valid_end=b),
            dict(segment=1, train_start=a, train_end=c, valid_start=c, valid_end=last)]


def fake_automl(cfg, bundle, name, trials, segments, labels=None, **manifest) -> Path:
    "An AutoML run folder for the candidate `bundle`'s dataset and target (unless overridden): trial returns, summary, hash-listing manifest."
    folder = Path(cfg.models_dir) / "NSE" / name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "reports").mkdir(parents=True)
    trials.to_parquet(folder / "reports" / "automl_trial_returns.parquet")
    own_labels = json.loads((bundle.run_dir / "reports" / "training_report.json").read_text())["config"]["labels"]
    summary = dict(run_id=name, target=bundle.manifest["target"], config=dict(train=dict(labels=labels or own_labels)),
                   segmentation=dict(n_segments=len(segments), segments=segments))
    (folder / "reports" / "auto_ml_summary.json").write_text(json.dumps(summary))
    files = {rel: sha256_file(folder / rel) for rel in ("reports/auto_ml_summary.json", "reports/automl_trial_returns.parquet")}
    (folder / "manifest.json").write_text(json.dumps(dict(run_id=name, kind="automl", dataset_version=bundle.manifest["dataset_version"],
                                                         dataset_sha256=bundle.manifest["dataset_sha256"], target=bundle.manifest["target"],
                                                         files=files) | manifest))
    return folder


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

    # a fake AutoML run with two segments of trials, so the DSR is a real deflation; its days and segments end before the holdout
    trials = long_trials({0: np.random.default_rng(0).normal(0, 0.01, (10, 3)), 1: np.random.default_rng(1).normal(0, 0.01, (10, 3))})
    fake_automl(cfg, bundle, "automl-test", trials, segments_to(table, start))
    report = G.evaluate_candidate("NSE", run_id, baseline=None, automl_run="automl-test", run_cfg=cfg, write=False)
    got = pd.Series(report["candidate"]["rule_daily_returns"])
    pd.testing.assert_series_equal(got, expected.round(10), check_names=False, rtol=1e-9, check_index_type=False)
    assert report["dsr"]["n_trials"] == 7 and report["dsr"]["variance_basis"].startswith("pooled")
    assert report["dsr"]["sr_daily"] == pytest.approx(sr(expected), rel=1e-6)
    assert report["policy_sharpe"]["n_days"] == len(report["candidate"]["daily_returns"])
    assert json.loads(json.dumps(report, allow_nan=False)) == report    # strict JSON, and nothing lost on the way
    assert report["automl_check"]["last_trial_day"] == "2025-08-10" and report["automl_check"]["dataset_version"] == version


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
    assert report["baseline_comparison"]["whole_holdout"] and report["production"]["window"]["start"] == report["window"]["start"]
    assert len(report["production"]["daily_returns"]) >= 2                      # saved for production too (the pack's daily Sharpe)
    assert report["production"]["daily_returns"] == report["candidate"]["daily_returns"]   # the same model on the same sessions


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


# ---------------------------------------------------------------- which AutoML run may feed the DSR and PBO

def _raises(cfg, run_id, automl_run, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        G.evaluate_candidate("NSE", run_id, baseline=None, automl_run=automl_run, run_cfg=cfg, write=False)


def test_a_mistyped_automl_run_is_refused_and_the_gate_report_kept(tiny_run):
    """A review found `oi-ml gate --automl <typo>` judged the run as if no AutoML search existed (PBO 'no AutoML trials
    recorded') and wrote that FAIL over the run's gate report, naming an AutoML run that does not exist."""
    cfg, run_id, _ = tiny_run
    report = Path(cfg.models_dir) / "NSE" / run_id / "reports" / "gate_report.json"
    before = report.read_bytes() if report.exists() else None
    with pytest.raises(ValueError, match=r"AutoML run 'automl-2025-08-12-5cdf67f2e26' under .*/NSE: no such AutoML run "
                                         r"\(newest NSE AutoML runs: .*\); give an existing --automl id.*nothing was written"):
        G.evaluate_candidate("NSE", run_id, baseline=None, automl_run="automl-2025-08-12-5cdf67f2e26", run_cfg=cfg)
    assert (report.read_bytes() if report.exists() else None) == before


def test_automl_run_of_another_dataset_target_or_labels_is_refused(tiny_run):
    cfg, run_id, version = tiny_run
    bundle, raw, start, _ = _holdout(cfg, run_id, version)
    table = build_training_table(raw, G.train_config_of(bundle))
    trials, segments = long_trials({0: np.random.default_rng(5).normal(0, 0.01, (6, 2))}), segments_to(table, start)
    labels = json.loads((bundle.run_dir / "reports" / "training_report.json").read_text())["config"]["labels"]
    h = labels["horizon_bars"]
    cases = [(dict(dataset_version="2025-07-01"), None, f"has dataset version '2025-07-01' but candidate '{run_id}' has '{version}'"),
             (dict(dataset_sha256="0" * 64), None,
              f"has dataset content sha256 '{'0' * 64}' but candidate '{run_id}' has '{bundle.manifest['dataset_sha256']}'"),
             (dict(target="direction"), None, f"has target 'direction' but candidate '{run_id}' has 'triple_barrier'"),
             ({}, labels | dict(horizon_bars=h + 5), f"has labels horizon_bars={h + 5} but candidate '{run_id}' has horizon_bars={h}")]
    for i, (manifest, other_labels, message) in enumerate(cases):
        fake_automl(cfg, bundle, f"automl-other-{i}", trials, segments, labels=other_labels, **manifest)
        _raises(cfg, run_id, f"automl-other-{i}", ValueError, f"AutoML run 'automl-other-{i}' {message}: its trials do not describe")
    folder = fake_automl(cfg, bundle, "automl-tampered", trials, segments)
    summary = folder / "reports" / "auto_ml_summary.json"
    summary.write_text(summary.read_text().replace('"segment": 1', '"segment": 7'))   # edited after the run was published
    _raises(cfg, run_id, "automl-tampered", ModelIntegrityError, "does not match the manifest")


def test_automl_run_reaching_into_the_holdout_is_refused(tiny_run):
    cfg, run_id, version = tiny_run
    bundle, raw, start, end = _holdout(cfg, run_id, version)
    table = build_training_table(raw, G.train_config_of(bundle))
    ts, ends = table.features.timestamp, table.label_end_time
    assert not ((ts < start) & (ends >= start)).any()   # a whole-session holdout: no session-bounded label reaches into it
    in_window = ts[(ts >= start).to_numpy()].iloc[3]
    day = raw.timestamp.dt.tz_convert(IST).dt.strftime("%Y-%m-%d")
    first_bar = raw.timestamp.groupby(day.to_numpy()).min()
    window_day = first_bar[first_bar >= start].index[0]                   # the first whole session inside the holdout
    ok = long_trials({0: np.random.default_rng(6).normal(0, 0.01, (6, 2))})
    late = ok.assign(day=ok.day.where(ok.day != "2025-08-06", window_day))
    cases = [(segments_to(table, start, last=in_window), ok, f"segment 1 uses rows to {in_window.isoformat()}"),
             (segments_to(table, start), late, f"trial returns on 1 day(s) of the window ({window_day})")]
    for i, (segments, trials, message) in enumerate(cases):
        fake_automl(cfg, bundle, f"automl-late-{i}", trials, segments)
        _raises(cfg, run_id, f"automl-late-{i}", ValueError,
                f"AutoML run 'automl-late-{i}' reaches into the candidate's holdout from {start.isoformat()}: {message}")
    # a segment whose last row's label ends inside the window (a label crossing the session end, made by hand) is refused
    last = ts[(ts < start).to_numpy()].iloc[-1]
    crossing = SimpleNamespace(features=table.features, label_end_time=ends.where((ts != last).to_numpy(), start + pd.Timedelta(minutes=5)))
    assert G.segments_in_window([{"segment": 1, "train_end": last.isoformat()}], start, crossing) == [
        f"segment 1's last row {last.isoformat()} has its label ending at {(start + pd.Timedelta(minutes=5)).isoformat()} (not purged)"]
    # the same run purged at the window start is accepted, and the report records what was checked
    fake_automl(cfg, bundle, "automl-purged", ok, segments_to(table, start))
    report = G.evaluate_candidate("NSE", run_id, baseline=None, automl_run="automl-purged", run_cfg=cfg, write=False)
    assert report["automl_check"]["last_row"] == last_purged_row(table, start).isoformat() and report["automl_check"]["n_trial_days"] == 6


# ---------------------------------------------------------------- the window production is compared on

def copy_as_baseline(cfg, run_id, name, **manifest) -> None:
    "A copy of run `run_id` named `name` whose manifest claims other training windows (None drops the key)."
    src, dst = Path(cfg.models_dir) / "NSE" / run_id, Path(cfg.models_dir) / "NSE" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text()) | dict(run_id=name) | manifest
    (dst / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if v is not None}))


def _trained_into_holdout(cfg, run_id, version, share_in):
    """(bundle, raw, start, end, table, train_end, last training label end, its holdout start) of a baseline whose own holdout
    starts `share_in` into the candidate's."""
    bundle, raw, start, end = _holdout(cfg, run_id, version)
    table = build_training_table(raw, G.train_config_of(bundle))
    ts, ends = table.features.timestamp, table.label_end_time
    hold = ts[(ts >= start).to_numpy()]
    own_start = hold.iloc[int(len(hold) * share_in)]
    ins = ((ts < own_start) & (ends < own_start)).to_numpy()              # its in-sample rows, purged as holdout_split does
    return bundle, raw, start, end, table, ts[ins].iloc[-1], ends[ins].max(), own_start


@pytest.fixture(scope="module")
def alone(tiny_run):
    cfg, run_id, _ = tiny_run
    return G.evaluate_candidate("NSE", run_id, baseline=None, run_cfg=cfg, write=False)


def _gated_against_late_baseline(tiny_run, share: float, name: str):
    "A copy of the candidate registered as a baseline trained `share` into the holdout, and the gate report against it."
    cfg, run_id, version = tiny_run
    bundle, raw, start, end, table, train_end, label_end, own_start = _trained_into_holdout(cfg, run_id, version, share)
    copy_as_baseline(cfg, run_id, name, train_window=[table.features.timestamp.iloc[0].isoformat(), train_end.isoformat()],
                     holdout_window=[own_start.isoformat(), end.isoformat()])
    report = G.evaluate_candidate("NSE", run_id, baseline=name, run_cfg=cfg, write=False)
    bars = raw.timestamp[(raw.timestamp >= start) & (raw.timestamp <= end)]
    return report, bundle, raw, end, train_end, label_end, bars


def test_production_is_compared_only_after_its_training(tiny_run, alone):
    report, bundle, raw, end, train_end, label_end, bars = _gated_against_late_baseline(tiny_run, 0.3, "run-late")
    fair = bars[bars > max(train_end, label_end)]
    cmp = report["baseline_comparison"]
    assert cmp["compared"] and not cmp["whole_holdout"] and cmp["window"] == dict(start=fair.iloc[0].isoformat(), end=end.isoformat())
    assert (cmp["n_bars"], cmp["n_window_bars"]) == (len(fair), len(bars)) and 0.5 <= cmp["share"] < 0.8
    assert "trained inside the holdout" in cmp["reason"] and cmp["baseline_clear_after"] == max(train_end, label_end).isoformat()
    # production scored on exactly those bars (an independent evaluation of the same model there), the candidate too
    tcfg = G.train_config_of(bundle)
    there = G.evaluate_model(bundle, tcfg, raw, fair.iloc[0], end, G.default_backtest_config("NSE", dataclasses.asdict(tcfg)))
    assert report["production"]["backtest"] == G._round(G._json_metrics(there["backtest"]))
    assert report["production"]["probabilities"] == G._round(there["probabilities"]) and report["production"]["window"] == cmp["window"]
    assert cmp["candidate"]["backtest"] == report["production"]["backtest"]          # a copy of the candidate: equal on equal bars
    days = report["production"]["daily_returns"]                                  # production's sessions: the comparison window's only
    assert days and cmp["candidate"]["daily_returns"] == days and min(days) >= str(fair.iloc[0].tz_convert("Asia/Kolkata").date())
    assert set(days) <= set(report["candidate"]["daily_returns"]) and len(days) < len(report["candidate"]["daily_returns"])
    assert cmp["candidate"]["probabilities"] != report["candidate"]["probabilities"]  # ... and not the whole-holdout numbers
    assert report["candidate"] == alone["candidate"]                                 # the candidate's own criteria keep its whole holdout
    crit = {c["name"]: c for c in report["criteria"]}
    assert crit["brier"]["value"] == cmp["candidate"]["probabilities"]["model"]["brier"] == crit["brier"]["threshold"] and crit["brier"]["passed"]
    assert crit["oos_sharpe"]["value"] == cmp["candidate"]["backtest"]["sharpe_net"] and fair.iloc[0].isoformat() in crit["oos_sharpe"]["note"]
    assert crit["max_drawdown"]["value"] == alone["candidate"]["backtest"]["max_drawdown_net"]   # the absolute cap: whole holdout
    assert crit["max_drawdown"]["rule"] == "<= 6 %, and <= production + 1 % on the comparison window"


def test_production_trained_on_most_of_the_holdout_is_not_compared(tiny_run, alone):
    cfg, run_id, _ = tiny_run
    report, _, _, _, train_end, label_end, bars = _gated_against_late_baseline(tiny_run, 0.8, "run-later")
    n_fair = int((bars > max(train_end, label_end)).sum())
    cmp = report["baseline_comparison"]
    assert not cmp["compared"] and cmp["window"] is None and report["production"] is None and report["baseline"] == "run-later"
    assert f"({n_fair} of {len(bars)}) are after the baseline's training" in cmp["reason"] and "50 % needed: not compared" in cmp["reason"]
    crit, own = ({c["name"]: c for c in r["criteria"]} for r in (report, alone))
    for name in ("oos_sharpe", "max_drawdown", "brier", "log_loss"):                 # no verdict on in-sample numbers: they fail, saying why
        assert not crit[name]["passed"] and crit[name]["note"] == f"not compared with production: {cmp['reason']}"
    for name in ("deflated_sharpe", "sortino", "profit_factor", "pbo", "min_trades"):
        assert crit[name] == own[name]
    assert report["decision"] == "FAIL" and report["candidate"] == alone["candidate"]
    # a lower minimum compares on the few bars left; a manifest without train_window is not compared
    low = G.evaluate_candidate("NSE", run_id, baseline="run-later", run_cfg=cfg, write=False, gate_cfg=G.GateConfig(min_comparison_share=0.05))
    assert low["baseline_comparison"]["compared"] and low["baseline_comparison"]["n_bars"] == n_fair
    copy_as_baseline(cfg, run_id, "run-unknown", train_window=None)
    unknown = G.evaluate_candidate("NSE", run_id, baseline="run-unknown", run_cfg=cfg, write=False)
    assert not unknown["baseline_comparison"]["compared"] and "records no train_window" in unknown["baseline_comparison"]["reason"]



def test_a_production_model_of_another_index_is_not_compared(tiny_run, alone, tmp_path):
    """Review finding: `retrain --symbol BANKNIFTY` scored the NIFTY production model on BANKNIFTY's holdout and recorded
    `compared: True, whole_holdout: True`, naming neither index. A baseline trained on other symbols than the candidate
    is not compared (the comparison criteria fail, the reason naming both lists); the report records the candidate's
    symbols and the comparison both models'. A baseline whose dataset manifest is gone is compared, saying so."""
    cfg0, run_id, version = tiny_run
    cfg = RunConfig(data_dir=str(tmp_path / "data"))
    for sub in ("datasets", "models"):                                        # a private copy: the module's folders stay as they are
        shutil.copytree(Path(cfg0.data_dir) / sub, tmp_path / "data" / sub)
    other = Path(cfg.datasets_dir) / "NSE" / f"{version}-7"                   # the same bars exported as another index's version
    shutil.copytree(Path(cfg.datasets_dir) / "NSE" / version, other)
    m = json.loads((other / "manifest.json").read_text())
    assert m["symbols"] == ["NIFTY"]
    (other / "manifest.json").write_text(json.dumps(m | dict(version=other.name, symbols=["BANKNIFTY"])))
    copy_as_baseline(cfg, run_id, "run-banknifty", dataset_version=other.name)
    report = G.evaluate_candidate("NSE", run_id, baseline="run-banknifty", run_cfg=cfg, write=False)
    cmp = report["baseline_comparison"]
    assert not cmp["compared"] and cmp["window"] is None and report["production"] is None and report["baseline"] == "run-banknifty"
    assert report["symbols"] == ["NIFTY"] and (cmp["candidate_symbols"], cmp["baseline_symbols"]) == (["NIFTY"], ["BANKNIFTY"])
    assert cmp["reason"].startswith("the baseline was trained on BANKNIFTY, the candidate on NIFTY: not compared")
    crit, own = ({c["name"]: c for c in r["criteria"]} for r in (report, alone))
    for name in ("oos_sharpe", "max_drawdown", "brier", "log_loss"):
        assert not crit[name]["passed"] and crit[name]["note"] == f"not compared with production: {cmp['reason']}"
    for name in ("deflated_sharpe", "sortino", "profit_factor", "pbo", "min_trades"):
        assert crit[name] == own[name]
    assert report["decision"] == "FAIL" and report["candidate"] == alone["candidate"]
    copy_as_baseline(cfg, run_id, "run-pruned", dataset_version="2001-01-01")   # its dataset version is not on disk
    pruned = G.evaluate_candidate("NSE", run_id, baseline="run-pruned", run_cfg=cfg, write=False)["baseline_comparison"]
    assert pruned["compared"] and pruned["whole_holdout"] and pruned["baseline_symbols"] is None
    assert pruned["reason"].endswith("; the baseline's training symbols are unknown (its dataset manifest is unreadable): not checked")


# ---------------------------------------------------------------- rule texts and the class prior

def _evaluation(sharpe, drawdown, brier):
    return dict(backtest=dict(sharpe_net=sharpe, sortino_net=2.0, profit_factor_net=1.3, max_drawdown_net=drawdown, n_trades=50),
                probabilities=dict(model=dict(brier=brier, log_loss=3 * brier), prior=dict(brier=0.3, log_loss=0.9)), classes=["SELL", "HOLD", "BUY"])


def test_drawdown_rule_text_follows_the_config():
    cfg = G.GateConfig(max_drawdown=0.10, drawdown_tolerance=0.02)
    alone = {c["name"]: c for c in G.gate_criteria(_evaluation(1.0, 0.08, 0.2), None, dict(dsr=0.99), dict(pbo=0.2), cfg)}["max_drawdown"]
    assert alone["rule"] == "<= 10 %" and alone["threshold"] == 0.10 and alone["passed"]        # 8 % passes a 10 % cap
    both = {c["name"]: c for c in G.gate_criteria(_evaluation(1.0, 0.08, 0.2), _evaluation(0.5, 0.07, 0.2), dict(dsr=0.99), dict(pbo=0.2), cfg)}["max_drawdown"]
    assert both["rule"] == "<= min(10 %, production + 2 %)" and both["threshold"] == pytest.approx(0.09) and both["passed"]
    assert "6 %" not in alone["rule"] + both["rule"]



def _criterion_at(name: str, value, base: dict | None) -> dict:
    "Criterion `name` of `gate_criteria` with its value set to `value` through the gate's own inputs (the others passing)."
    cand = _evaluation(1.0, 0.02, 0.2) | dict(daily_returns=pd.Series(dtype=float))
    dsr, pbo, policy = dict(dsr=0.99), dict(pbo=0.2), dict(psr_vs_zero=0.99, sr_daily=0.3, n_days=12, moments="normal")
    walk = dict(available=True, windows=[], n_trades=40, sessions=10, return_net=0.01)
    inputs = dict(oos_sharpe=(cand["backtest"], "sharpe_net"), sortino=(cand["backtest"], "sortino_net"),
                  profit_factor=(cand["backtest"], "profit_factor_net"), max_drawdown=(cand["backtest"], "max_drawdown_net"),
                  min_trades=(cand["backtest"], "n_trades"), brier=(cand["probabilities"]["model"], "brier"),
                  log_loss=(cand["probabilities"]["model"], "log_loss"), deflated_sharpe=(dsr, "dsr"), pbo=(pbo, "pbo"),
                  policy_psr=(policy, "psr_vs_zero"), walk_forward=(walk, "return_net"))
    where, key = inputs[name]
    where[key] = value
    crit = G.gate_criteria(cand, base, dsr, pbo, G.GateConfig(), policy=policy, walk_forward=walk)
    return {c["name"]: c for c in crit}[name]


def test_every_criterion_says_its_unit_and_a_direction_the_verdict_follows(alone):
    """The pack and `oi-ml gate` guessed a criterion's unit from a list of names and its passing side from the rule text's
    first character. A real report now gives both for every criterion; each `direction` is checked against the gate's
    own verdict on a value just above and just below the threshold, with and without a production model."""
    for c in alone["criteria"]:
        assert c["unit"] in G.CRITERION_UNITS and c["direction"] in G.CRITERION_DIRECTIONS, c
    production = _evaluation(0.5, 0.02, 0.25)
    for base in (None, production):
        for c in alone["criteria"]:
            threshold = _criterion_at(c["name"], 0.0, base)["threshold"]
            step = 1 if isinstance(threshold, int) else 1e-6 * max(1.0, abs(threshold))
            above, below = (_criterion_at(c["name"], threshold + step, base), _criterion_at(c["name"], threshold - step, base))
            assert (above["passed"], below["passed"]) == {"min": (True, False), "max": (False, True)}[c["direction"]], (c["name"], base)
            assert (above["unit"], above["direction"]) == (c["unit"], c["direction"])
    assert any(c["unit"] == "fraction_percent" for c in alone["criteria"]) and {c["direction"] for c in alone["criteria"]} == {"min", "max"}


def test_class_prior_uses_only_labels_that_end_before_the_window():
    ts = pd.Series(pd.date_range("2025-08-04 03:45", periods=400, freq="min", tz="UTC"))
    y = np.random.default_rng(1).integers(0, 3, 400)
    table = lambda labels: TrainingTable(pd.DataFrame({"timestamp": ts}), [], labels, ts + pd.Timedelta(minutes=15), np.ones(400), ("SELL", "HOLD", "BUY"))
    start, keep, probs = ts[300], (ts >= ts[300]).to_numpy(), np.full((100, 3), 1 / 3)
    prior = G.probability_metrics(table(y), keep, probs, start)["prior"]
    freq = np.bincount(y[:285], minlength=3) / 285                                 # rows 285-299 end inside the window: purged
    assert prior["log_loss"] == pytest.approx(-np.mean(np.log(freq[y[300:]])), rel=1e-9)
    assert prior["brier"] == pytest.approx(np.mean(np.sum((freq - np.eye(3)[y[300:]]) ** 2, axis=1)), rel=1e-9)
    relabelled = np.r_[y[:285], np.ones(15, dtype=int), y[300:]]                   # only the purged rows' labels change
    assert G.probability_metrics(table(relabelled), keep, probs, start)["prior"] == prior


# ---------------------------------------------------------------- the verdict names the content it judged (review G1)

def test_the_report_names_the_manifest_it_judged_and_deploy_holds_it_to_that(tiny_run, alone, tmp_path):
    """The report records the sha256 of the candidate's manifest.json bytes; a run whose model is replaced and
    re-manifested after the gate ran is refused at deploy (naming both hashes) until the gate runs again."""
    import hashlib
    from oi_ml.registry import RegistryError, current_version, deploy_model
    cfg0, run_id, _ = tiny_run
    folder0 = Path(cfg0.models_dir) / "NSE" / run_id
    assert alone["candidate_manifest_sha256"] == hashlib.sha256((folder0 / "manifest.json").read_bytes()).hexdigest()
    shutil.copytree(cfg0.data_dir, tmp_path / "data")                       # a private copy: the module's run stays as it is
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    folder, report_path = Path(cfg.models_dir) / "NSE" / run_id, Path(cfg.models_dir) / "NSE" / run_id / "reports" / "gate_report.json"

    def gate_forced_to_pass() -> dict:
        "The real gate report with its verdict forced to PASS (tiny data cannot pass PBO without AutoML)."
        report = G.evaluate_candidate("NSE", run_id, baseline="production", run_cfg=cfg)
        forced = {**json.loads(report_path.read_text()), "passed": True, "decision": "PASS", "failed": []}
        report_path.write_text(json.dumps(forced))
        return forced

    judged = gate_forced_to_pass()["candidate_manifest_sha256"]
    (folder / "calibration.json").write_text("{}")                          # the model changes after the gate ...
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["calibration.json"] = sha256_file(folder / "calibration.json")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))   # ... and is re-manifested
    load_bundle(folder)                                                     # a consistent run again
    now = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    with pytest.raises(RegistryError, match=rf"run {run_id}: the gate judged run manifest sha256 {judged[:12]}…, but the run's "
                                            rf"manifest is {now[:12]}… now .*re-run the gate"):
        deploy_model("NSE", run_id, "pytest", "gate passed earlier", run_cfg=cfg)
    assert current_version("NSE", cfg) is None
    assert gate_forced_to_pass()["candidate_manifest_sha256"] == now        # the gate re-run judges the new content
    version = deploy_model("NSE", run_id, "pytest", "gated on this content", run_cfg=cfg)
    assert version["gate"]["candidate_manifest_sha256"] == now and version["gate_source"] == "report"
    assert version["files"]["calibration.json"] == sha256_file(folder / "calibration.json")   # the content that was judged


# ---------------------------------------------------------------- a model of another exchange

def test_a_model_of_another_exchange_is_not_gated(tiny_run, tmp_path):
    """Review finding: an NSE run copied under models/BSE/ was scored on BSE data and left a gate report there. It is
    refused before any data loads, and so is a baseline whose manifest names another exchange."""
    from oi_ml.registry import RegistryError
    cfg0, run_id, version = tiny_run
    cfg = RunConfig(data_dir=str(tmp_path / "data"))
    shutil.copytree(Path(cfg0.datasets_dir) / "NSE" / version, Path(cfg.datasets_dir) / "BSE" / version)   # BSE data of that version
    copied = shutil.copytree(Path(cfg0.models_dir) / "NSE" / run_id, Path(cfg.models_dir) / "BSE" / run_id)
    (copied / "reports" / "gate_report.json").unlink(missing_ok=True)
    with pytest.raises(RegistryError, match=rf"BSE/{run_id}/manifest.json: manifest exchange 'NSE' differs from 'BSE'"):
        G.evaluate_candidate("BSE", run_id, baseline=None, run_cfg=cfg)
    assert not (copied / "reports" / "gate_report.json").exists()
    copy_as_baseline(cfg0, run_id, "run-of-bse", exchange="BSE")
    with pytest.raises(RegistryError, match=r"run-of-bse/manifest.json: manifest exchange 'BSE' differs from 'NSE'"):
        G.evaluate_candidate("NSE", run_id, baseline="run-of-bse", run_cfg=cfg0, write=False)


@pytest.mark.parametrize("missing", ["holdout_window", "dataset_version", "run_id"])
def test_a_hand_edited_candidate_manifest_is_one_error(tiny_run, tmp_path, missing):
    """Last session's note: `oi-ml backtest` named a run manifest's missing key, but the gate still ended in a KeyError
    traceback. `load_bundle` now names the key for every reader; nothing is written."""
    cfg0, run_id, version = tiny_run
    cfg = RunConfig(data_dir=str(tmp_path / "data"))
    shutil.copytree(Path(cfg0.datasets_dir) / "NSE" / version, Path(cfg.datasets_dir) / "NSE" / version)
    copied = shutil.copytree(Path(cfg0.models_dir) / "NSE" / run_id, Path(cfg.models_dir) / "NSE" / run_id)
    (copied / "reports" / "gate_report.json").unlink(missing_ok=True)
    manifest = json.loads((copied / "manifest.json").read_text())
    del manifest[missing]
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match=rf"^{re.escape(str(copied / 'manifest.json'))}: missing key\(s\) '{missing}'$"):
        G.evaluate_candidate("NSE", run_id, baseline=None, run_cfg=cfg)
    assert not (copied / "reports" / "gate_report.json").exists()


# ---------------------------------------------------------------- walk-forward consistency

def _walk_forward_files(folder: Path, holdout_start: pd.Timestamp, returns: list[list[float]], trades: list[int], run_id: str | None = None,
                        policy: dict | None = None):
    """Hand-made walk-forward windows before the holdout: `returns[i]` are window i's daily net returns, `trades[i]` its
    trades; backtested (the summary's `config`) with `policy`, default: the gate's own for the run."""
    policy = policy or json.loads(json.dumps(dataclasses.asdict(G.default_backtest_config("NSE", dataclasses.asdict(G.train_config_of(load_bundle(folder)))))))
    reports, account, windows, segments = folder / "reports", policy["account_size"], {}, []
    day = holdout_start.tz_convert(IST).normalize() - pd.Timedelta(days=40)
    for i, (daily, n) in enumerate(zip(returns, trades)):
        days = [day + pd.Timedelta(days=k) for k in range(len(daily))]
        day = days[-1] + pd.Timedelta(days=1)
        equity = account * np.cumprod(1 + np.asarray(daily))
        pd.DataFrame(dict(timestamp=[(d + pd.Timedelta(hours=15, minutes=29)).tz_convert("UTC") for d in days], equity_net=equity)
                     ).to_parquet(reports / f"equity_walk_forward_{i}.parquet")
        windows[f"walk_forward_{i}"] = dict(start=str(days[0].date()), end=str(days[-1].date()),
                                            benchmarks=dict(ml_signal=dict(n_trades=n, return_net=equity[-1] / account - 1)))
        segments.append(dict(segment=i, model_version=f"{run_id or folder.name}/walk_forward_{i}"))
    (reports / "backtest_windows.json").write_text(json.dumps(dict(config=policy, windows=windows,
                                                                   walk_forward=dict(segments=segments))))


def test_walk_forward_criterion_reads_the_runs_windows(tiny_run, alone, tmp_path):
    """Review finding: the demo's BSE candidate passed the gate while its training procedure, re-fit on the walk-forward
    segments before the holdout, lost 1.62 % in one window and made no trade in the other; the gate did not read those
    windows. Now `walk_forward` needs their pooled net return > 0 with a trade, records the files' sha256, fails with the
    reason when the run has no walk-forward backtest, and refuses windows reaching the holdout or fitted for another run."""
    cfg0, run_id, _ = tiny_run
    assert {c["name"]: c for c in alone["criteria"]}["walk_forward"]["passed"] is False          # no walk-forward backtest:
    assert "backtest_windows.json is absent" in {c["name"]: c for c in alone["criteria"]}["walk_forward"]["note"]   # no evidence
    shutil.copytree(cfg0.data_dir, tmp_path / "data")
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    folder = Path(cfg.models_dir) / "NSE" / run_id
    start = pd.Timestamp(json.loads((folder / "manifest.json").read_text())["holdout_window"][0])
    gate = lambda: G.evaluate_candidate("NSE", run_id, baseline=None, run_cfg=cfg, write=False)

    _walk_forward_files(folder, start, [[0.004, -0.001, 0.002], [-0.003, -0.0131]], [20, 111])   # +0.50 %, then -1.62 %
    report = gate()
    crit = {c["name"]: c for c in report["criteria"]}["walk_forward"]
    expected = np.prod(1 + np.array([0.004, -0.001, 0.002, -0.003, -0.0131])) - 1
    assert crit["value"] == pytest.approx(expected, abs=1e-9) and expected < 0 and not crit["passed"] and "walk_forward" in report["failed"]
    assert "walk_forward_1" in crit["note"] and "111 trades, -1.61%" in crit["note"]
    assert report["walk_forward"]["files"]["reports/backtest_windows.json"] == sha256_file(folder / "reports" / "backtest_windows.json")
    assert [w["n_trades"] for w in report["walk_forward"]["windows"]] == [20, 111]

    _walk_forward_files(folder, start, [[0.004, -0.001, 0.002], [0.003, -0.001]], [20, 30])
    assert {c["name"]: c for c in gate()["criteria"]}["walk_forward"]["passed"]
    other = json.loads(json.dumps(dataclasses.asdict(G.default_backtest_config("NSE")))) | dict(min_confidence=0.55)
    _walk_forward_files(folder, start, [[0.004, -0.001, 0.002], [0.003, -0.001]], [20, 30], policy=other)   # another policy
    crit = {c["name"]: c for c in gate()["criteria"]}["walk_forward"]
    assert not crit["passed"] and "another policy than this gate's" in crit["note"] and "min_confidence" in crit["note"]
    _walk_forward_files(folder, start, [[0.0, 0.0], [0.0, 0.0]], [0, 0])                          # no trade: no evidence
    crit = {c["name"]: c for c in gate()["criteria"]}["walk_forward"]
    assert not crit["passed"] and "no trade in any window" in crit["note"]

    _walk_forward_files(folder, start + pd.Timedelta(days=40), [[0.001] * 3], [5])               # ends inside the holdout
    with pytest.raises(ValueError, match=r"walk-forward window walk_forward_0 ends .*not before the holdout's first session"):
        gate()
    _walk_forward_files(folder, start, [[0.001] * 3], [5], run_id="run-someone-else")             # another run's segments
    with pytest.raises(ValueError, match=rf"segments \['run-someone-else/walk_forward_0'\] are not the segments 0..0 of run {run_id}"):
        gate()



def test_walk_forward_evidence_is_refused_when_its_files_do_not_agree(tmp_path):
    """Review findings: a window with trades but an empty equity file counted as 0 %, an equity curve dated inside the
    holdout passed (only the summary's dates were checked), an inf equity passed, and a dropped losing window (0 and 2
    left) passed. Each is now refused naming the file."""
    folder, start, policy = tmp_path / "run-z", pd.Timestamp("2025-10-01", tz=IST), dict(account_size=100.0)
    (folder / "reports").mkdir(parents=True)
    write = lambda: _walk_forward_files(folder, start, [[0.01, 0.01], [-0.02, 0.01], [0.01]], [3, 4, 5], policy=policy)
    equity = lambda i: folder / "reports" / f"equity_walk_forward_{i}.parquet"
    write()
    assert G.walk_forward_evidence(folder, start)["available"]
    pd.read_parquet(equity(1)).iloc[:0].to_parquet(equity(1))
    with pytest.raises(ValueError, match=r"equity_walk_forward_1.parquet: no equity rows for walk-forward window walk_forward_1 \(4 trades"):
        G.walk_forward_evidence(folder, start)
    write()
    moved = pd.read_parquet(equity(1))
    moved.assign(timestamp=moved.timestamp + pd.Timedelta(days=60)).to_parquet(equity(1))
    with pytest.raises(ValueError, match=r"equity_walk_forward_1.parquet: equity dated .* outside walk-forward window walk_forward_1"):
        G.walk_forward_evidence(folder, start)
    write()
    pd.read_parquet(equity(2)).assign(equity_net=np.inf).to_parquet(equity(2))
    with pytest.raises(ValueError, match=r"equity_walk_forward_2.parquet: equity_net is not finite at row 0"):
        G.walk_forward_evidence(folder, start)
    write()
    summary = json.loads((folder / G.WALK_FORWARD_SUMMARY).read_text())
    del summary["windows"]["walk_forward_1"]
    summary["walk_forward"]["segments"] = [s for s in summary["walk_forward"]["segments"] if s["segment"] != 1]
    (folder / G.WALK_FORWARD_SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"windows \['walk_forward_0', 'walk_forward_2'\] .* are not the segments 0..1 of run run-z"):
        G.walk_forward_evidence(folder, start)


# ---------------------------------------------------------------- barriers and volatility as the labels define them

def test_inf_label_barrier_is_off_in_the_gate_backtest():
    from oi_ml.backtest import BacktestConfig, run_backtest
    from oi_ml.labels import LabelConfig
    from oi_ml.train import TrainConfig, _round
    from oi_ml.config import config_to_dict
    tcfg = TrainConfig(labels=LabelConfig(horizon_bars=15, profit_mult=math.inf, stop_mult=1.5))
    stored = _round(config_to_dict(tcfg))                  # what the training report holds: inf written as null
    assert stored["labels"]["profit_mult"] is None
    for cfg in (config_to_dict(tcfg), stored):             # the live config (inf) and the report's (null)
        bt = G.default_backtest_config("NSE", cfg)
        assert (bt.take_profit_mult, bt.stop_loss_mult, bt.payoff_ratio) == (None, 1.5, BacktestConfig.payoff_ratio)
    ts = pd.date_range("2025-08-05 09:15", periods=20, freq="1min", tz=IST).tz_convert("UTC")
    bars = pd.DataFrame(dict(timestamp=ts, open=1000.0, high=1001.0, low=999.0, close=1000.0))
    signals = pd.DataFrame(dict(signal=np.r_[0, 0, 1, np.zeros(17)].astype(np.int8), confidence=0.9, volatility=0.001))
    assert len(run_backtest(bars, signals, bt).trades) == 1          # runs (it refused the config before)


def test_the_gate_backtest_trades_daily_bars_and_keeps_intraday_configs():
    """On daily bars (bar_minutes = 375) the gate's backtest never traded: flat at each session's end skipped every
    signal (its fill is the next session's), and 0.1 % risk against a 1.5 x daily-volatility stop sized below one lot.
    The risk a trade is 0.1 % x sqrt(bar_minutes) at every bar length (1-minute bars, the demo's, keep 0.1 %)."""
    from oi_ml.backtest import BacktestConfig, decision_counts, run_backtest
    labels = {"labels": {"horizon_bars": 2}}
    for minutes, risk in ((1, 0.001), (3, 0.0017), (5, 0.0022), (15, 0.0039), (125, 0.0112)):   # intraday: flat each evening,
        expected = BacktestConfig(exchange="NSE", bar_minutes=minutes, holding_period_minutes=2 * minutes, take_profit_mult=1.5,
                                  stop_loss_mult=1.5, min_confidence=0.65, transaction_cost_bps=1.0, slippage_bps=0.5,   # the
                                  payoff_ratio=1.0, account_size=5_000_000.0, max_risk_per_trade=risk)   # 1-minute leverage
        assert G.default_backtest_config("NSE", labels, minutes) == expected
    daily = G.default_backtest_config("NSE", labels, 375)
    assert (daily.flat_at_session_end, daily.max_risk_per_trade) == (False, 0.0194)   # 0.1 % x sqrt(375)
    days = pd.bdate_range("2025-08-04", periods=20)
    ts = pd.DatetimeIndex([pd.Timestamp(f"{d.date()} 09:15", tz=IST) for d in days]).tz_convert("UTC")
    close = 24000 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 20)))   # 1 % a day
    open_ = np.r_[24000, close[:-1]]
    bars = pd.DataFrame({"timestamp": ts, "open": open_, "high": np.maximum(open_, close) * 1.005,
                         "low": np.minimum(open_, close) * 0.995, "close": close})
    signals = pd.DataFrame({"signal": np.tile([1, -1], 10).astype(np.int8), "confidence": 0.9, "volatility": 0.01})
    result = run_backtest(bars, signals, daily)
    counts = decision_counts(result.raw_rows)
    assert len(result.trades) == counts["entered"] >= 5 and counts["session_boundary"] == counts["zero_lots"] == 0
    assert (result.trades.lots == 3).all()                  # ₹97,000 of risk / (24,000 x 1.5 % x 75 a lot ≈ ₹27,000)
    assert "holding_period" in set(result.trades.exit_reason) and "session_end" not in set(result.trades.exit_reason)   # held overnight


def test_train_config_of_reads_a_null_barrier_back_as_inf(tmp_path):
    from oi_ml.labels import LabelConfig
    from oi_ml.train import TrainConfig, _round
    from oi_ml.config import config_to_dict
    tcfg = TrainConfig(labels=LabelConfig(horizon_bars=15, profit_mult=math.inf, stop_mult=1.5))
    stored = _round(config_to_dict(tcfg))                  # what the training report holds: inf written as null
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "training_report.json").write_text(json.dumps(dict(config=stored)))
    back = G.train_config_of(SimpleNamespace(run_dir=tmp_path))
    assert back.labels.profit_mult == math.inf and back.labels.stop_mult == 1.5 and back.labels == tcfg.labels


def test_signals_for_uses_the_labels_volatility(tiny_run, monkeypatch):
    from oi_ml.labels import LabelConfig, label_volatility
    cfg, run_id, version = tiny_run
    bundle, raw, *_ = _holdout(cfg, run_id, version)
    ewm = LabelConfig(volatility="ewm", vol_window=30)
    expected = label_volatility(raw, ewm)
    np.testing.assert_array_equal(G.signals_for(bundle, raw, ewm)["volatility"].to_numpy(), expected)
    # without labels given, the model's own label config (its training report) decides
    tcfg = G.train_config_of(bundle)
    monkeypatch.setattr(G, "train_config_of", lambda b: dataclasses.replace(tcfg, labels=ewm))
    np.testing.assert_array_equal(G.signals_for(bundle, raw)["volatility"].to_numpy(), expected)


def test_production_trades_the_candidates_barriers_in_the_candidates_volatility(tiny_run, monkeypatch):
    "bt_cfg carries the candidate's label multipliers: production's backtest measures them in the candidate's label volatility."
    from oi_ml.labels import LabelConfig
    cfg, run_id, version = tiny_run
    _, raw, start, end, table, *_ = _trained_into_holdout(cfg, run_id, version, 0.0)
    copy_as_baseline(cfg, run_id, "run-ewm", train_window=[table.features.timestamp.iloc[0].isoformat(), (start - pd.Timedelta("1D")).isoformat()],
                     holdout_window=[start.isoformat(), end.isoformat()])
    own, seen = G.train_config_of, []
    ewm = lambda b: dataclasses.replace(own(b), labels=dataclasses.replace(own(b).labels, volatility="ewm"))
    monkeypatch.setattr(G, "train_config_of", lambda b: ewm(b) if b.run_dir.name == "run-ewm" else own(b))
    signals_for = G.signals_for
    def spy(b, r, *labels):   # records which volatility each model's backtest frame was given (none: the old fixed ATR-14)
        seen.append((b.run_dir.name, getattr(labels[0], "volatility", None) if labels else None))
        return signals_for(b, r, *labels)
    monkeypatch.setattr(G, "signals_for", spy)
    report = G.evaluate_candidate("NSE", run_id, baseline="run-ewm", run_cfg=cfg, write=False)
    assert report["baseline_comparison"]["compared"]
    assert set(seen) == {(run_id, "atr"), ("run-ewm", "atr")}

"""Integration tests of `oi_ml.train`: leak-free fitting (HMM, selector and boosters see in-sample rows only, labels
reaching into the holdout are purged, CV folds are purged), byte-identical reruns, safe artefacts (hash-checked on
load, no pickles), one scoring path (`score_frame` reproduces the report's holdout metrics), the other heads, an
OHLCV-only dataset, and (slow) the planted signal is found while the null simulation gives AUC ~ 0.5.

Training pins `num_threads=1` (the TrainConfig default): on a shared, loaded 2-core machine LightGBM's OpenMP threads
at `num_threads=2` spin against other processes; one small run took 14x longer (2.8 s -> 38.7 s wall), same results."""
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import record_fsync_events

import oi_ml.train as train_mod
from oi_ml.config import RunConfig
from oi_ml.cv import PurgedKFold
from oi_ml.datasets import dataset_dir, export_training_window, load_dataset
from oi_ml.features import (
    OPTION_FEATURE_DEFAULTS,
    REQUIRED_FEATURE_COLUMNS,
    informative_sources,
    supported_feature_columns,
)
from oi_ml.indicators import FEATURE_MEMORY_BARS, WARMUP_BARS
from oi_ml.ingest import import_ohlcv
from oi_ml.labels import LabelConfig
from oi_ml.regimes import RegimeHMMTransformer
from oi_ml.simulate import simulate_market
from oi_ml.store import connect, load_historical_data_for_ml
from oi_ml.train import (
    ModelIntegrityError,
    TrainConfig,
    build_training_table,
    load_bundle,
    score_frame,
    train_model,
    verify_run,
)

N_DAYS = 6                       # trading days of the small simulated dataset (2 250 one-minute bars)
SMALL = TrainConfig(n_splits=3, min_regime_rows=600, max_rounds=40, top_k_features=15, shap_rows=100, num_threads=1)
SIGNAL_DAYS = 30                 # slow signal-vs-null tests
SIGNAL_CFG = TrainConfig(n_splits=3, min_regime_rows=1500, max_rounds=150, top_k_features=20, shap_rows=200, num_threads=1)
NOISE_SIGMAS = 3.0               # the noise bound is this many null standard deviations of the holdout AUC
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".sav")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def simulated_dataset(root: Path, n_days: int, signal_strength: float = 1.0, seed: int = 0) -> tuple[RunConfig, dict]:
    "A data dir under `root` holding an exported dataset version of a simulated NSE window."
    cfg = RunConfig(data_dir=str(root / "data"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=n_days, seed=seed, signal_strength=signal_strength, run_cfg=cfg)
        return cfg, export_training_window(con, "NSE", run_cfg=cfg)


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "reports" / "training_report.json").read_text())


def run_dir_of(cfg: RunConfig, manifest: dict) -> Path:
    return Path(cfg.models_dir) / manifest["exchange"] / manifest["run_id"]


def mann_whitney_auc(positive: np.ndarray, score: np.ndarray) -> float:
    "AUC as the Mann-Whitney statistic with average ranks for ties (reference for the report's AUCs)."
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def holdout_reference(table, holdout_frac: float) -> tuple[np.ndarray, np.ndarray, pd.Timestamp]:
    """(in-sample, holdout, holdout start) by the documented rule: the last share held out, from the first row of the IST
    session it starts in (the next session's when that is row 0), labels reaching into it purged."""
    n = len(table.y); cut = int(n * (1 - holdout_frac))
    days = table.features.timestamp.dt.tz_convert("Asia/Kolkata").dt.date.to_numpy()
    cut = int(np.flatnonzero(days == days[cut])[0]) or int(np.flatnonzero(days > days[cut])[0])
    start = table.features.timestamp.iloc[cut]
    ends = table.label_end_time.tolist()
    ins = np.array([i for i in range(cut) if ends[i] < start], dtype=np.int64)
    return ins, np.arange(cut, n), start


# --------------------------------------------------------------------------------------------------------------------
# the small run: trained once per module, with every fit recorded

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_small")
    cfg, dm = simulated_dataset(root, N_DAYS)
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    return SimpleNamespace(root=root, cfg=cfg, dm=dm, raw=raw)


@pytest.fixture(scope="module")
def small_run(dataset):
    "Train the default head on the small dataset, recording the rows every HMM, selector and model-set fit sees."
    calls = SimpleNamespace(hmm=[], selector=[], model_set=[], predict=[], calibration=[])
    real_hmm_fit, real_select = RegimeHMMTransformer.fit, train_mod.select_features
    real_fit_ms, real_predict, real_cal = train_mod.fit_model_set, train_mod.predict_model_set, train_mod.fit_calibration

    def hmm_fit(self, frame):
        calls.hmm.append(frame.index.to_numpy().copy()); return real_hmm_fit(self, frame)
    def select(family, cfg, k, X, y, w):
        calls.selector.append(X.index.to_numpy().copy()); return real_select(family, cfg, k, X, y, w)
    def fit_ms(table, rows, cfg, rounds=None):
        calls.model_set.append(np.asarray(rows).copy()); return real_fit_ms(table, rows, cfg, rounds)
    def predict(ms, features, regimes):
        calls.predict.append(features.index.to_numpy().copy()); return real_predict(ms, features, regimes)
    def calibrate(y, probs, method="isotonic"):
        calls.calibration.append(len(y)); return real_cal(y, probs, method)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RegimeHMMTransformer, "fit", hmm_fit)
        mp.setattr(train_mod, "select_features", select)
        mp.setattr(train_mod, "fit_model_set", fit_ms)
        mp.setattr(train_mod, "predict_model_set", predict)
        mp.setattr(train_mod, "fit_calibration", calibrate)
        manifest = train_model("NSE", dataset.dm["version"], cfg=SMALL, run_cfg=dataset.cfg)
    run_dir = run_dir_of(dataset.cfg, manifest)
    table = build_training_table(dataset.raw, SMALL)
    return SimpleNamespace(manifest=manifest, run_dir=run_dir, report=read_report(run_dir), calls=calls, table=table,
                           cfg=dataset.cfg, dm=dataset.dm, raw=dataset.raw)


def test_run_layout_and_report_mechanics(small_run):
    rep, man = small_run.report, small_run.manifest
    assert rep["classes"] == ["SELL", "HOLD", "BUY"] and rep["family"] == "lightgbm" and len(rep["cv"]["folds"]) == SMALL.n_splits
    assert set(man["files"]) >= {"regime_hmm.json", "model_features.json", "selector.json", "calibration.json",
                                 "reports/training_report.json", "models/pooled.lgb.txt"}
    hold = rep["holdout"]
    for key in ("raw", "calibrated", "majority_baseline"):
        assert {"accuracy", "log_loss", "brier", "auc", "directional_auc", "f1_macro", "n"} <= set(hold[key]), key
    margins = hold["margin_over_majority"]
    assert margins["accuracy"] == pytest.approx(hold["calibrated"]["accuracy"] - hold["majority_baseline"]["accuracy"], abs=1e-9)
    assert margins["log_loss"] == pytest.approx(hold["majority_baseline"]["log_loss"] - hold["calibrated"]["log_loss"], abs=1e-9)
    assert margins["auc"] == pytest.approx(hold["calibrated"]["auc"] - 0.5, abs=1e-9)
    # the majority baseline by hand: the in-sample majority class's share of the holdout
    table, ins, hold_rows = small_run.table, *holdout_reference(small_run.table, SMALL.holdout_frac)[:2]
    majority = np.bincount(table.y[ins], minlength=3).argmax()
    assert hold["majority_baseline"]["accuracy"] == round(float(np.mean(table.y[hold_rows] == majority)), 10)
    assert rep["class_balance"] == {c: int((table.y[ins] == i).sum()) for i, c in enumerate(rep["classes"])}
    # the manifest summarises the report
    summary = man["metrics_summary"]
    assert summary["accuracy"] == hold["calibrated"]["accuracy"] and summary["majority_accuracy"] == hold["majority_baseline"]["accuracy"]
    assert man["model_features"] == REQUIRED_FEATURE_COLUMNS and man["dataset_version"] == small_run.dm["version"]


def test_manifest_holds_the_drift_family_of_the_used_features(small_run, monkeypatch):
    """`drift_family` is calibrated over the model's used features (selected + regime) on the in-sample rows, with the
    run's live window and psi_alert; None when the in-sample rows hold under four windows' worth (2,000 rows here)."""
    from oi_ml.features import drift_family
    bundle = train_mod.load_bundle(small_run.run_dir)
    meta = json.loads((small_run.run_dir / "model_features.json").read_text())
    regime = json.loads((small_run.run_dir / "regime_hmm.json").read_text())["config"]["feature_columns"]
    used = train_mod.model_used_columns(bundle.model_set, small_run.table)
    assert used == sorted((set(meta["selected"]) | set(regime)) & set(small_run.manifest["model_features"])) and used
    assert "drift_family" in small_run.manifest and small_run.manifest["drift_family"] is None
    seen = {}
    real = train_mod.drift_family
    def spy(frame, distribution, columns, rows, psi_alert):
        seen.update(columns=columns, rows=rows, psi_alert=psi_alert, n=len(frame))
        return real(frame, distribution, columns, rows, psi_alert)
    monkeypatch.setattr(train_mod, "drift_family", spy)
    ins = holdout_reference(small_run.table, SMALL.holdout_frac)[0]
    manifest = train_mod._manifest(small_run.run_dir, "run-x", "NSE", small_run.dm, SMALL, small_run.report, small_run.table, ins,
                                   np.full(50, 0.5), "code", 300, used, 0.3)   # 300-row windows: enough rows
    assert seen == {"columns": used, "rows": 300, "psi_alert": 0.3, "n": len(ins)}
    entry = manifest["drift_family"]
    assert entry["rows"] == 300 and entry["psi_alert"] == 0.3 and set(entry["columns"]) <= set(used) and entry["columns"]
    assert len(entry["ratios"]) == entry["windows"] and drift_family is real


def test_manifest_holds_the_regime_probabilities_as_the_model_saw_them(small_run, monkeypatch):
    """The manifest's feature_distribution also holds each regime_prob_* of the final HMM, binned on the in-sample rows
    as the model read them (the forward filter over the dataset's stream, `table_regimes`), after the input features
    and not among `model_features`; the run still verifies. `_manifest` hands `drift_family` a frame with them, so a
    selected probability is calibrated with the used features."""
    from oi_ml.features import bin_proportions, drift_family
    bundle = train_mod.load_bundle(small_run.run_dir)
    hmm, table, man = bundle.model_set.regime_model, small_run.table, small_run.manifest
    probs = hmm.prob_columns
    ins = holdout_reference(table, SMALL.holdout_frac)[0]
    seen = train_mod.table_regimes(hmm, table).iloc[ins]
    assert list(man["feature_distribution"]) == man["model_features"] + probs and man["model_features"] == REQUIRED_FEATURE_COLUMNS
    for c in probs:
        ref = man["feature_distribution"][c]
        assert np.allclose(bin_proportions(seen[c].to_numpy(), ref["edges"]), ref["proportions"], rtol=0, atol=1e-9), c
        assert np.allclose(ref["range"], [seen[c].min(), seen[c].max()], rtol=0, atol=1e-9), c
    assert train_mod.verify_run(small_run.run_dir)["feature_distribution"] == man["feature_distribution"]
    assert train_mod.used_regime_probs(bundle.model_set) == sorted(set(probs) & set(bundle.model_set.selected))
    frames = []
    real = train_mod.drift_family
    monkeypatch.setattr(train_mod, "drift_family", lambda frame, *a: frames.append(frame) or real(frame, *a))
    used = train_mod.model_used_columns(bundle.model_set, table) + ["regime_prob_1"]
    manifest = train_mod._manifest(small_run.run_dir, "run-x", "NSE", small_run.dm, SMALL, small_run.report, table, ins,
                                   np.full(50, 0.5), "code", 300, used, 0.25, None, train_mod.table_regimes(hmm, table))
    assert np.array_equal(frames[0]["regime_prob_1"].to_numpy(), seen["regime_prob_1"].to_numpy())
    assert "regime_prob_1" in manifest["drift_family"]["columns"] and drift_family is real
    without = train_mod._manifest(small_run.run_dir, "run-x", "NSE", small_run.dm, SMALL, small_run.report, table, ins,
                                  np.full(50, 0.5), "code", 300)   # no regimes given: the input features only
    assert list(without["feature_distribution"]) == man["model_features"]


# --------------------------------------------------------------------------------------------------------------------
# no leakage

def test_holdout_purged_and_never_fitted(small_run):
    table, calls = small_run.table, small_run.calls
    ins, hold, start = holdout_reference(table, SMALL.holdout_frac)
    cut = hold[0]
    rep = small_run.report
    assert rep["rows"]["in_sample"] == len(ins) and rep["rows"]["holdout"] == len(hold)
    assert rep["rows"]["purged_at_holdout"] == cut - len(ins) == 0         # the holdout starts a session and labels end with theirs:
    assert (table.label_end_time.iloc[ins] < start).all()                  # nothing reaches into it (22_train's example purges)
    assert rep["rows"]["holdout_window"][0] == start.isoformat()
    ins_set = set(ins.tolist())
    assert len(calls.model_set) == SMALL.n_splits + 1
    for rows in calls.model_set: assert set(rows.tolist()) <= ins_set
    assert np.array_equal(calls.model_set[-1], ins)                         # the final model: all in-sample rows, no more
    # first the candidate calibrations, cross-fitted (one per method and fold, on the other folds' out-of-fold rows minus
    # those overlapping the fold: test_the_after_calibration_maps_are_purged_against_their_fold counts them), then the
    # chosen one on all out-of-fold in-sample rows, then the report's cross-fitted 'after calibration' of the chosen one
    n_candidates = len(train_mod.CALIBRATION_METHODS) * SMALL.n_splits
    assert calls.calibration[n_candidates] == len(ins)                     # calibration on out-of-fold in-sample rows only
    assert len(calls.calibration) == n_candidates + 1 + SMALL.n_splits
    fold_fits = calls.calibration[:n_candidates] + calls.calibration[n_candidates + 1:]
    assert all(n <= len(ins) - min(f["n_test"] for f in rep["cv"]["folds"]) for n in fold_fits)
    assert rep["calibration"]["chosen"] in train_mod.CALIBRATION_METHODS and set(rep["calibration"]["cross_fitted"]) == set(train_mod.CALIBRATION_METHODS)


def test_holdout_prices_never_reach_the_in_sample_fit(dataset):
    """Changing only the holdout's prices leaves every in-sample training input and the fitted model byte-identical.
    Review finding: the table's weights were scaled to mean 1 over all labelled rows, so the holdout's labels moved
    every training weight, and through L2 regularisation the model (in-sample predictions moved by up to 0.15)."""
    cfg = dataclasses.replace(SMALL, n_splits=2, max_rounds=25)
    base = build_training_table(dataset.raw, cfg)
    ins, hold = train_mod.holdout_split(base, cfg)
    moved = dataset.raw.copy()
    after = (moved.timestamp >= base.features.timestamp.iloc[hold[0]]).to_numpy()
    path = np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.002, after.sum())))
    for c in ("open", "high", "low", "close"): moved.loc[after, c] = moved.loc[after, c].to_numpy() * path
    other = build_training_table(moved, cfg)
    ins2, hold2 = train_mod.holdout_split(other, cfg)
    assert np.array_equal(ins, ins2) and np.array_equal(hold, hold2)
    assert (base.y[hold] != other.y[hold2]).sum() > len(hold) // 10          # the holdout's labels did change
    np.testing.assert_array_equal(base.y[ins], other.y[ins2])
    np.testing.assert_array_equal(base.weight[ins], other.weight[ins2])
    (cv, cal, model), (cv2, cal2, model2) = (train_mod.fit_calibrated(t, i, cfg) for t, i in ((base, ins), (other, ins2)))
    np.testing.assert_array_equal(cv["oof"], cv2["oof"])
    assert cv["rounds"] == cv2["rounds"] and model.selected == model2.selected and cal == cal2
    regimes = [train_mod.table_regimes(m.regime_model, t).iloc[ins] for m, t in ((model, base), (model2, other))]
    features = base.features[base.feature_columns].iloc[ins]
    np.testing.assert_array_equal(train_mod.predict_model_set(model, features, regimes[0]),
                                  train_mod.predict_model_set(model2, features, regimes[1]))


def test_regime_hmm_and_selector_fit_in_sample_only(small_run):
    table, calls = small_run.table, small_run.calls
    _, _, start = holdout_reference(table, SMALL.holdout_frac)
    assert len(calls.hmm) == len(calls.selector) == SMALL.n_splits + 1
    times, ends = table.features.timestamp.to_numpy(), table.label_end_time.to_numpy()
    for i, (fit_rows, hmm_rows, sel_rows) in enumerate(zip(calls.model_set, calls.hmm, calls.selector)):
        assert np.array_equal(hmm_rows, fit_rows)
        assert table.features.timestamp.iloc[hmm_rows].max() < start
        assert table.label_end_time.iloc[hmm_rows].max() < start
        if i == SMALL.n_splits:   # the final model: the selector on all in-sample rows
            assert np.array_equal(sel_rows, fit_rows)
            continue
        # inside a CV fold the last 15 % of the fold's rows early-stops the booster: the selector sees only the rows
        # before that slice whose labels end before it starts
        cut = int(len(fit_rows) * 0.85)
        before = [r for r in fit_rows[:cut] if ends[r] < times[fit_rows[cut]]]
        assert np.array_equal(sel_rows, before) and len(before) < cut
        assert not set(sel_rows.tolist()) & set(fit_rows[cut:].tolist())


def test_cv_folds_are_purged(small_run):
    "Inside CV no training row's label interval overlaps the test fold's span [first test bar, last test label end]."
    table, calls = small_run.table, small_run.calls
    times, ends = table.features.timestamp.to_numpy(), table.label_end_time.to_numpy()
    cv_fits, cv_tests = calls.model_set[:SMALL.n_splits], calls.predict[:SMALL.n_splits]
    for train_rows, test_rows in zip(cv_fits, cv_tests):
        assert not set(train_rows.tolist()) & set(test_rows.tolist())
        lo, hi = times[test_rows].min(), ends[test_rows].max()
        overlapping = (ends[train_rows] >= lo) & (times[train_rows] <= hi)
        assert not overlapping.any(), train_rows[overlapping][:5]
    assert np.array_equal(calls.predict[SMALL.n_splits], holdout_reference(table, SMALL.holdout_frac)[1])   # then the holdout


def test_the_after_calibration_maps_are_purged_against_their_fold(small_run):
    """The report's 'after calibration' figures score each CV fold with a map fitted on the other folds' out-of-fold rows
    minus those whose labels overlap the fold's span [first bar, last label end], as CV purges training rows."""
    table, calls = small_run.table, small_run.calls
    times, ends = table.features.timestamp.to_numpy(), table.label_end_time.to_numpy()
    folds = calls.predict[:SMALL.n_splits]
    in_sample = np.sort(np.concatenate(folds))
    expected, n_overlapping = [], 0
    for test_rows in folds:
        others = np.setdiff1d(in_sample, test_rows)
        lo, hi = times[test_rows].min(), ends[test_rows].max()
        overlapping = int(((ends[others] >= lo) & (times[others] <= hi)).sum())
        n_overlapping += overlapping
        expected.append(len(others) - overlapping)
    assert n_overlapping > 0   # labels overlap at fold edges in this data, so an unpurged map would be caught
    assert calls.calibration[-SMALL.n_splits:] == expected, (calls.calibration, expected)
    assert calls.calibration[:len(train_mod.CALIBRATION_METHODS) * SMALL.n_splits] == expected * len(train_mod.CALIBRATION_METHODS)   # every candidate's


def test_cv_embargo_covers_the_features_memory(small_run):
    """After each test fold at least `min_embargo_bars` (FEATURE_MEMORY_BARS, the features' memory) rows past the purge
    stay out of training, however small `embargo_frac` makes the embargo: those rows' features read the fold's bars."""
    table, calls = small_run.table, small_run.calls
    embargo = FEATURE_MEMORY_BARS
    assert SMALL.min_embargo_bars == embargo == 461 and SMALL.embargo_frac * len(calls.model_set[0]) < embargo
    times, ends = table.features.timestamp.to_numpy(), table.label_end_time.to_numpy()
    in_sample = np.sort(np.concatenate(calls.predict[:SMALL.n_splits]))     # the CV folds' test rows cover it
    checked = 0
    for train_rows, test_rows in zip(calls.model_set[:SMALL.n_splits], calls.predict[:SMALL.n_splits]):
        after = in_sample[times[in_sample] > ends[test_rows].max()]         # rows starting after the fold's last label
        if len(after) <= embargo: continue                                  # the last fold: nothing after it to embargo
        assert not set(after[:embargo].tolist()) & set(train_rows.tolist())
        assert set(after[embargo:].tolist()) <= set(train_rows.tolist())    # and no more than that
        checked += 1
    assert checked >= 1 and small_run.report["cv"]["min_embargo_bars"] == embargo


def test_too_few_rows_for_the_embargo_is_named(dataset):
    "A fold the embargo leaves without training rows is a ValueError naming the fold, the embargo and the remedy, not an HMM error."
    table = build_training_table(dataset.raw.sort_values("timestamp", kind="mergesort").reset_index(drop=True), SMALL)
    ins, _ = train_mod.holdout_split(table, SMALL)
    with pytest.raises(ValueError, match=r"CV fold 0 keeps 0 training rows after purging and the embargo of at least 461 rows .* "
                                         r"900 in-sample rows are too few for n_splits=2"):
        train_mod.cross_validate(table, ins[:900], dataclasses.replace(SMALL, n_splits=2))


def _moved_past(raw: pd.DataFrame, cfg: TrainConfig, start: pd.Timestamp, end: pd.Timestamp, embargo: int) -> pd.Series:
    """Move every price of the bars in [start, end] up by a drift rising to 2 %, rebuild the training table, and give per
    feature the largest change on the rows more than `embargo` bars after `end` over its largest change after `end`
    (changes below 1e-9 of the feature's standard deviation, float noise, count as none)."""
    table = build_training_table(raw, cfg)
    moved = raw.copy()
    span = ((moved.timestamp >= start) & (moved.timestamp <= end)).to_numpy()
    for c in ("open", "high", "low", "close"): moved.loc[span, c] = moved.loc[span, c].to_numpy() * (1 + 0.02 * np.linspace(0, 1, span.sum()))
    other = build_training_table(moved, cfg)
    after = (table.features.timestamp > end).to_numpy()
    bars_after = np.searchsorted(raw.timestamp.to_numpy(), table.features.timestamp[after].to_numpy()) - int(np.flatnonzero(span)[-1])
    out = {}
    for c in table.feature_columns:
        a, b = table.features[c].to_numpy()[after], other.features[c].to_numpy()[after]
        change = np.where(np.abs(a - b) > 1e-9 * np.nanstd(table.features[c].to_numpy()), np.abs(a - b), 0.0)
        change = np.nan_to_num(change) + (np.isnan(a) != np.isnan(b))
        if change.max() > 0: out[c] = change[bars_after > embargo].max(initial=0.0) / change.max()
    return pd.Series(out)


def test_features_past_the_embargo_no_longer_read_the_test_folds_prices(dataset):
    """A test fold's prices reach later rows through their features (windows, the session VWAP, EMAs): moved by up to 2 %,
    every feature of a row more than the embargo past the fold moves by at most 2 % of its largest move after the fold
    (the EMA of 200 bars keeps 1 % of a bar's weight there). With the old 200-bar embargo `vwap_dist` and
    `ema_200_dist` moved by far more: the review's leak."""
    raw = dataset.raw.sort_values("timestamp", kind="mergesort").reset_index(drop=True)
    table = build_training_table(raw, SMALL)
    ins, _ = train_mod.holdout_split(table, SMALL)
    times, ends = table.features.timestamp.iloc[ins], table.label_end_time.iloc[ins]
    _, test_rows = next(iter(PurgedKFold(SMALL.n_splits, SMALL.embargo_frac, min_embargo_bars=SMALL.min_embargo_bars)
                             .split(np.zeros(len(ins)), label_end_times=ends.reset_index(drop=True), event_times=times.reset_index(drop=True))))
    start, end = times.iloc[test_rows[0]], ends.iloc[test_rows].max()
    ratio = _moved_past(raw, SMALL, start, end, SMALL.min_embargo_bars)
    assert ratio.max() <= 0.02, ratio.sort_values().tail(3).to_dict()
    old = _moved_past(raw, SMALL, start, end, WARMUP_BARS)
    assert old["ema_200_dist"] > 0.1, old.sort_values().tail(3).to_dict()


# --------------------------------------------------------------------------------------------------------------------
# determinism

def test_rerun_in_another_data_dir_is_byte_identical(small_run, tmp_path):
    "Same dataset version and seed, trained in a fresh data dir: same run id and identical bytes in every artefact."
    other = RunConfig(data_dir=str(tmp_path / "data"))
    src = dataset_dir("NSE", small_run.dm["version"], small_run.cfg)
    shutil.copytree(src, dataset_dir("NSE", small_run.dm["version"], other))
    again = train_model("NSE", small_run.dm["version"], cfg=SMALL, run_cfg=other)
    assert again["run_id"] == small_run.manifest["run_id"]
    run_a, run_b = small_run.run_dir, run_dir_of(other, again)
    files_a = sorted(p.relative_to(run_a).as_posix() for p in run_a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(run_b).as_posix() for p in run_b.rglob("*") if p.is_file())
    assert files_a == files_b
    differing = [f for f in files_a if f != "manifest.json" and sha256(run_a / f) != sha256(run_b / f)]
    assert differing == []
    assert again["files"] == small_run.manifest["files"]
    strip = lambda m: {k: v for k, v in m.items() if k != "created_at"}
    assert strip(again) == strip(small_run.manifest)


def test_existing_run_is_reused_without_training(small_run, monkeypatch):
    monkeypatch.setattr(train_mod, "build_training_table", lambda *a, **k: pytest.fail("retrained an existing run"))
    assert train_model("NSE", small_run.dm["version"], cfg=SMALL, run_cfg=small_run.cfg) == small_run.manifest


class _Trains(Exception):
    "Raised instead of training, to show train_model went on to train."


def test_a_run_records_and_is_keyed_on_the_code_that_trained_it(small_run, monkeypatch):
    "The manifest names the training code (sha256 of the modules train imports) and git commit; other code does not reuse the run."
    from oi_ml.datasets import code_sha256, git_commit, import_closure
    man, code = small_run.manifest, train_mod.training_code_sha256()
    assert man["code_sha256"] == code == code_sha256(modules=import_closure(("train",))) and man["git_commit"] == git_commit()
    assert man["run_id"] == train_mod.run_id_for("NSE", small_run.dm, dataclasses.replace(SMALL, target="triple_barrier"), code,
                                                 RunConfig().monitoring.live_rows, RunConfig().monitoring.psi_alert)
    assert train_mod.run_id_for("NSE", small_run.dm, SMALL, code, 2_000) != train_mod.run_id_for("NSE", small_run.dm, SMALL, code, 500)
    assert train_mod.run_id_for("NSE", small_run.dm, SMALL, "0" * 64) != train_mod.run_id_for("NSE", small_run.dm, SMALL, "1" * 64)
    monkeypatch.setattr(train_mod, "training_code_sha256", lambda: "0" * 64)   # the same data and config, other code
    monkeypatch.setattr(train_mod, "build_training_table", lambda *a, **k: (_ for _ in ()).throw(_Trains()))
    with pytest.raises(_Trains):
        train_model("NSE", small_run.dm["version"], cfg=SMALL, run_cfg=small_run.cfg)


def test_a_run_calibrated_at_another_psi_alert_is_not_reused(small_run, monkeypatch):
    """The drift family in the manifest is calibrated at RunConfig.monitoring.psi_alert, which the run id left out: a
    retrain after changing psi_alert reused the run calibrated at the old level (the monitor then refused its family)."""
    other = dataclasses.replace(small_run.cfg, monitoring=dataclasses.replace(small_run.cfg.monitoring, psi_alert=0.4))
    monkeypatch.setattr(train_mod, "build_training_table", lambda *a, **k: (_ for _ in ()).throw(_Trains()))
    with pytest.raises(_Trains):   # trains afresh instead of returning the run calibrated at 0.25
        train_model("NSE", small_run.dm["version"], cfg=SMALL, run_cfg=other)
    code, tcfg = train_mod.training_code_sha256(), dataclasses.replace(SMALL, target="triple_barrier")
    assert train_mod.run_id_for("NSE", small_run.dm, tcfg, code, 300, 0.4) != train_mod.run_id_for("NSE", small_run.dm, tcfg, code, 300, 0.25)


# --------------------------------------------------------------------------------------------------------------------
# safe artefacts

def test_no_pickles_and_manifest_lists_every_file(small_run):
    run = small_run.run_dir
    files = {p.relative_to(run).as_posix(): p for p in run.rglob("*") if p.is_file()}
    assert set(files) - {"manifest.json"} == set(small_run.manifest["files"])
    for rel, path in files.items():
        data = path.read_bytes()
        assert not rel.endswith(PICKLE_SUFFIXES) and not data.startswith(b"\x80"), rel   # pickle protocol >= 2 header
        text = data.decode("utf-8")                                                      # every artefact is text
        if rel.endswith(".json"): json.loads(text)
        elif rel.endswith(".lgb.txt"): assert text.startswith("tree\n"), rel
        else: pytest.fail(f"unexpected artefact {rel}")
        if rel != "manifest.json": assert sha256(path) == small_run.manifest["files"][rel], rel


def copy_run(small_run, tmp_path) -> Path:
    dst = tmp_path / small_run.run_dir.name
    shutil.copytree(small_run.run_dir, dst)
    return dst


def test_tampered_model_file_is_refused(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    assert load_bundle(run).manifest == small_run.manifest                       # the copy itself loads
    model = run / "models" / "pooled.lgb.txt"
    data = bytearray(model.read_bytes()); pos = len(data) // 2
    data[pos] = ord("7") if data[pos] != ord("7") else ord("3")                  # one changed digit
    model.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"pooled\.lgb\.txt: sha256"):
        load_bundle(run)


def test_truncated_model_file_with_a_matching_manifest_is_refused_not_crashed(small_run, tmp_path):
    "A disk that fills while saving leaves a short file whose hash the manifest records; LightGBM segfaulted on it."
    run = copy_run(small_run, tmp_path)
    model = run / "models" / "pooled.lgb.txt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["models/pooled.lgb.txt"] = sha256(model)                 # the hash matches the short file
    (run / "manifest.json").write_text(json.dumps(manifest))
    code = f"from oi_ml.train import load_bundle\nload_bundle({str(run)!r})"   # a child process: a crash must not kill pytest
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 1, (child.returncode, child.stderr[-2000:])     # a Python error, not a signal
    assert "ModelIntegrityError" in child.stderr and "pooled.lgb.txt: incomplete LightGBM model file" in child.stderr


def test_truncated_xgboost_model_is_named(tmp_path):
    import xgboost as xgb
    rng = np.random.default_rng(0)
    path = tmp_path / "pooled.xgb.json"
    xgb.train(dict(objective="binary:logistic", nthread=1), xgb.DMatrix(rng.normal(size=(80, 3)), rng.integers(0, 2, 80)), 3).save_model(str(path))
    assert isinstance(train_mod.load_booster(path), xgb.Booster)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelIntegrityError, match=r"pooled\.xgb\.json: unreadable XGBoost model"):
        train_mod.load_booster(path)


@pytest.mark.parametrize("rel", ["models/pooled.lgb.txt", "regime_hmm.json", "calibration.json"])
def test_missing_artefact_is_refused(small_run, tmp_path, rel):
    run = copy_run(small_run, tmp_path)
    (run / rel).unlink()
    with pytest.raises(ModelIntegrityError, match=rf"{Path(rel).name}: listed in the manifest but missing"):
        verify_run(run)


def test_tampered_calibration_is_refused(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    (run / "calibration.json").write_text((run / "calibration.json").read_text() + " ")   # whatever the calibration: changed bytes
    with pytest.raises(ModelIntegrityError, match=r"calibration\.json: sha256"):
        load_bundle(run)


def test_unlisted_model_file_is_refused(small_run, tmp_path):
    import xgboost as xgb
    run = copy_run(small_run, tmp_path)
    n_inputs = len(json.loads((run / "model_features.json").read_text())["selected"])
    rng = np.random.default_rng(0)
    intruder = xgb.train(dict(objective="multi:softprob", num_class=3, nthread=1),
                         xgb.DMatrix(rng.normal(size=(60, n_inputs)), rng.integers(0, 3, 60)), 2)
    intruder.save_model(str(run / "models" / "pooled.xgb.json"))
    try:
        bundle = load_bundle(run)
    except ModelIntegrityError:
        return
    assert not isinstance(bundle.model_set.boosters["pooled"], xgb.Booster), "unverified file became the pooled model"
    pytest.fail("load_bundle accepted a model file that is not listed in the manifest")


# --------------------------------------------------------------------------------------------------------------------
# one scoring path

@pytest.fixture(scope="module")
def scored(small_run):
    bundle = load_bundle(small_run.run_dir)
    return bundle, score_frame(bundle, small_run.raw)


def test_score_frame_rows_and_probabilities(small_run, scored):
    _, scores = scored
    raw = small_run.raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    assert len(scores) == len(raw) and scores.timestamp.equals(raw.timestamp)
    probs = scores[["prob_SELL", "prob_HOLD", "prob_BUY"]].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all()
    assert np.abs(probs.sum(axis=1) - 1).max() < 1e-12
    chosen = probs.argmax(axis=1)
    assert np.array_equal(scores.signal.to_numpy(), np.array([-1, 0, 1])[chosen])
    assert np.array_equal(scores.confidence.to_numpy(), probs.max(axis=1))
    assert (scores.model_version == small_run.manifest["run_id"]).all()
    assert set(scores.regime.unique()) <= set(range(SMALL.n_regimes))


def holdout_scores(small_run, scores) -> tuple[np.ndarray, np.ndarray]:
    "score_frame probabilities and true classes of the holdout rows."
    table = small_run.table
    _, hold, _ = holdout_reference(table, SMALL.holdout_frac)
    by_time = scores.set_index("timestamp")
    probs = by_time.loc[table.features.timestamp.iloc[hold].to_numpy(), ["prob_SELL", "prob_HOLD", "prob_BUY"]].to_numpy()
    return probs, table.y[hold]


def test_score_frame_reproduces_the_reported_holdout(small_run, scored):
    "Accuracy and directional AUC recomputed from score_frame on the dataset equal the report's calibrated holdout."
    probs, y = holdout_scores(small_run, scored[1])
    reported = small_run.report["holdout"]["calibrated"]
    assert round(float(np.mean(probs.argmax(axis=1) == y)), 10) == reported["accuracy"]
    trades = (y == 0) | (y == 2)
    auc = mann_whitney_auc(y[trades] == 2, probs[trades, 2] - probs[trades, 0])
    assert round(auc, 10) == reported["directional_auc"]
    assert reported["n"] == len(y)


def test_training_scores_the_holdout_as_score_frame_does(small_run, scored):
    """The trainer's holdout scores (`holdout_scores`: regimes from the filter over every bar of the table's stream) equal
    score_frame's (the backtests' path, which filters every bar of the dataset) at the holdout rows."""
    bundle, scores = scored
    table = small_run.table
    _, hold, _ = holdout_reference(table, SMALL.holdout_frac)
    trained = train_mod.holdout_scores(table, hold, bundle.model_set, bundle.calibration)
    served = scores.set_index("timestamp").loc[table.features.timestamp.iloc[hold].to_numpy(), "confidence"].to_numpy()
    assert np.abs(trained - served).max() < 1e-12


def test_score_frame_on_a_prefix_is_causal(small_run, scored):
    "Scores of the first rows do not change when later rows are added (regime filter and features are causal)."
    bundle, scores = scored
    cut = len(small_run.raw) // 2
    part = score_frame(bundle, small_run.raw.iloc[:cut])
    pd.testing.assert_frame_equal(part, scores.iloc[:cut].reset_index(drop=True), check_exact=True)


def test_auc_and_noise_helpers(small_run, scored):
    "The test's own AUC helper agrees with sklearn, and the circular-shift noise estimate is usable on small data."
    from sklearn.metrics import roc_auc_score
    probs, y = holdout_scores(small_run, scored[1])
    trades = (y == 0) | (y == 2)
    score = probs[trades, 2] - probs[trades, 0]
    assert mann_whitney_auc(y[trades] == 2, score) == pytest.approx(roc_auc_score(y[trades] == 2, score), abs=1e-12)
    assert 0.0 < circular_shift_auc_sd(y, probs, min_shift=30, n_shifts=50) < 0.2


def test_calibrated_probabilities_are_never_zero(small_run, scored):
    probs, y = holdout_scores(small_run, scored[1])
    assert probs[np.arange(len(y)), y].min() > 0


# --------------------------------------------------------------------------------------------------------------------
# the other heads

def test_realized_vol_head_reports_baselines(dataset):
    man = train_model("NSE", dataset.dm["version"], target="realized_vol", cfg=SMALL, run_cfg=dataset.cfg)
    run = run_dir_of(dataset.cfg, man)
    hold = read_report(run)["holdout"]
    for key in ("rmse_ratio_vs_naive", "rmse_ratio_vs_garch"):
        assert np.isfinite(hold[key]) and hold[key] > 0 and man["metrics_summary"][key] == hold[key]
    assert hold["rmse_ratio_vs_naive"] == pytest.approx(hold["model"]["rmse"] / hold["naive"]["rmse"], rel=1e-6)   # report values are rounded
    # the naive forecast by hand: realised volatility sqrt(sum r^2) of the last N one-bar returns
    cfg = dataclasses.replace(SMALL, target="realized_vol")
    table = build_training_table(dataset.raw, cfg)
    _, hold_rows, _ = holdout_reference(table, cfg.holdout_frac)
    n = cfg.labels.realized_vol_bars
    r = table.features.ret_1.to_numpy()
    naive = np.array([np.sqrt(np.sum(r[i - n + 1:i + 1] ** 2)) if i >= n - 1 else np.nan for i in hold_rows])
    y = table.y[hold_rows]; ok = np.isfinite(naive)
    assert hold["naive"]["rmse"] == pytest.approx(float(np.sqrt(np.mean((naive[ok] - y[ok]) ** 2))), abs=1e-10)
    assert read_report(run)["classes"] == [] and man["classes"] == []


def test_realized_vol_head_can_be_scored(dataset):
    man = train_model("NSE", dataset.dm["version"], target="realized_vol", cfg=SMALL, run_cfg=dataset.cfg)
    scores = score_frame(load_bundle(run_dir_of(dataset.cfg, man)), dataset.raw)
    assert len(scores) == len(dataset.raw)


def test_range_breach_head_is_binary(dataset):
    cfg = dataclasses.replace(SMALL, labels=LabelConfig(horizon_bars=15, profit_mult=1.5, stop_mult=1.5, range_width=0.0015))
    man = train_model("NSE", dataset.dm["version"], target="range_breach", cfg=cfg, run_cfg=dataset.cfg)
    run = run_dir_of(dataset.cfg, man)
    rep = read_report(run)
    assert rep["classes"] == ["INSIDE", "BREACH"] and all(v > 50 for v in rep["class_balance"].values()), rep["class_balance"]
    assert "objective=binary" in (run / "models" / "pooled.lgb.txt").read_text()
    assert rep["holdout"]["calibrated"]["directional_auc"] is None and np.isfinite(rep["holdout"]["calibrated"]["auc"])
    scores = score_frame(load_bundle(run), dataset.raw)
    assert list(scores.columns[4:6]) == ["prob_INSIDE", "prob_BREACH"] and (scores.signal == 0).all()
    assert np.abs(scores[["prob_INSIDE", "prob_BREACH"]].sum(axis=1) - 1).max() < 1e-12


def test_direction_head_uses_xgboost(dataset):
    man = train_model("NSE", dataset.dm["version"], target="direction", cfg=SMALL, run_cfg=dataset.cfg)
    run = run_dir_of(dataset.cfg, man)
    models = sorted(p.name for p in (run / "models").iterdir())
    assert models and all(m.endswith(".xgb.json") for m in models) and "pooled.xgb.json" in models
    for m in models: json.loads((run / "models" / m).read_text())                   # native JSON, not a pickle
    rep = read_report(run)
    assert man["family"] == "xgboost" and rep["classes"] == ["DOWN", "FLAT", "UP"]
    scores = score_frame(load_bundle(run), dataset.raw)
    columns = ["prob_DOWN", "prob_FLAT", "prob_UP"]
    assert np.abs(scores[columns].sum(axis=1) - 1).max() < 1e-12
    # the same scoring path as the report: holdout accuracy from score_frame equals the reported one
    table = build_training_table(dataset.raw, dataclasses.replace(SMALL, target="direction"))
    _, hold, _ = holdout_reference(table, SMALL.holdout_frac)
    probs = scores.set_index("timestamp").loc[table.features.timestamp.iloc[hold].to_numpy(), columns].to_numpy()
    assert round(float(np.mean(probs.argmax(axis=1) == table.y[hold])), 10) == rep["holdout"]["calibrated"]["accuracy"]


# --------------------------------------------------------------------------------------------------------------------
# an OHLCV-only dataset

def test_ohlcv_only_dataset_trains_on_technical_features(dataset, tmp_path):
    "A CSV of 1-minute bars imported into an empty warehouse trains with the technical and time features only."
    bars = dataset.raw[["timestamp", "open", "high", "low", "close", "volume"]].copy()
    bars["timestamp"] = bars.timestamp.map(lambda t: t.isoformat())
    bars.to_csv(tmp_path / "acme.csv", index=False)
    cfg = RunConfig(data_dir=str(tmp_path / "data"))
    with connect(cfg) as con:
        import_ohlcv(con, tmp_path / "acme.csv", "ACME", exchange="NSE", run_cfg=cfg)
        raw = load_historical_data_for_ml(con, "NSE")
        dm = export_training_window(con, "NSE", run_cfg=cfg)
    assert set(raw.symbol) == {"ACME"} and ("pcr_oi" not in raw or raw.pcr_oi.isna().all())
    man = train_model("NSE", dm["version"], cfg=SMALL, run_cfg=cfg)
    technical = [c for c in REQUIRED_FEATURE_COLUMNS if c not in OPTION_FEATURE_DEFAULTS]
    assert man["model_features"] == technical == supported_feature_columns(raw)
    rep = read_report(run_dir_of(cfg, man))
    assert not set(rep["selected_features"]) & set(OPTION_FEATURE_DEFAULTS)
    assert rep["regimes"]["features"] == ["ret_1", "ret_std_20"]
    assert set(man["feature_distribution"]) == set(technical) | {"regime_prob_0", "regime_prob_1", "regime_prob_2"}   # + the HMM's probabilities
    # its training data had no chain, VIX or flows, so rows of plain OHLCV bars score (no source column is required)
    assert man["source_columns"] == []
    plain = raw[["timestamp", "exchange", "symbol", "open", "high", "low", "close", "volume"]]
    pd.testing.assert_frame_equal(score_frame(load_bundle(run_dir_of(cfg, man)), plain), score_frame(load_bundle(run_dir_of(cfg, man)), raw))


# --------------------------------------------------------------------------------------------------------------------
# signal vs null (slow): the planted signal is found, the null gives AUC within noise of 0.5

def circular_shift_auc_sd(y: np.ndarray, probs: np.ndarray, min_shift: int = 60, n_shifts: int = 200) -> float:
    """Standard deviation of the directional AUC when scores are circularly shifted against labels (a null that keeps
    the autocorrelation of both series: overlapping 15-bar labels make the iid standard error far too small)."""
    score = probs[:, 2] - probs[:, 0]
    shifts = np.linspace(min_shift, len(y) - min_shift, n_shifts).astype(int)
    trades = (y == 0) | (y == 2)
    aucs = [mann_whitney_auc(y[trades] == 2, np.roll(score, s)[trades]) for s in shifts]
    return float(np.std(aucs))


def signal_outcome(tmp_path_factory, signal_strength: float) -> dict:
    root = tmp_path_factory.mktemp(f"signal_{signal_strength:g}")
    cfg, dm = simulated_dataset(root, SIGNAL_DAYS, signal_strength=signal_strength)
    man = train_model("NSE", dm["version"], cfg=SIGNAL_CFG, run_cfg=cfg)
    run = run_dir_of(cfg, man)
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    table = build_training_table(raw, SIGNAL_CFG)
    _, hold, _ = holdout_reference(table, SIGNAL_CFG.holdout_frac)
    scores = score_frame(load_bundle(run), raw).set_index("timestamp")
    probs = scores.loc[table.features.timestamp.iloc[hold].to_numpy(), ["prob_SELL", "prob_HOLD", "prob_BUY"]].to_numpy()
    y = table.y[hold]; trades = (y == 0) | (y == 2)
    return dict(report=read_report(run), probs=probs, y=y,
                auc=mann_whitney_auc(y[trades] == 2, probs[trades, 2] - probs[trades, 0]),
                noise_sd=circular_shift_auc_sd(y, probs))


@pytest.fixture(scope="module")
def with_signal(tmp_path_factory):
    return signal_outcome(tmp_path_factory, 1.0)


@pytest.fixture(scope="module")
def null_signal(tmp_path_factory):
    return signal_outcome(tmp_path_factory, 0.0)


@pytest.mark.slow
def test_planted_signal_beats_noise_and_majority(with_signal):
    out, hold = with_signal, with_signal["report"]["holdout"]
    assert round(out["auc"], 10) == hold["calibrated"]["directional_auc"]          # the same scoring path
    bound = NOISE_SIGMAS * out["noise_sd"]
    assert 0.005 < out["noise_sd"] < 0.05, out["noise_sd"]                          # a sane noise estimate
    assert out["auc"] - 0.5 > bound, (out["auc"], bound)
    assert hold["margin_over_majority"]["accuracy"] > 0.03
    assert hold["raw"]["log_loss"] < hold["majority_baseline"]["log_loss"]
    assert hold["margin_over_majority"]["log_loss"] > 0                             # calibrated log-loss beats the majority


@pytest.mark.slow
def test_null_signal_auc_within_noise(null_signal):
    out, hold = null_signal, null_signal["report"]["holdout"]
    assert round(out["auc"], 10) == hold["calibrated"]["directional_auc"]
    assert 0.005 < out["noise_sd"] < 0.05, out["noise_sd"]
    assert abs(out["auc"] - 0.5) < NOISE_SIGMAS * out["noise_sd"], (out["auc"], out["noise_sd"])
    assert abs(hold["raw"]["directional_auc"] - 0.5) < NOISE_SIGMAS * out["noise_sd"]


# --------------------------------------------------------------------------------------------------------------------
# publishing over an existing run, and files load_bundle reads must be verified

def _old_run(tmp_path: Path) -> Path:
    run = tmp_path / "models" / "NSE" / "run-x"
    (run / "models").mkdir(parents=True)
    (run / "models" / "pooled.lgb.txt").write_text("old model")
    (run / "manifest.json").write_text('{"files": {}}')
    return run


def test_publish_over_an_existing_run_keeps_it_when_the_rename_fails(tmp_path, monkeypatch):
    run = _old_run(tmp_path)
    before = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    staged, real_replace = [], train_mod.os.replace

    def write(staging):
        staged.append(Path(staging)); (staging / "new.txt").write_text("new"); return {"files": {}}

    def failing_replace(src, dst):                      # the rename of the new run into place fails
        if staged and Path(src) == staged[0]: raise OSError("injected: rename failed")
        return real_replace(src, dst)
    monkeypatch.setattr(train_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        train_mod.publish_run(run, write)
    monkeypatch.undo()
    after = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()} if run.exists() else {}
    assert after == before                                                     # the old run is intact
    assert sorted(p.name for p in run.parent.iterdir()) == ["run-x"]           # no staging or aside folder left


def test_a_run_left_aside_by_an_interrupted_publish_is_named(tmp_path):
    "A kill between swap_into_place's two renames leaves the old run as `<staging>.old`; loading it says where it is."
    run = _old_run(tmp_path)
    aside = run.with_name(".run-x.k3j9x2.old")                # the staging folder's unique name + .old
    run.rename(aside)                                          # the state after the first rename
    with pytest.raises(FileNotFoundError, match=re.escape(f"{aside}: rename that folder back to run-x")):
        train_mod.verify_run(run)
    aside.rename(run)
    assert train_mod.verify_run(run) == {"files": {}}


def test_publish_over_an_existing_run_replaces_it_whole(tmp_path):
    run = _old_run(tmp_path)
    train_mod.publish_run(run, lambda staging: (staging / "new.txt").write_text("new") and {"files": {"new.txt": "x"}})
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == ["manifest.json", "new.txt"]
    assert json.loads((run / "manifest.json").read_text()) == {"files": {"new.txt": "x"}}
    assert sorted(p.name for p in run.parent.iterdir()) == ["run-x"]


def _write_nested(staging: Path) -> dict:
    (staging / "models").mkdir(); (staging / "models" / "pooled.lgb.txt").write_text("new model")
    (staging / "report.json").write_text("{}")
    return {"files": {}}


def test_publish_flushes_every_file_and_folder_before_the_rename_and_the_parent_after(tmp_path, monkeypatch):
    """A rename can reach the disk before the files it publishes, so a power cut could leave a run of truncated files:
    every file and folder of the staging tree is fsynced before the rename, and the parent folder after it."""
    run = tmp_path / "models" / "NSE" / "run-x"
    events = record_fsync_events(monkeypatch)
    train_mod.publish_run(run, _write_nested)
    monkeypatch.undo()
    (rename,) = [e for e in events if e[0] == "rename"]
    staging, at = rename[1], events.index(rename)
    assert rename[2] == run and staging.parent == run.parent
    written = {staging / p.relative_to(run) for p in run.rglob("*")}
    assert {p.relative_to(staging).as_posix() for p in written} == {"models", "models/pooled.lgb.txt", "report.json", "manifest.json"}
    assert written | {staging} <= {e[1] for e in events[:at] if e[0] == "fsync"}
    assert ("fsync", run.parent) in events[at + 1:]


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("flushed", ["file", "staging folder", "parent folder"])
def test_a_failed_flush_publishes_no_run(tmp_path, monkeypatch, flushed, existing):
    """A flush that fails (EIO) means the run may not be on disk: publishing fails, an existing run stays as it was, and
    no staging or aside folder is left; a retry publishes."""
    run = _old_run(tmp_path) if existing else tmp_path / "models" / "NSE" / "run-x"
    before = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    staged = lambda p: p.parent == run.parent and p.name.startswith(".run-x.") and not p.name.endswith(".old")
    fail = {"file": lambda p: p.name == "pooled.lgb.txt" and staged(p.parent.parent),
            "staging folder": staged, "parent folder": lambda p: p == run.parent}[flushed]
    events = record_fsync_events(monkeypatch, fail)
    with pytest.raises(OSError, match="simulated I/O error"):
        train_mod.publish_run(run, _write_nested)
    monkeypatch.undo()
    assert any(e[0] == "fsync" and fail(e[1]) for e in events)
    after = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before and run.exists() == existing                          # no run published, the old one intact
    assert sorted(p.name for p in run.parent.iterdir()) == (["run-x"] if existing else [])
    train_mod.publish_run(run, _write_nested)
    assert (run / "models" / "pooled.lgb.txt").read_text() == "new model" and sorted(p.name for p in run.parent.iterdir()) == ["run-x"]


def test_a_failed_flush_whose_undo_fails_too_keeps_both_runs_and_says_where(tmp_path, monkeypatch):
    """The parent folder's flush fails and renaming the new run back fails too: the error names the target, the new run
    stays in place whole and verifies, and the run it replaced is kept beside it in the `.old` folder (nothing lost)."""
    run = _old_run(tmp_path)
    old_files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    record_fsync_events(monkeypatch, lambda p: p == run.parent)
    real_replace = train_mod.os.replace

    def undo_fails(src, dst):                                   # renaming the published run back to its staging name fails
        if Path(src) == run and Path(dst).name.startswith(".run-x.") and not Path(dst).name.endswith(".old"):
            raise OSError("injected: undo rename failed")
        return real_replace(src, dst)
    monkeypatch.setattr(train_mod.os, "replace", undo_fails)
    with pytest.raises(OSError, match=r"run-x: flushing its parent folder failed .*simulated I/O error.* and so did undoing the rename "
                                      r"\(injected: undo rename failed\): the new folder stays in place; the replaced one is kept in .*\.old"):
        train_mod.publish_run(run, _write_nested)
    monkeypatch.undo()
    assert (run / "models" / "pooled.lgb.txt").read_text() == "new model" and train_mod.verify_run(run) == {"files": {}}
    (aside,) = [p for p in run.parent.iterdir() if p.name.endswith(".old")]
    assert {p.relative_to(aside).as_posix(): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == old_files


@pytest.mark.parametrize("rel, edit", [("calibration.json", lambda d: {"tampered": True}),
                                       ("model_features.json", lambda d: {**d, "rounds": 1}),
                                       ("regime_hmm.json", lambda d: d)])
def test_a_file_load_bundle_reads_must_be_listed_in_the_manifest(small_run, tmp_path, rel, edit):
    run = copy_run(small_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text()); del manifest["files"][rel]
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / rel).write_text(json.dumps(edit(json.loads((run / rel).read_text()))))     # edited, and no longer hash-listed
    with pytest.raises(ModelIntegrityError, match=rf"{rel}: not listed in the manifest"):
        load_bundle(run)


def _rehashed(run: Path, rel: str, text: str) -> Path:
    "Write `text` to the run's `rel` and list its new sha256 in the manifest (a file bad when it was written)."
    (run / rel).write_text(text)
    manifest = json.loads((run / "manifest.json").read_text()); manifest["files"][rel] = sha256(run / rel)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("rel, text, message", [
    ("regime_hmm.json", '{"format": "oi_ml.regimes.Regime', r"regime_hmm\.json: not a readable regime model \(JSONDecodeError"),
    ("regime_hmm.json", "{}", r"regime_hmm\.json: not a readable regime model"),
    ("calibration.json", '{"x": 1}', r"calibration\.json: not a calibration map: expected method 'isotonic'"),
    ("calibration.json", '{"method": "isotonic", "maps": {"0": {"x": [0, 1], "y": [0, 1]}}}', r"calibration\.json: .*the model has 3"),
    ("calibration.json", '{"method": "isotonic", "maps": {"0": {"x": [0, 1], "y": [1, 0]}, "1": {"x": [0], "y": [0]}, '
                         '"2": {"x": [0], "y": [0]}}}', r"calibration\.json: .*class 0: thresholds must not decrease"),
    ("model_features.json", None, r"model_features\.json: 'input_features' must be a list of names"),
    ("model_features.json", ["no_such_feature"], r"model_features\.json: unknown input feature\(s\) \['no_such_feature'\]"),
])
def test_a_corrupt_file_with_a_matching_hash_is_named(small_run, tmp_path, rel, text, message):
    "Hash-listed but malformed at write time: load_bundle names the file instead of a bare JSON/Key error later."
    run = copy_run(small_run, tmp_path)
    if rel == "model_features.json":   # None: the feature list as a string; a list: names put in front of the real ones
        meta = json.loads((run / rel).read_text())
        text = json.dumps({**meta, "input_features": "close" if text is None else text + meta["input_features"]})
    with pytest.raises(ModelIntegrityError, match=message):
        load_bundle(_rehashed(run, rel, text))


@pytest.mark.parametrize("routes, message", [
    ({"0": "regime_9"}, r"model_features\.json: routes to booster\(s\) \['regime_9'\] the run's models/ folder does not hold"),
    ({"a": "pooled"}, r"model_features\.json: 'routes' must map regime ids \(whole numbers\) to booster names"),
    ({"0": 3}, r"model_features\.json: 'routes' must map regime ids \(whole numbers\) to booster names"),
])
def test_a_routing_table_naming_a_missing_booster_or_a_bad_regime_is_named(small_run, tmp_path, routes, message):
    "Hand-edited routes (re-hashed): refused at load naming model_features.json, not a KeyError or int() error at scoring."
    run = copy_run(small_run, tmp_path)
    meta = json.loads((run / "model_features.json").read_text())
    with pytest.raises(ModelIntegrityError, match=message):
        load_bundle(_rehashed(run, "model_features.json", json.dumps({**meta, "routes": routes})))


@pytest.mark.parametrize("old, new, message", [
    (b"\nnum_cat=", b"\nnum_caT=", r"tree \d+ lacks field\(s\) \['num_cat='\]"),              # LightGBM: SIGABRT
    (b"\nleft_child=", b"\nleft_chiLd=", r"tree \d+ lacks field\(s\) \['left_child='\]"),
    (b"\nTree=0\n", b"\nTree=0\n\n", r"tree 1 does not start where tree_sizes says"),           # a byte inserted
    ("last tree", "\n", r"'end of trees' does not follow the \d+ trees"),                           # ... in the last tree
])
def test_a_damaged_lightgbm_file_with_a_matching_hash_is_named_not_a_crash(small_run, tmp_path, old, new, message):
    "Run in a subprocess: on the previous code LightGBM aborted the whole process (rc -6) instead of raising."
    run = copy_run(small_run, tmp_path)
    text = (run / "models/pooled.lgb.txt").read_bytes()
    if old == "last tree":                                  # whatever the number of trees: a newline after the last one's header
        last = len(re.search(rb"\ntree_sizes=([^\n]*)", text).group(1).split()) - 1
        old, new = b"\nTree=%d\n" % last, b"\nTree=%d\n\n" % last
    assert text.count(old) >= 1
    _rehashed(run, "models/pooled.lgb.txt", text.replace(old, new, 2).decode())
    code = f"from oi_ml.train import load_bundle\nload_bundle({str(run)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert re.search(rf"ModelIntegrityError: {re.escape(str(run / 'models/pooled.lgb.txt'))}: damaged LightGBM model file: {message}", done.stderr), done.stderr[-2000:]


@pytest.mark.parametrize("text, message", [('{"run_id": "run-x", "files": {"a', r"manifest\.json: not valid JSON"),
                                           ('{"run_id": "run-x"}', r"manifest\.json: missing key\(s\) 'files'"),
                                           ('{"files": ["a.json"]}', r"manifest\.json: 'files' must map")])
def test_a_corrupt_run_manifest_is_named(tmp_path, text, message):
    run = _old_run(tmp_path)
    (run / "manifest.json").write_text(text)
    for call in (verify_run, load_bundle):
        with pytest.raises(ModelIntegrityError, match=message):
            call(run)


@pytest.mark.parametrize("files, message", [({"../registry.json": "0" * 64}, r"lists a path outside the run: '\.\./registry\.json'"),
                                            ({"/etc/hostname": "0" * 64}, r"lists a path outside the run: '/etc/hostname'"),
                                            ({"calibration.json": {"sha256": "00"}}, r"the sha256 of 'calibration\.json' is not")])
def test_a_manifest_path_outside_the_run_or_a_bad_digest_is_named(small_run, tmp_path, files, message):
    "Review finding: a listed '../' path was hashed and accepted; a digest that is a dict crashed with a TypeError."
    run = copy_run(small_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "files": {**manifest["files"], **files}}))
    with pytest.raises(ModelIntegrityError, match=re.escape(str(run / "manifest.json")) + ": " + message):
        verify_run(run)


def test_scoring_rows_lacking_a_column_a_used_feature_reads_is_refused(small_run):
    """Review finding: a raw column missing from the scoring rows made its features silently take their neutral
    defaults (dropping `pcr_volume` changed 28 % of the signals). The regime HMM reads `vix`, so its column must be there;
    `lot_size` feeds no feature and may be absent."""
    bundle = load_bundle(small_run.run_dir)
    assert small_run.manifest["source_columns"] == informative_sources(small_run.raw)
    with pytest.raises(ValueError, match=re.escape("raw column(s) ['vix'] absent; they feed the model's input(s)")):
        score_frame(bundle, small_run.raw.drop(columns=["vix", "lot_size"]))
    pd.testing.assert_frame_equal(score_frame(bundle, small_run.raw.drop(columns=["lot_size"])), score_frame(bundle, small_run.raw))


def test_cross_fitted_calibration_never_reads_a_folds_own_labels():
    "The report's 'after calibration' figures: changing one fold's labels leaves that fold's calibrated probabilities unchanged."
    from oi_ml.train import cross_fitted_calibration
    rng = np.random.default_rng(3)
    probs, y, fold = rng.dirichlet(np.ones(3), 500), rng.integers(0, 3, 500), np.repeat(np.arange(5), 100)
    base = cross_fitted_calibration(y, probs, fold)
    flipped = y.copy(); flipped[fold == 2] = (flipped[fold == 2] + 1) % 3
    moved = cross_fitted_calibration(flipped, probs, fold)
    assert np.array_equal(base[fold == 2], moved[fold == 2]) and not np.array_equal(base[fold != 2], moved[fold != 2])
    assert np.allclose(base.sum(axis=1), 1)


def test_calibration_is_fitted_as_it_is_saved():
    "The report and the holdout scores use the calibration map exactly as calibration.json stores it (10 decimals)."
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), 2_000); y = rng.integers(0, 3, 2_000)
    calibration = train_mod.fit_calibration(y, probs)
    assert train_mod._round(calibration) == calibration
    assert json.loads(json.dumps(train_mod._round(calibration))) == calibration


# --------------------------------------------------------------------------------------------------------------------
# realistic imported data and degenerate label windows

def test_a_chain_without_vix_trains_and_the_report_names_the_dropped_regime_feature(tmp_path):
    """No importer writes vix_term_structure: a dataset with an option chain but no VIX trains, its regime HMM leaves out
    `vix` (constant at its neutral default on the fit rows) and the training report says so (it crashed the HMM)."""
    from conftest import TINY_TRAIN
    from oi_ml.store import build_ml_features
    cfg = RunConfig(data_dir=str(tmp_path / "data"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=N_DAYS, seed=0, run_cfg=cfg)
        con.execute("DELETE FROM vix_term_structure"); con.execute("DELETE FROM ml_features")
        build_ml_features(con, "NSE", run_cfg=cfg)
        dm = export_training_window(con, "NSE", run_cfg=cfg)
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    assert raw.vix.isna().all() and raw.pcr_oi.notna().all()
    man = train_model("NSE", dm["version"], cfg=TINY_TRAIN, run_cfg=cfg)
    regimes = read_report(run_dir_of(cfg, man))["regimes"]
    assert "vix" not in regimes["features"] and {"ret_1", "ret_std_20", "log_pcr_oi"} <= set(regimes["features"])
    assert "raw column(s) ['vix'] have no value" in regimes["dropped"]["vix"]
    assert load_bundle(run_dir_of(cfg, man)).model_set.regime_model.feature_columns == tuple(regimes["features"])


@pytest.mark.parametrize("target, labels, counts", [
    ("triple_barrier", dict(profit_mult=1000.0, stop_mult=1000.0), r"\{'SELL': 0, 'HOLD': \d+, 'BUY': 0\}"),   # all HOLD
    ("range_breach", dict(range_width=0.5), r"\{'INSIDE': \d+, 'BREACH': 0\}")])                             # never breached
def test_a_single_class_window_is_refused_and_nothing_is_written(dataset, target, labels, counts):
    "Labels of one class would train a 'perfect' run (accuracy 1, log-loss 0): a ValueError naming the class counts instead."
    cfg = dataclasses.replace(SMALL, n_splits=2, min_embargo_bars=200, labels=dataclasses.replace(SMALL.labels, **labels))
    models = Path(dataset.cfg.models_dir) / "NSE"
    before = sorted(p.name for p in models.iterdir()) if models.exists() else []
    with pytest.raises(ValueError, match=r"in-sample rows: its \d+ training rows \(2025-08-.* hold fewer than 2 classes \(" + counts
                       + r"\).* label settings"):
        train_model("NSE", dataset.dm["version"], target, cfg, dataset.cfg)
    assert (sorted(p.name for p in models.iterdir()) if models.exists() else []) == before   # no run, no staging folder


def daily_raw(tmp_path: Path, n_days: int = 420) -> tuple[RunConfig, pd.DataFrame]:
    "A warehouse of `n_days` imported daily NIFTY bars (date-only rows, bar_minutes = 375) and its ml_features rows."
    rng = np.random.default_rng(0)
    close = 21000 * np.exp(np.cumsum(rng.normal(0, 0.01, n_days)))
    open_ = np.r_[close[0], close[:-1]]
    bars = pd.DataFrame({"Date": pd.bdate_range("2023-01-02", periods=n_days).strftime("%Y-%m-%d"), "Open": open_,
                         "High": np.maximum(open_, close) * 1.004, "Low": np.minimum(open_, close) * 0.996, "Close": close,
                         "Volume": 1000.0})
    bars.to_csv(tmp_path / "daily.csv", index=False)
    cfg = RunConfig(data_dir=str(tmp_path / "data"), bar_minutes=375)
    with connect(cfg) as con:
        import_ohlcv(con, tmp_path / "daily.csv", "NIFTY", exchange="NSE", run_cfg=cfg)
        return cfg, load_historical_data_for_ml(con, "NSE")


def test_daily_bars_are_labelled_across_sessions_and_an_unlabelled_target_is_named(tmp_path):
    """Daily bars (bar_minutes = 375, a whole NSE session) have no later bar in their session: labelled inside it, no row
    has a label (train crashed with an IndexError in holdout_split); labelled across sessions, they train."""
    cfg, raw = daily_raw(tmp_path)
    assert raw.timestamp.dt.tz_convert("Asia/Kolkata").dt.date.is_unique   # one bar per session
    with pytest.raises(ValueError, match=r"no row has a label: a label needs 1 later bar\(s\) inside its session .* longest session holds 1 bar"):
        build_training_table(raw, TrainConfig())
    daily = train_mod.train_config_for_bars(TrainConfig(), "NSE", cfg.bar_minutes)
    assert daily.labels.session_segments is False and train_mod.train_config_for_bars(TrainConfig(), "NSE", 1) == TrainConfig()
    table = build_training_table(raw, daily)
    assert len(table.y) > 150 and len(np.unique(table.y)) == 3
    assert (table.label_end_time - table.features.timestamp).max() >= pd.Timedelta(days=15)   # 15 bars = 15 sessions

"""Integration tests of `oi_ml.automl` on a small simulated dataset: every segment x family is in the summary and the
trial count is exact, the segmentation and trial returns agree with independent recomputations (walk-forward dates,
per-day rule returns, Sharpe, forward returns from raw closes), regime HMMs are fitted only on the rows a model is
trained on, pruned trials keep their partial returns, CatBoost is skipped with a warning when absent, and runs resume
from SQLite / journal storage without re-running trials, matching an uninterrupted run."""
import json
import logging
import math
import sys

import numpy as np
import optuna
import pandas as pd
import pytest

from oi_ml.automl import (
    PREDICTIONS_FILE,
    SUMMARY_FILE,
    OrchestratorConfig,
    SearchSpace,
    cv_objective,
    fit_candidate,
    load_automl_run,
    load_trial_returns,
    optuna_storage,
    predict_candidate,
    prepare_segment,
    run_orchestrator,
    trial_return_matrix,
)
from oi_ml.config import RunConfig
from oi_ml.datasets import export_training_window, load_dataset
from oi_ml.metrics import sharpe_ratio
from oi_ml.regimes import RegimeHMMTransformer
from oi_ml.simulate import simulate_market
from oi_ml.store import connect
from oi_ml.train import TrainConfig, build_training_table

N_DAYS, WINDOW, STEP = 12, 7, 2           # 12 sessions -> validation starts on sessions 7 and 9: two segments
SMALL = SearchSpace(rounds=(8, 20), min_data_in_leaf=(30, 120), num_leaves=(4, 12), max_depth=(2, 3))


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory) -> RunConfig:
    "A data directory holding one 12-session simulated NSE dataset (models are written per test under `output`)."
    cfg = RunConfig(data_dir=str(tmp_path_factory.mktemp("automl") / "data"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=N_DAYS, seed=3, run_cfg=cfg)
        export_training_window(con, "NSE", run_cfg=cfg)
    return cfg


@pytest.fixture(scope="module")
def table(run_cfg):
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    return build_training_table(raw, TrainConfig(num_threads=1))


@pytest.fixture(scope="module")
def lgb_run(run_cfg, tmp_path_factory):
    "One small LightGBM run (two segments, two trials each), shared by the read-only checks."
    return run_orchestrator(tiny(tmp_path_factory.mktemp("lgb"), "run"), run_cfg)


def tiny(tmp_path, name: str, **kw) -> OrchestratorConfig:
    "A small, fast configuration writing its run folder to tmp_path/name."
    base = dict(window_days=WINDOW, step_days=STEP, families=("lightgbm",), optuna_trials=2, progress=False, search=SMALL,
                output=str(tmp_path / name))
    return OrchestratorConfig("NSE", **(base | kw))


def strip_durations(summary: dict) -> list:
    "The trials of a summary without wall-clock durations and trial numbers (which failed trials shift)."
    return [{k: v for k, v in t.items() if k not in ("duration_s", "number", "trial_key")} for t in summary["trials"]]


def ist_day(ts) -> str:
    return pd.Timestamp(ts).tz_convert("Asia/Kolkata").date().isoformat()


def test_summary_covers_every_segment_and_family(run_cfg, table, tmp_path):
    config = tiny(tmp_path, "run", families=("lightgbm", "xgboost"), storage=str(tmp_path / "studies.journal"))
    run = run_orchestrator(config, run_cfg)
    s = load_automl_run(run.run_dir).summary                    # hashes verified, same as returned
    assert s == json.loads(json.dumps(run.summary))
    n_seg = s["segmentation"]["n_segments"]
    assert n_seg == 2
    assert {(r["segment"], r["family"]) for r in s["results"]} == {(g, f) for g in range(2) for f in ("lightgbm", "xgboost")}
    assert s["total_trials"] == n_seg * 2 * 2 == len(s["trials"]) == s["trial_counts"]["complete"] + s["trial_counts"]["pruned"]
    assert len({t["trial_key"] for t in s["trials"]}) == len(s["trials"])
    # segmentation: validation on sessions 7-8 and 9-10 (IST dates present in the data), training on the 7 before
    days = sorted({ist_day(t) for t in table.features.timestamp})
    for seg, v0 in zip(s["segmentation"]["segments"], (7, 9)):
        assert (ist_day(seg["valid_start"]), ist_day(seg["valid_end"])) == (days[v0], days[v0 + 1])
        assert ist_day(seg["train_start"]) == days[v0 - WINDOW] and ist_day(seg["train_end"]) == days[v0 - 1]
        train = (table.features.timestamp >= seg["train_start"]) & (table.features.timestamp <= seg["train_end"])
        assert seg["n_train"] + seg["n_purged"] == int(((table.features.timestamp >= seg["train_start"])
                                                         & (table.features.timestamp < seg["valid_start"])).sum())
        assert (table.label_end_time[train.to_numpy()] < pd.Timestamp(seg["valid_start"])).all()
    for r in s["results"]:
        assert r["validation"]["n"] == r["n_valid"] == s["segmentation"]["segments"][r["segment"]]["n_valid"]
        assert r["n_train"] == s["segmentation"]["segments"][r["segment"]]["n_train"]
        assert set(r["best_params"]) >= {"learning_rate", "rounds", "min_data_in_leaf"}
        assert ("num_leaves" in r["best_params"]) == (r["family"] == "lightgbm")
        assert r["best_cv_log_loss"] == min(t["value"] for t in s["trials"] if (t["segment"], t["family"]) == (r["segment"], r["family"])
                                            and t["state"] == "COMPLETE")
    assert set(s["best_per_family"]) == {"lightgbm", "xgboost"} and s["best_family"] in s["best_per_family"]


def test_trial_returns_and_sharpe(lgb_run, table):
    run = lgb_run
    s, returns = run.summary, load_trial_returns(run.run_dir)
    for seg in s["segmentation"]["segments"]:
        matrix = trial_return_matrix(returns, segment=seg["segment"])
        keys = sorted(t["trial_key"] for t in s["trials"] if t["segment"] == seg["segment"])
        assert sorted(matrix.columns) == keys                         # one column per trial of the segment
        train_days = sorted({ist_day(t) for t in table.features.timestamp
                             if pd.Timestamp(seg["train_start"]) <= t <= pd.Timestamp(seg["train_end"])})
        assert [d.date().isoformat() for d in matrix.index] == train_days   # out-of-fold: every training day
        assert not matrix.isna().any().any()
    for t in s["trials"]:
        r = returns[returns.trial_key == t["trial_key"]].sort_values("day")["return"].to_numpy()
        assert t["n_days"] == len(r) and math.isclose(t["sharpe"], sharpe_ratio(r), rel_tol=1e-8)


def test_segments_table_shows_validation_start_in_ist(lgb_run):
    "The pack's AutoML segments table gives each validation start on the IST clock the rest of the pack uses, not UTC ISO."
    from oi_ml.automl import automl_tables
    table = automl_tables(lgb_run.summary)["segments"]
    starts = {s["segment"]: s["valid_start"] for s in lgb_run.summary["segmentation"]["segments"]}
    assert "valid_start" not in table.columns
    expected = [pd.Timestamp(starts[k]).tz_convert("Asia/Kolkata").strftime("%Y-%m-%d %H:%M") for k in table.segment]
    assert table["valid_start (IST)"].tolist() == expected and not table["valid_start (IST)"].str.contains(r"\+00:00").any()


def test_validation_predictions_match_reference_rule(lgb_run, run_cfg):
    run = lgb_run
    preds = pd.read_parquet(run.run_dir / PREDICTIONS_FILE)
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    # forward 15-bar return as the backtest fills it: in at the next bar's open, out at the open 15 bars later, inside
    # the IST session, by an explicit loop over raw opens
    opens = raw.set_index("timestamp").open
    sessions = {d: g for d, g in opens.groupby(opens.index.tz_convert("Asia/Kolkata").date)}
    session_pos = [sessions[ts.tz_convert("Asia/Kolkata").date()].index.get_loc(ts) for ts in preds.timestamp]
    session_len = [len(sessions[ts.tz_convert("Asia/Kolkata").date()]) for ts in preds.timestamp]
    last_entry = [i for i, (p, n) in enumerate(zip(session_pos, session_len)) if p + 16 == n]   # would exit past the close
    assert last_entry
    for i in sorted(set(range(0, len(preds), 97)) | set(last_entry[:5])):
        ts, fwd, pos = preds.timestamp.iloc[i], preds.fwd_return.iloc[i], session_pos[i]
        day = sessions[ts.tz_convert("Asia/Kolkata").date()]
        expected = day.iloc[pos + 16] / day.iloc[pos + 1] - 1 if pos + 16 < len(day) else np.nan
        assert (np.isnan(fwd) and np.isnan(expected)) or math.isclose(fwd, expected, rel_tol=1e-12)
    assert np.allclose(preds.score, preds.prob_BUY - preds.prob_SELL)
    for r in run.summary["results"]:
        p = preds[(preds.segment == r["segment"]) & (preds.family == r["family"])]
        daily = {}
        for ts, score, fwd in zip(p.timestamp, p.score, p.fwd_return):
            pos = 0.0 if score == 0 or np.isnan(fwd) else math.copysign(1.0, score)
            daily[ist_day(ts)] = daily.get(ist_day(ts), 0.0) + pos * (0.0 if np.isnan(fwd) else fwd) / 15
        values = np.array([daily[d] for d in sorted(daily)])
        assert math.isclose(r["validation_rule"]["total_return"], values.sum(), rel_tol=0, abs_tol=1e-9)   # summary floats: 10 decimals
        assert math.isclose(r["validation_rule"]["sharpe"], sharpe_ratio(values), rel_tol=1e-8)
        assert math.isclose(r["validation"]["accuracy"], float((p[["prob_SELL", "prob_HOLD", "prob_BUY"]].to_numpy().argmax(1) == p.label).mean()))


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_a_trial_fit_does_not_depend_on_the_weights_scale(family):
    "All weights times a constant give the same model: a fit only sees its own rows' weights, rescaled to mean 1."
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3)); y = (X[:, 0] + rng.normal(size=600) > 0).astype(int); w = rng.uniform(0.2, 1.0, 600)
    params = {"rounds": 30, "learning_rate": 0.1, "num_leaves": 7, "max_depth": 3, "min_data_in_leaf": 20,
              "feature_fraction": 1.0, "bagging_fraction": 1.0, "lambda_l2": 1.0}
    cfg = TrainConfig(min_data_in_leaf=20)
    fits = [predict_candidate(fit_candidate(family, params, cfg, 2, X, y, w * c), X) for c in (1.0, 0.37)]
    np.testing.assert_allclose(fits[0], fits[1], rtol=0, atol=1e-12)


def test_regime_hmms_fit_only_on_training_rows(lgb_run, table, monkeypatch):
    from oi_ml.cv import walk_forward_segments
    windows = walk_forward_segments(table.features.timestamp, WINDOW, STEP, label_end_times=table.label_end_time)
    fitted_on, real_fit = [], RegimeHMMTransformer.fit
    monkeypatch.setattr(RegimeHMMTransformer, "fit", lambda self, frame: (fitted_on.append(frame.index.to_numpy()), real_fit(self, frame))[1])
    base = table.features[table.feature_columns].to_numpy("float64")
    for window in windows:
        fitted_on.clear()
        data = prepare_segment(table, base, window, TrainConfig(num_threads=1), 3)
        assert len(fitted_on) == 4                                     # one HMM per fold, one on the whole slice
        for rows, fold in zip(fitted_on, data.folds):
            assert np.array_equal(rows, fold.fit_rows) and not np.isin(fold.test_rows, rows).any()
            assert fold.hmm_rows <= len(fold.fit_rows)
        assert np.array_equal(fitted_on[-1], window.train_index)
        assert max(r.max() for r in fitted_on) < window.valid_index.min()
        assert data.X_valid.shape == (len(window.valid_index), len(table.feature_columns) + 3)
    for seg in lgb_run.summary["segmentation"]["segments"]:
        assert seg["hmm_train_rows"] <= seg["n_train"] and all(n < seg["n_train"] for n in seg["fold_hmm_train_rows"])


def test_pruned_trial_keeps_partial_returns(run_cfg, table):
    from oi_ml.automl import bar_forward_returns
    from oi_ml.cv import walk_forward_segments
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    window = walk_forward_segments(table.features.timestamp, WINDOW, STEP, label_end_times=table.label_end_time)[0]
    data = prepare_segment(table, table.features[table.feature_columns].to_numpy("float64"), window, TrainConfig(num_threads=1), 3)

    class PruneNow(optuna.trial.FixedTrial):
        def should_prune(self): return True

    trial = PruneNow(dict(learning_rate=0.1, min_data_in_leaf=50, feature_fraction=1.0, bagging_fraction=1.0, lambda_l2=1.0, rounds=10, num_leaves=7))
    config = OrchestratorConfig("NSE", search=SMALL)
    with pytest.raises(optuna.TrialPruned):
        cv_objective(trial, "lightgbm", data, table, bar_forward_returns(raw, table, config.train.labels), config)
    fold0 = data.folds[0].test_rows
    assert trial.user_attrs["n_oof_rows"] == len(fold0)
    assert sorted(trial.user_attrs["daily_returns"]) == sorted({ist_day(t) for t in table.features.timestamp.iloc[fold0]})


def test_catboost_family_runs_when_installed(run_cfg, tmp_path):
    pytest.importorskip("catboost")                                     # optional extra: pip install -e '.[catboost]'
    run = run_orchestrator(tiny(tmp_path, "cat", families=("lightgbm", "catboost"), days=10), run_cfg)
    s = run.summary
    assert s["families"] == ["lightgbm", "catboost"] and not s["skipped_families"]
    cat = [t for t in s["trials"] if t["family"] == "catboost"]
    assert len(cat) == 2 and all(t["state"] in ("COMPLETE", "PRUNED") for t in cat)
    assert any(t["state"] == "COMPLETE" and math.isfinite(t["value"]) for t in cat)
    assert "max_depth" in s["best_per_family"]["catboost"]["latest_best_params"]
    returns = load_trial_returns(run.run_dir)
    assert set(returns.family) == {"lightgbm", "catboost"} and returns["return"].notna().all()


def test_catboost_skipped_with_warning(run_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "catboost", None)                 # `import catboost` fails whether installed or not
    with caplog.at_level(logging.WARNING, logger="oi_ml.automl"):
        run = run_orchestrator(tiny(tmp_path, "run", families=("lightgbm", "catboost"), optuna_trials=2, days=10,
                                    pruner="hyperband"), run_cfg)                           # (also exercises Hyperband)
    assert any("catboost is not installed" in r.getMessage() for r in caplog.records)
    s = run.summary
    assert s["families"] == ["lightgbm"] and s["skipped_families"] == {"catboost": "not installed"}
    assert s["segmentation"]["n_segments"] == 1 and s["dataset"]["days_used"] == 10 and s["total_trials"] == 2
    with pytest.raises(ValueError, match="no model family"):
        run_orchestrator(tiny(tmp_path, "none", families=("catboost",)), run_cfg)


def trials_in(storage: str) -> dict:
    "Trials per study (all states) in an Optuna storage given as `OrchestratorConfig.storage`."
    return {st.study_name: st.n_trials for st in optuna.get_all_study_summaries(optuna_storage(storage))}


def test_resume_from_sqlite_matches_uninterrupted_run(run_cfg, tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    one = dict(days=10)                                                # one segment keeps this test fast
    first = run_orchestrator(tiny(tmp_path, "a", storage=url, optuna_trials=2, **one), run_cfg).summary
    assert list(trials_in(url).values()) == [2]
    extended_run = run_orchestrator(tiny(tmp_path, "b", storage=url, optuna_trials=3, **one), run_cfg)
    extended = extended_run.summary
    assert list(trials_in(url).values()) == [3] and extended["total_trials"] == 3
    assert [t["params"] for t in extended["trials"] if t["number"] < 2] == [t["params"] for t in first["trials"]]
    again_run = run_orchestrator(tiny(tmp_path, "b", storage=url, optuna_trials=3, **one), run_cfg)
    assert list(trials_in(url).values()) == [3]                        # nothing re-run
    assert again_run.manifest["created_at"] != extended_run.manifest["created_at"]   # rebuilt from the storage, not reused
    assert again_run.summary == extended                               # same numbers, durations included (read from the storage)
    assert json.loads((tmp_path / "b" / SUMMARY_FILE).read_text()) == extended
    fresh = run_orchestrator(tiny(tmp_path, "d", optuna_trials=3, **one), run_cfg).summary   # in memory, uninterrupted
    assert strip_durations(fresh) == strip_durations(extended)
    assert fresh["results"] == extended["results"]
    # a smaller budget on the extended storage reads its own first 2 trials: the 2-trial run's numbers, not the 3 stored
    smaller = run_orchestrator(tiny(tmp_path, "e", storage=url, optuna_trials=2, **one), run_cfg).summary
    assert list(trials_in(url).values()) == [3] and smaller["total_trials"] == 2
    assert smaller == first and smaller["run_id"] == first["run_id"]


def test_other_code_gets_its_own_studies_and_draws_the_same_trials(run_cfg, tmp_path, monkeypatch):
    "A persistent storage never hands one code version's trials to another; the sampler's draws depend on the config only."
    from oi_ml import automl
    url, one = f"sqlite:///{tmp_path}/studies.db", dict(days=10, optuna_trials=2)
    first = run_orchestrator(tiny(tmp_path, "a", storage=url, **one), run_cfg)
    monkeypatch.setattr(automl, "automl_code_sha256", lambda: "0" * 64)      # the same data and config, other code
    other = run_orchestrator(tiny(tmp_path, "b", storage=url, **one), run_cfg)
    studies = trials_in(url)
    assert len(studies) == 2 and list(studies.values()) == [2, 2] and any(name.endswith("@" + "0" * 12) for name in studies)
    assert other.manifest["code_sha256"] == "0" * 64 != first.manifest["code_sha256"]
    assert [t["params"] for t in other.summary["trials"]] == [t["params"] for t in first.summary["trials"]]


@pytest.mark.slow
def test_interrupted_run_resumes_from_journal(run_cfg, tmp_path, monkeypatch):
    from oi_ml import automl
    journal = str(tmp_path / "studies.log")
    calls, real_fit = [], automl.fit_candidate

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8: raise KeyboardInterrupt                   # Ctrl-C during the third trial of segment 0
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(automl, "fit_candidate", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_orchestrator(tiny(tmp_path, "a", storage=journal, optuna_trials=3), run_cfg)
    monkeypatch.setattr(automl, "fit_candidate", real_fit)
    assert list(trials_in(journal).values()) == [3]                    # 2 finished + 1 failed in segment 0
    resumed = run_orchestrator(tiny(tmp_path, "a", storage=journal, optuna_trials=3), run_cfg).summary
    assert resumed["total_trials"] == 6 and all(r["n_failed"] == (1 if r["segment"] == 0 else 0) for r in resumed["results"])
    fresh = run_orchestrator(tiny(tmp_path, "b", optuna_trials=3), run_cfg).summary
    assert strip_durations(fresh) == strip_durations(resumed)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("n_failed", "best_trial", "study")} for r in rs]
    assert strip(fresh["results"]) == strip(resumed["results"])


def test_cutting_whole_sessions_leaves_every_remaining_label_unchanged(run_cfg, table):
    "The premise of `before_day`: labels stop at the session end, so a table built on earlier sessions only is a subset."
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    days = sorted(set(raw.timestamp.dt.tz_convert("Asia/Kolkata").dt.date))
    for target in ("triple_barrier", "direction"):
        full = table if target == "triple_barrier" else build_training_table(raw, TrainConfig(target=target, num_threads=1))
        early = raw[raw.timestamp.dt.tz_convert("Asia/Kolkata").dt.date < days[8]].reset_index(drop=True)
        part = build_training_table(early, TrainConfig(target=target, num_threads=1))
        where = pd.Index(full.features.timestamp).get_indexer(part.features.timestamp)
        assert len(part.y) > 0 and (where >= 0).all()
        np.testing.assert_array_equal(part.y, full.y[where])
        np.testing.assert_array_equal(part.label_end_time.to_numpy(), full.label_end_time.to_numpy()[where])
        before = (full.features.timestamp.dt.tz_convert("Asia/Kolkata").dt.date < days[8]).to_numpy()
        assert before.sum() == len(part.y)      # no labelled row of those sessions is lost


def test_before_day_keeps_the_search_out_of_the_later_sessions(run_cfg, tmp_path):
    raw, _ = load_dataset("NSE", run_cfg=run_cfg)
    days = sorted(set(raw.timestamp.dt.tz_convert("Asia/Kolkata").dt.date))
    cut = days[10].isoformat()                      # 10 sessions left: validation starts on session 7 and 9 again
    run = run_orchestrator(tiny(tmp_path, "cut", before_day=cut), run_cfg)
    returns = load_trial_returns(run.run_dir)
    assert len(returns) and (returns["day"].dt.date.astype(str) < cut).all()
    assert all(s["valid_end"] < cut for s in run.summary["segmentation"]["segments"])
    assert ist_day(run.summary["dataset"]["used_window"][1]) < cut and run.summary["config"]["before_day"] == cut
    with pytest.raises(ValueError, match="before_day='08/14/2025'"):
        run_orchestrator(tiny(tmp_path, "bad", before_day="08/14/2025"), run_cfg)


def test_a_days_window_searches_rows_with_their_full_history_features(run_cfg, tmp_path, monkeypatch, table):
    """`days=10` searches the last 10 sessions, but their features and regime stream come from the whole dataset: the
    recursive indicators (RSI, ADX) of the window's first rows equal what scoring the full stream gives them (found by
    review: restarting at the window moved rsi_21 by up to 3.4e-3)."""
    import oi_ml.automl as automl_mod
    seen = []
    real_search = automl_mod.search
    monkeypatch.setattr(automl_mod, "search", lambda config, tab, *a, **k: (seen.append(tab), real_search(config, tab, *a, **k))[1])
    run = run_orchestrator(tiny(tmp_path, "days", days=10, optuna_trials=1), run_cfg)
    searched = seen[0]
    assert run.summary["dataset"]["days_used"] == 10 and run.summary["dataset"]["labelled_rows"] == len(searched.y)
    full = table.features.set_index("timestamp")
    assert len(searched.features) < len(full)
    got = searched.features.set_index("timestamp")[searched.feature_columns]
    pd.testing.assert_frame_equal(got, full.loc[got.index, searched.feature_columns])
    assert np.isclose(searched.weight.mean(), 1.0)


def test_a_single_class_training_slice_is_refused_and_nothing_is_written(run_cfg, tmp_path):
    "Labels of one class (all HOLD) would give each segment a 'perfect' validation score: a ValueError naming the counts instead."
    import dataclasses
    labels = dataclasses.replace(TrainConfig().labels, profit_mult=1000.0, stop_mult=1000.0)
    config = tiny(tmp_path, "one_class", train=TrainConfig(num_threads=1, labels=labels))
    with pytest.raises(ValueError, match=r"AutoML segment 0: its \d+ training rows \(.*\) hold fewer than 2 classes "
                                         r"\(\{'SELL': 0, 'HOLD': \d+, 'BUY': 0\}\).* label settings"):
        run_orchestrator(config, run_cfg)
    assert not (tmp_path / "one_class").exists() and not list(tmp_path.glob(".one_class*"))


def test_an_output_folder_holding_another_run_is_neither_returned_nor_overwritten(lgb_run, run_cfg):
    "run_orchestrator(output=X) returned whatever run sat in X; another configuration's request now names both run ids."
    from oi_ml.automl import automl_run_id
    manifest = (lgb_run.run_dir / "manifest.json").read_bytes()
    other = tiny(lgb_run.run_dir.parent, lgb_run.run_dir.name, optuna_trials=3, before_day="2025-08-14")
    _, dm = load_dataset("NSE", run_cfg=run_cfg)
    wanted = automl_run_id("NSE", dm, other)
    assert wanted != lgb_run.manifest["run_id"]
    with pytest.raises(ValueError, match=f"holds AutoML run {lgb_run.manifest['run_id']}, not the requested {wanted}"):
        run_orchestrator(other, run_cfg)
    with pytest.raises(ValueError, match="not the requested"):
        run_orchestrator(other, run_cfg, reuse=False)
    assert (lgb_run.run_dir / "manifest.json").read_bytes() == manifest
    assert run_orchestrator(tiny(lgb_run.run_dir.parent, lgb_run.run_dir.name), run_cfg).manifest == lgb_run.manifest   # same id: reused


def test_a_regime_feature_without_data_on_the_slice_is_left_out_of_its_hmm(table):
    "VIX absent (its neutral default 15 on every row) no longer stops a segment's HMM: it is fitted without it."
    import dataclasses
    from oi_ml.automl import fit_regimes
    novix = dataclasses.replace(table, features=table.features.assign(vix=15.0))
    model = fit_regimes(novix, np.arange(2000), TrainConfig(num_threads=1))
    assert "vix" not in model.feature_columns and "ret_std_20" in model.feature_columns


def test_a_storage_that_cannot_be_opened_is_one_line_before_any_table_is_built(run_cfg, tmp_path, monkeypatch):
    """Review proof: `oi-ml automl --storage postgresql+psycopg2://...` (the README's example, driver not installed) and an
    SQLite file in a missing folder ended in ImportError / OperationalError tracebacks, after the training table was
    built. Both are a ValueError naming the storage (password hidden), the driver's error and the remedy, raised first."""
    import importlib.util
    from oi_ml import automl as automl_mod
    if importlib.util.find_spec("psycopg2") is None:
        with pytest.raises(ValueError) as err:
            optuna_storage("postgresql+psycopg2://user:secret@db-host:5432/optuna")
        assert str(err.value) == ("cannot open the Optuna storage postgresql+psycopg2://user:***@db-host:5432/optuna (--storage): "
                                  "ModuleNotFoundError: No module named 'psycopg2'; for PostgreSQL install its driver: pip install psycopg2-binary")
    monkeypatch.setattr(automl_mod, "build_training_table", lambda *a, **k: pytest.fail("the training table was built first"))
    missing = tmp_path / "no" / "such" / "dir" / "optuna.db"
    with pytest.raises(ValueError, match=rf"cannot open the Optuna storage sqlite:///{missing} \(--storage\): OperationalError: "
                                         "unable to open database file; check that its folder exists"):
        run_orchestrator(tiny(tmp_path, "bad_storage", storage=f"sqlite:///{missing}"), run_cfg)
    assert not (tmp_path / "bad_storage").exists()


def test_a_dataset_holding_two_symbols_is_refused_naming_them(run_cfg, tmp_path, monkeypatch):
    "A version an older export made of two indices is refused before any table is built, naming both and `--symbol`."
    from oi_ml import automl as automl_mod
    raw, manifest = load_dataset("NSE", run_cfg=run_cfg)
    two = pd.concat([raw, raw.assign(symbol="BANKNIFTY")], ignore_index=True)
    monkeypatch.setattr(automl_mod, "load_dataset", lambda *a, **k: (two, {**manifest, "symbols": ["BANKNIFTY", "NIFTY"]}))
    monkeypatch.setattr(automl_mod, "build_training_table", lambda *a, **k: pytest.fail("the training table was built"))
    with pytest.raises(ValueError, match=r"holds 2 symbols \(BANKNIFTY, NIFTY\) but labels, training and AutoML take one symbol "
                                         r"per dataset: export one with `oi-ml export --exchange NSE --symbol BANKNIFTY`"):
        run_orchestrator(tiny(tmp_path, "two_symbols"), run_cfg)

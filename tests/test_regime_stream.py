"""One definition of a row's regime probabilities in training, cross-validation, AutoML, backtests and serving: the
causal forward filter run over every bar of the feature stream (labelled or not, from its first bar), read at the row.

The serving reference steps `RegimeHMMTransformer.filter_step` once per bar from the stream's first bar, as
`MLSignalGenerator` does (`test_signals` checks the generator against `score_frame`, the backtests' path). The data is
two simulated sessions: the table drops the warm-up bars and the last bars of each session, whose labels cannot be
resolved, so a filter run over the table's rows alone skips bars the served filter steps through."""
import numpy as np
import pandas as pd
import pytest

import oi_ml.train as train_mod
from oi_ml.automl import design_matrices, fit_regimes
from oi_ml.features import prepare_training_features
from oi_ml.store import connect, load_historical_data_for_ml
from oi_ml.train import (
    TrainConfig,
    build_training_table,
    cross_validate,
    fit_model_set,
    holdout_scores,
    holdout_split,
)

CFG = TrainConfig(n_splits=2, max_rounds=20, min_regime_rows=10**6, top_k_features=10, min_data_in_leaf=20, num_threads=1,
                 min_embargo_bars=10)   # two sessions: a 200-row embargo would leave a fold almost nothing to fit
TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def data(simulated_template):
    "(training table, feature stream of every bar, position in the stream of each table row)."
    with connect(simulated_template, read_only=True) as con:
        raw = load_historical_data_for_ml(con, "NSE")
    raw = raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    table = build_training_table(raw, CFG)
    stream = prepare_training_features(raw, table.feature_columns)
    at = pd.Index(stream.timestamp).get_indexer(table.features.timestamp)
    assert (at >= 0).all()
    return table, stream, at


def served_probs(model, stream: pd.DataFrame) -> np.ndarray:
    "Regime probabilities of every bar of `stream`: one `filter_step` per bar from its first bar (the generator's path)."
    probs, prev = [], None
    for x in stream[list(model.feature_columns)].to_numpy("float64"):
        prev = model.filter_step(prev, x)
        probs.append(prev)
    return np.array(probs)


def test_the_table_skips_bars_of_the_stream(data):
    "The premise: labelled rows are a subset of the bars, with unlabelled bars between them (a session's last bars)."
    table, stream, at = data
    assert len(table.y) < len(stream) and np.diff(at).max() > 1


def test_boosters_are_fitted_on_the_served_regime_probabilities(data, monkeypatch):
    "The rows `fit_model_set` hands the selector and boosters carry the served filter's probabilities at those rows."
    table, stream, at = data
    seen = []
    real = train_mod.select_features
    def record(family, cfg, k, X, y, w):
        seen.append(X.copy()); return real(family, cfg, k, X, y, w)
    monkeypatch.setattr(train_mod, "select_features", record)
    ins, _ = holdout_split(table, CFG)
    ms = fit_model_set(table, ins, CFG, rounds=5)
    columns = ms.regime_model.prob_columns
    (X,) = seen
    assert np.array_equal(X.index.to_numpy(), ins)
    served = served_probs(ms.regime_model, stream)[at[ins]]
    assert np.abs(X[columns].to_numpy() - served).max() < TOLERANCE


def test_oof_and_holdout_predictions_read_the_served_regime_probabilities(data, monkeypatch):
    "Every `predict_model_set` call of cross-validation and the holdout gets the served filter's regimes and probabilities."
    table, stream, at = data
    calls = []
    real = train_mod.predict_model_set
    def record(ms, features, regimes):
        calls.append((ms.regime_model, features.index.to_numpy(), regimes.copy())); return real(ms, features, regimes)
    monkeypatch.setattr(train_mod, "predict_model_set", record)
    ins, hold = holdout_split(table, CFG)
    cross_validate(table, ins, CFG)
    holdout_scores(table, hold, fit_model_set(table, ins, CFG, rounds=5), None)
    assert len(calls) == CFG.n_splits + 1
    for model, rows, regimes in calls:
        served = served_probs(model, stream)[at[rows]]
        assert np.abs(regimes[model.prob_columns].to_numpy() - served).max() < TOLERANCE
        assert np.array_equal(regimes.regime.to_numpy(), served.argmax(axis=1))


def test_automl_design_matrices_carry_the_served_regime_probabilities(data):
    "AutoML's segment inputs: features, then the served filter's probabilities at each row."
    table, stream, at = data
    ins, hold = holdout_split(table, CFG)
    model = fit_regimes(table, ins, CFG)
    base = table.features[table.feature_columns].to_numpy("float64")
    X_fit, X_hold = design_matrices(base, table, model, ins, hold)
    served = served_probs(model, stream)
    k = model.n_regimes
    assert np.array_equal(X_fit[:, :-k], base[ins]) and np.array_equal(X_hold[:, :-k], base[hold])
    assert np.abs(X_fit[:, -k:] - served[at[ins]]).max() < TOLERANCE
    assert np.abs(X_hold[:, -k:] - served[at[hold]]).max() < TOLERANCE

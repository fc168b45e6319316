"""Property and reference tests of `oi_ml.regimes`: no look-ahead, the forward filter against hmmlearn and a slow
reference, deterministic state order, determinism, JSON round trip, streaming == batch, bad input."""
import json
import logging

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from oi_ml.regimes import (
    COVARIANCE_TYPES,
    DEFAULT_REGIME_FEATURES,
    REGIME_COLUMN,
    RegimeHMMTransformer,
    make_regime_params,
)

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # "Model is not converging" chatter on tiny data

TRUE_TRANSMAT = np.array([[0.97, 0.02, 0.01], [0.02, 0.96, 0.02], [0.02, 0.04, 0.94]])
TRAIN_ROWS = 1500


def simulate_regimes(n_rows: int, seed: int = 0) -> pd.DataFrame:
    "3-regime Markov chain (calm, normal, stressed) driving the default regime features; keeps the true regime."
    rng = np.random.default_rng(seed)
    state = np.zeros(n_rows, dtype=np.int64)
    for t in range(1, n_rows):
        state[t] = rng.choice(3, p=TRUE_TRANSMAT[state[t - 1]])
    vol = np.array([0.0005, 0.001, 0.0025])[state]
    return pd.DataFrame({
        "ret_1": rng.normal(0, vol),
        "realized_vol": vol * np.exp(rng.normal(0, 0.3, n_rows)),
        "vix": np.array([11.0, 15.0, 24.0])[state] + rng.normal(0, 3.0, n_rows),
        "pcr_oi": np.array([1.1, 1.0, 0.8])[state] + rng.normal(0, 0.15, n_rows),
        "true_regime": state,
    }, index=pd.RangeIndex(1000, 1000 + n_rows))


@pytest.fixture(scope="module")
def sim():
    frame = simulate_regimes(2000, seed=0)
    frame.loc[[1003, 2500, 2501, 2777], "vix"] = np.nan  # positions 3, 1500 (first test row), 1501, 1777
    return frame


@pytest.fixture(scope="module")
def model(sim):
    return RegimeHMMTransformer().fit(sim.iloc[:TRAIN_ROWS])


@pytest.fixture(scope="module")
def full_out(model, sim):
    return model.transform(sim)


def out_columns(model):
    return [REGIME_COLUMN, *model.prob_columns]


def hmmlearn_twin(params, covariance_type="full"):
    "A fixed-parameter hmmlearn GaussianHMM with exactly `params` (standardised units)."
    from hmmlearn.hmm import GaussianHMM
    hmm = GaussianHMM(n_components=len(params.startprob), covariance_type=covariance_type, init_params="", params="")
    hmm.startprob_, hmm.transmat_, hmm.means_ = params.startprob, params.transmat, params.means
    hmm.covars_ = params.covars if covariance_type == "full" else np.diagonal(params.covars, axis1=1, axis2=2)
    return hmm


def reference_filter(params, rows):
    "Slow textbook forward filter with scipy densities; NaN rows get the prediction step only."
    out, prev = [], None
    for x in rows:
        pred = params.startprob.copy() if prev is None else prev @ params.transmat
        if not np.isnan(x).any():
            z = (x - params.feature_mean) / params.feature_std
            dens = [multivariate_normal(params.means[k], params.covars[k]).logpdf(z) for k in range(len(pred))]
            log_alpha = np.log(pred) + np.array(dens)
            pred = np.exp(log_alpha - log_alpha.max())
        prev = pred / pred.sum()
        out.append(prev)
    return np.array(out)


# ---------------------------------------------------------------- no look-ahead

def test_no_look_ahead_truncation(model, sim, full_out):
    "transform on the first `cut` rows equals the first `cut` rows of the full transform, exactly."
    cuts = sorted({1, 2, TRAIN_ROWS, len(sim) - 1, *np.random.default_rng(7).integers(3, len(sim) - 1, 8).tolist()})
    for cut in cuts:
        part = model.transform(sim.iloc[:cut])
        pd.testing.assert_frame_equal(part[out_columns(model)], full_out[out_columns(model)].iloc[:cut], check_exact=True)


def test_no_look_ahead_future_perturbed(model, sim, full_out):
    "Replacing every row after `cut` with garbage leaves rows up to `cut` bit-identical."
    rng = np.random.default_rng(3)
    for cut in (10, 900, 1600):
        noisy = sim.copy()
        future = noisy.index[cut:]
        for c in DEFAULT_REGIME_FEATURES:
            noisy.loc[future, c] = rng.normal(0, 50, len(future)) * noisy[c].std()
        out = model.transform(noisy)
        pd.testing.assert_frame_equal(out[out_columns(model)].iloc[:cut], full_out[out_columns(model)].iloc[:cut], check_exact=True)
        assert not out[model.prob_columns].iloc[cut:].equals(full_out[model.prob_columns].iloc[cut:])  # perturbation bites


def test_transform_never_refits(model, sim):
    "transform leaves the fitted parameters untouched, whatever it is given."
    before = json.dumps(model.to_dict())
    model.transform(simulate_regimes(300, seed=11) * 3.0)
    assert json.dumps(model.to_dict()) == before


# ---------------------------------------------------------------- the filter against references

def test_last_row_equals_hmmlearn_smoothed(model):
    "At the last row of a sequence, the filtered posterior equals hmmlearn's smoothed posterior."
    clean = simulate_regimes(2000, seed=0)                # the fixture's series without its NaNs
    probs = model.transform(clean)[model.prob_columns].to_numpy()
    z = (clean[list(model.feature_columns)].to_numpy() - model.params.feature_mean) / model.params.feature_std
    hmm = hmmlearn_twin(model.params)
    for end in (1, 2, 40, 301, TRAIN_ROWS, 2000):
        np.testing.assert_allclose(hmm.predict_proba(z[:end])[-1], probs[end - 1], rtol=0, atol=1e-10)


def test_every_row_equals_hmmlearn_last_row_on_clean_data(model):
    "On NaN-free data, filtered row t == hmmlearn smoothed posterior of the prefix [0, t] at its last row, for every t."
    clean = simulate_regimes(120, seed=5)
    probs = model.transform(clean)[model.prob_columns].to_numpy()
    z = (clean[list(model.feature_columns)].to_numpy() - model.params.feature_mean) / model.params.feature_std
    for covariance_type in ("full", "diag"):
        hmm = hmmlearn_twin(model.params, covariance_type)
        last = np.array([hmm.predict_proba(z[: t + 1])[-1] for t in range(len(z))])
        np.testing.assert_allclose(last, probs, rtol=0, atol=1e-10)
        smoothed = hmm.predict_proba(z)                # interior rows of the smoothed posterior see the future
        assert np.abs(smoothed[:-1] - probs[:-1]).max() > 1e-3


def test_matches_slow_reference_with_nans(model, sim, full_out):
    "Kernel == slow scipy reference on the whole series, NaN rows (prediction only) included."
    rows = sim[list(model.feature_columns)].to_numpy()
    np.testing.assert_allclose(full_out[model.prob_columns].to_numpy(), reference_filter(model.params, rows), rtol=0, atol=1e-10)


def test_nan_row_is_prediction_only(model, sim, full_out):
    "A row with a NaN feature gets probs = previous probs @ transmat; a NaN first row gets startprob."
    probs = full_out[model.prob_columns]
    for label in (1003, 2500, 2501, 2777):
        pos = sim.index.get_loc(label)
        np.testing.assert_allclose(probs.iloc[pos], probs.iloc[pos - 1].to_numpy() @ model.params.transmat, rtol=0, atol=1e-14)
    first_nan = sim.iloc[:5].copy()
    first_nan.iloc[0, 0] = np.nan
    np.testing.assert_allclose(model.transform(first_nan)[model.prob_columns].iloc[0], model.params.startprob, rtol=0, atol=1e-14)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariance_types_match_reference(sim, covariance_type):
    "Every covariance type is stored as full matrices and filtered correctly."
    fitted = RegimeHMMTransformer(covariance_type=covariance_type).fit(sim.iloc[:600])
    rows = sim[list(fitted.feature_columns)].to_numpy()[:400]
    np.testing.assert_allclose(fitted.filter_rows(rows), reference_filter(fitted.params, rows), rtol=0, atol=1e-10)


# ---------------------------------------------------------------- streaming

def test_filter_step_equals_transform_exactly(model, sim, full_out):
    "Row-by-row filter_step from initial_state() reproduces transform bit for bit (NaN rows included)."
    rows = sim[list(model.feature_columns)].to_numpy()
    state, stream = model.initial_state(), []
    for x in rows:
        state = model.filter_step(state, x)
        stream.append(state)
    assert np.array_equal(np.array(stream), full_out[model.prob_columns].to_numpy())


def test_filter_step_continues_from_transform(model, sim, full_out):
    "Warm up with transform on history, then stream new rows: same as transforming everything."
    history, rows = sim.iloc[:1200], sim[list(model.feature_columns)].to_numpy()
    state = model.transform(history)[model.prob_columns].to_numpy()[-1]
    for t in range(1200, 1260):
        state = model.filter_step(state, rows[t])
        assert np.array_equal(state, full_out[model.prob_columns].to_numpy()[t])
    assert np.array_equal(model.filter_step(None, rows[0]), model.filter_step(model.initial_state(), rows[0]))


# ---------------------------------------------------------------- ordering, stability, determinism

def test_states_ordered_by_realized_vol(model):
    "Regime 0 has the lowest realised-vol mean, regime K-1 the highest; ordering in raw units too."
    vol_means = model.params.means[:, model.feature_columns.index("realized_vol")]
    assert (np.diff(vol_means) > 0).all()
    raw = vol_means * model.params.feature_std[1] + model.params.feature_mean[1]
    assert 0.0003 < raw[0] < 0.0008 and 0.0018 < raw[2] < 0.0035


def test_regimes_recover_truth(model, sim, full_out):
    "Filtered regimes agree with the simulated regimes out of sample (ids mean calm < normal < stressed)."
    test = full_out.iloc[TRAIN_ROWS:]
    assert (test[REGIME_COLUMN] == test["true_regime"]).mean() > 0.9


def test_order_stable_across_retrains(sim):
    "Refits on shifted / shorter / longer training windows label the same test rows the same way."
    test = simulate_regimes(600, seed=21)
    base = RegimeHMMTransformer().fit(sim.iloc[:TRAIN_ROWS]).transform(test)[REGIME_COLUMN]
    for window in (slice(200, 1700), slice(0, 1000), slice(300, 2000)):
        other = RegimeHMMTransformer().fit(sim.iloc[window]).transform(test)[REGIME_COLUMN]
        assert (other == base).mean() > 0.95, window
        assert (other == test["true_regime"]).mean() > 0.9, window


def test_order_by_other_feature(sim):
    "order_by='pcr_oi' sorts states by PCR: the stressed regime (lowest PCR) becomes regime 0."
    fitted = RegimeHMMTransformer(order_by="pcr_oi").fit(sim.iloc[:TRAIN_ROWS])
    assert (np.diff(fitted.params.means[:, 3]) > 0).all()
    out = fitted.transform(sim.iloc[TRAIN_ROWS:])
    assert (out[REGIME_COLUMN] == 2 - out["true_regime"]).mean() > 0.9


def test_determinism(sim):
    "Same data and random_state give identical parameters (JSON equal), for both EM starts."
    for init in ("quantiles", "kmeans"):
        a = RegimeHMMTransformer(init=init, random_state=3).fit(sim.iloc[:800])
        b = RegimeHMMTransformer(init=init, random_state=3).fit(sim.iloc[:800].copy())
        assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_fit_ignores_nan_rows(sim):
    "fit drops rows with a NaN feature: same parameters as fitting on the complete rows only."
    train = sim.iloc[:TRAIN_ROWS]
    a = RegimeHMMTransformer().fit(train)
    b = RegimeHMMTransformer().fit(train.dropna())
    assert a.params.n_train_rows == TRAIN_ROWS - 1
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


# ---------------------------------------------------------------- serialisation

def test_json_round_trip(model, sim, full_out, tmp_path):
    "save/load and to_dict/from_dict give bit-identical transform output; the file is plain JSON."
    path = model.save(tmp_path / "regimes.json")
    loaded = RegimeHMMTransformer.load(path)
    pd.testing.assert_frame_equal(loaded.transform(sim), full_out, check_exact=True)
    again = RegimeHMMTransformer.from_dict(json.loads(json.dumps(model.to_dict())))
    pd.testing.assert_frame_equal(again.transform(sim), full_out, check_exact=True)
    assert json.loads(path.read_text())["format"] == "oi_ml.regimes.RegimeHMM/1"
    assert path.read_bytes() == loaded.save(tmp_path / "again.json").read_bytes()  # stable bytes -> stable hash
    for name in ("startprob", "transmat", "means", "covars", "feature_mean", "feature_std"):
        assert np.array_equal(getattr(loaded.params, name), getattr(model.params, name))


def test_unfitted_round_trip():
    cfg = RegimeHMMTransformer(n_regimes=2, order_by="vix", covariance_type="full")
    back = RegimeHMMTransformer.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.params is None and back.n_regimes == 2 and back.order_by == "vix" and back.feature_columns == DEFAULT_REGIME_FEATURES


def test_params_read_only(model):
    with pytest.raises(ValueError):
        model.params.transmat[0, 0] = 0.5


# ---------------------------------------------------------------- bad input

def test_missing_columns_named(model, sim):
    with pytest.raises(ValueError, match=r"missing from frame: \['vix', 'pcr_oi'\]"):
        model.transform(sim.drop(columns=["vix", "pcr_oi"]))
    with pytest.raises(ValueError, match=r"missing from frame: \['pcr_oi'\]"):
        RegimeHMMTransformer().fit(sim.drop(columns=["pcr_oi"]))


def test_bad_values_named(model, sim):
    bad = sim.iloc[:50].copy()
    bad.loc[1020, "realized_vol"] = np.inf
    with pytest.raises(ValueError, match=r"'realized_vol' is infinite at row 1020"):
        model.transform(bad)
    with pytest.raises(ValueError, match=r"'vix' must be numeric"):
        model.transform(sim.iloc[:5].assign(vix=["a", "b", "c", "d", "e"]))
    with pytest.raises(ValueError, match="infinite value"):
        model.filter_step(model.initial_state(), np.array([0.0, np.inf, 15.0, 1.0]))


def test_fit_errors(sim):
    with pytest.raises(ValueError, match="at least 30 complete training rows, got 20"):
        RegimeHMMTransformer().fit(sim.iloc[5:25])
    with pytest.raises(ValueError, match=r"constant on the training rows: \['pcr_oi'\]"):
        RegimeHMMTransformer().fit(sim.iloc[:200].assign(pcr_oi=1.0))


def test_usage_errors(model, sim, full_out):
    with pytest.raises(ValueError, match="not fitted"):
        RegimeHMMTransformer().transform(sim)
    with pytest.raises(ValueError, match="already has regime columns"):
        model.transform(full_out)
    with pytest.raises(ValueError, match="shape"):
        model.filter_step(model.initial_state(), np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        model.filter_rows(np.zeros(4))
    with pytest.raises(ValueError, match="order_by 'rv'"):
        RegimeHMMTransformer(order_by="rv")


def test_from_dict_validates(model):
    data = json.loads(json.dumps(model.to_dict()))
    with pytest.raises(ValueError, match="not a regime model"):
        RegimeHMMTransformer.from_dict({**data, "format": "pickle"})
    broken = json.loads(json.dumps(data))
    broken["params"]["transmat"][0][0] += 0.5
    with pytest.raises(ValueError, match="transmat"):
        RegimeHMMTransformer.from_dict(broken)
    broken = json.loads(json.dumps(data))
    broken["config"]["n_regimes"] = 4
    with pytest.raises(ValueError, match="params have shape"):
        RegimeHMMTransformer.from_dict(broken)
    with pytest.raises(ValueError, match="covars has shape"):
        make_regime_params([0.0], [1.0], [1.0], [[1.0]], [[0.0]], [[1.0]])


@pytest.mark.parametrize("value", [1e200, 1e308, -1e250])
def test_a_row_no_state_can_emit_is_missing_in_batch_and_stream_alike(model, sim, full_out, value):
    """An absurd finite value (ret_1 = 1e200) underflows every state's density: the batch filter carried NaN into every
    later row (regime argmax(NaN) = 0) while filter_step restarted from startprob. Both now treat it as a missing row."""
    rows = sim[list(model.feature_columns)].to_numpy()[:40].copy()
    rows[10, 0] = value
    batch, state, stream = model.filter_rows(rows), None, []
    for x in rows:
        state = model.filter_step(state, x)
        stream.append(state)
    assert np.isfinite(batch).all() and np.array_equal(np.array(stream), batch)
    np.testing.assert_allclose(batch[10], batch[9] @ model.params.transmat, rtol=0, atol=1e-14)   # the prediction alone
    missing = rows.copy(); missing[10, 0] = np.nan
    assert np.array_equal(batch, model.filter_rows(missing))

"""Property and reference tests of `oi_ml.features`: no look-ahead (features on data truncated at a cut time equal
the full-history features, exactly, for every column), multi-symbol frames with cross-sectional ranks, OHLCV-only
input, neutral defaults, input errors, and the drift-reference distributions. The look-ahead checker is shown to
fail on deliberately leaky transforms."""
import numpy as np
import pandas as pd
import pytest

from oi_ml.config import IST, RunConfig, get_exchange_config, monthly_expiry, weekly_expiries
from oi_ml.features import (
    FEATURE_DEFAULTS,
    KEY_COLUMNS,
    OPTION_FEATURE_DEFAULTS,
    RAW_PRICE_COLUMNS,
    REQUIRED_FEATURE_COLUMNS,
    XS_RANK_DEFAULTS,
    bin_proportions,
    check_raw_features,
    compute_all_features,
    feature_distribution,
    fill_neutral_defaults,
    prepare_training_features,
    supported_feature_columns,
    window_psi,
)
from oi_ml.indicators import INDICATOR_COLUMNS, WARMUP_BARS, XS_RANK_COLUMNS
from oi_ml.ingest import import_ohlcv
from oi_ml.simulate import simulate_market
from oi_ml.store import build_ml_features, connect, load_historical_data_for_ml, write_batch

N_DAYS, BARS_PER_DAY = 4, 375          # 1 500 one-minute NSE bars
N_RANDOM_CUTS = 6                      # random cut points on top of the fixed edge cases
OPTION_COLUMNS = list(OPTION_FEATURE_DEFAULTS)
NON_OPTION_COLUMNS = [c for c in REQUIRED_FEATURE_COLUMNS if c not in OPTION_FEATURE_DEFAULTS]
XS_COLUMNS = list(XS_RANK_DEFAULTS)


# --------------------------------------------------------------------------------------------------------------------
# data: 4 simulated NSE days plus an imported OHLCV symbol on the same bar times

def alt_symbol_csv(nifty: pd.DataFrame, path) -> str:
    "A second symbol's 1-minute OHLCV file: NIFTY's bars scaled by a slow, non-monotonic factor (different returns)."
    step = np.arange(len(nifty))
    factor = 0.5 * np.exp(0.004 * np.sin(step / 37.0) + 0.003 * np.cos(step / 11.0))
    pd.DataFrame({"timestamp": nifty.timestamp.map(lambda t: t.isoformat()).to_numpy(),
                  **{c: (nifty[c].to_numpy() * factor).round(4) for c in ("open", "high", "low", "close")},
                  "volume": np.round(nifty.volume.to_numpy() * (0.6 + 0.3 * np.cos(step / 7.0)))}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def warehouse_raw(tmp_path_factory) -> pd.DataFrame:
    "`ml_features` of a warehouse with 4 simulated NSE days (NIFTY) and an imported OHLCV symbol ALT, symbol-major."
    root = tmp_path_factory.mktemp("features")
    cfg = RunConfig(data_dir=str(root / "data"))
    con = connect(cfg)
    try:
        simulate_market(con, "NSE", "2025-08-01", n_days=N_DAYS, seed=3, run_cfg=cfg)
        nifty = load_historical_data_for_ml(con, "NSE")
        import_ohlcv(con, alt_symbol_csv(nifty, root / "alt.csv"), "ALT", exchange="NSE", run_cfg=cfg)
        return load_historical_data_for_ml(con, "NSE")
    finally:
        con.close()


@pytest.fixture(scope="module")
def raw(warehouse_raw) -> pd.DataFrame:
    "The simulated NIFTY rows alone (option chain included), time-sorted."
    out = warehouse_raw[warehouse_raw.symbol == "NIFTY"].reset_index(drop=True)
    assert len(out) == N_DAYS * BARS_PER_DAY and out.timestamp.is_monotonic_increasing
    return out


@pytest.fixture(scope="module")
def two_symbols(warehouse_raw) -> pd.DataFrame:
    "NIFTY and the imported ALT (no option chain), time-major (sorted by timestamp, symbol)."
    out = warehouse_raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True)
    assert sorted(out.symbol.unique()) == ["ALT", "NIFTY"] and len(out) == 2 * N_DAYS * BARS_PER_DAY
    return out


def cut_positions(n_rows: int, seed: int = 0) -> list[int]:
    "Edge cases (first bars, diff/rolling edges, warm-up edge, session boundaries, last bar) plus random cut points."
    edges = [0, 1, 14, 15, 60, WARMUP_BARS - 1, WARMUP_BARS, BARS_PER_DAY - 1, BARS_PER_DAY, 2 * BARS_PER_DAY - 1,
             2 * BARS_PER_DAY, n_rows - 1]
    rng = np.random.default_rng(seed)
    return sorted(set(edges) | set(rng.integers(0, n_rows, N_RANDOM_CUTS).tolist()))


# --------------------------------------------------------------------------------------------------------------------
# the look-ahead checker

def same_values(a: pd.Series, b: pd.Series) -> np.ndarray:
    "Element-wise exact equality, NaN == NaN."
    a, b = a.to_numpy(), b.to_numpy()
    if a.dtype.kind in "fc" and b.dtype.kind in "fc": return (a == b) | (np.isnan(a) & np.isnan(b))
    return np.asarray(a == b, dtype=bool)


def lookahead_violations(feature_fn, raw: pd.DataFrame, cut_times) -> list[str]:
    "Every (column, cut) where features of `raw` truncated at the cut time differ from the full-history features."
    full = feature_fn(raw)
    assert len(full) == len(raw)
    problems = []
    for cut in cut_times:
        keep = (raw.timestamp <= cut).to_numpy()
        part = feature_fn(raw[keep].reset_index(drop=True))
        expected = full[keep].reset_index(drop=True)
        if list(part.columns) != list(expected.columns):
            problems.append(f"cut {cut}: columns differ"); continue
        for col in expected.columns:
            same = same_values(part[col], expected[col])
            if not same.all():
                row = int(np.flatnonzero(~same)[0])
                problems.append(f"{col}: cut {cut}, row {row}: truncated {part[col].iloc[row]!r} != full {expected[col].iloc[row]!r}")
    return problems


def violating_columns(problems: list[str]) -> set[str]:
    return {p.split(":")[0] for p in problems}


# --------------------------------------------------------------------------------------------------------------------
# no look-ahead

@pytest.mark.parametrize("feature_fn", [compute_all_features, prepare_training_features], ids=["unfilled", "prepared"])
def test_no_lookahead_single_symbol(raw, feature_fn):
    cuts = raw.timestamp.iloc[cut_positions(len(raw))]
    assert len(cuts) >= 15
    problems = lookahead_violations(feature_fn, raw, cuts)
    assert not problems, "look-ahead:\n" + "\n".join(problems[:20])


def test_no_lookahead_covers_every_feature(raw):
    "The checker above compares every required column (a column missing from the output would hide a leak)."
    out = compute_all_features(raw)
    assert set(REQUIRED_FEATURE_COLUMNS) <= set(out.columns)
    # and the columns are alive (not all NaN) after warm-up, so equality is not vacuous
    dead = [c for c in REQUIRED_FEATURE_COLUMNS if out[c].iloc[WARMUP_BARS:].isna().all()]
    assert dead == [], dead


@pytest.mark.parametrize("layout", ["time_major", "symbol_major"])
def test_no_lookahead_two_symbols_with_ranks(two_symbols, layout):
    frame = two_symbols if layout == "time_major" else two_symbols.sort_values(["symbol", "timestamp"], kind="mergesort").reset_index(drop=True)
    times = two_symbols.timestamp.drop_duplicates().reset_index(drop=True)
    cuts = times.iloc[[0, 15, WARMUP_BARS - 1, WARMUP_BARS, BARS_PER_DAY - 1, BARS_PER_DAY, 1111, len(times) - 1]]
    if layout == "time_major": fn = compute_all_features         # unfilled: a NaN/value mix-up cannot hide
    else: fn = lambda r: prepare_training_features(r, supported_feature_columns(two_symbols))
    problems = lookahead_violations(fn, frame, cuts)
    assert not problems, "look-ahead:\n" + "\n".join(problems[:20])
    # the rank columns were part of the comparison
    assert set(XS_COLUMNS) <= set(fn(frame.iloc[:10]).columns)


@pytest.mark.parametrize("leak", ["centered_rolling_mean", "full_sample_zscore", "next_bar_return"])
def test_lookahead_checker_detects_a_leaky_transform(raw, leak):
    "The same checker flags a deliberately leaky column, and only that column."
    def leaky(frame):
        out = compute_all_features(frame)
        close = frame.close.reset_index(drop=True)
        out["leaky"] = {"centered_rolling_mean": lambda: close.rolling(31, center=True, min_periods=1).mean() / close,
                        "full_sample_zscore": lambda: (close - close.mean()) / close.std(),
                        "next_bar_return": lambda: close.shift(-1) / close - 1}[leak]().to_numpy()
        return out
    cuts = raw.timestamp.iloc[[WARMUP_BARS, BARS_PER_DAY, 1000]]
    problems = lookahead_violations(leaky, raw, cuts)
    assert violating_columns(problems) == {"leaky"}, problems[:5]


# --------------------------------------------------------------------------------------------------------------------
# multi-symbol frames

def test_two_symbols_row_order_and_isolation(raw, two_symbols):
    "Features per (symbol, timestamp) do not depend on row layout, and NIFTY's own features ignore the other symbol."
    cols = supported_feature_columns(two_symbols)
    assert cols == REQUIRED_FEATURE_COLUMNS + XS_COLUMNS          # NIFTY carries the chain; two symbols give ranks
    time_major = prepare_training_features(two_symbols, cols)
    symbol_major = prepare_training_features(two_symbols.sort_values(["symbol", "timestamp"], kind="mergesort").reset_index(drop=True), cols)
    a = time_major.sort_values(["symbol", "timestamp"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, symbol_major, check_exact=True)
    # per-symbol families and indicators of NIFTY equal those computed on NIFTY alone
    alone = compute_all_features(raw)
    nifty = compute_all_features(two_symbols)
    nifty = nifty[nifty.symbol == "NIFTY"].reset_index(drop=True)
    for col in REQUIRED_FEATURE_COLUMNS:
        assert same_values(nifty[col], alone[col]).all(), col


def reference_rank_of_two(mine: pd.Series, other: pd.Series) -> np.ndarray:
    "Percentile rank among two values: 1 if larger, 0 if smaller, 0.5 on a tie, NaN if either is missing."
    a, b = mine.to_numpy(), other.to_numpy()
    out = np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def test_cross_sectional_ranks_against_hand_reference(two_symbols):
    out = compute_all_features(two_symbols)
    nifty = out[out.symbol == "NIFTY"].set_index("timestamp")
    alt = out[out.symbol == "ALT"].set_index("timestamp").loc[nifty.index]
    checked = 0
    for col in XS_RANK_COLUMNS:
        expected = reference_rank_of_two(nifty[col], alt[col])
        assert same_values(nifty[f"xs_rank_{col}"], pd.Series(expected)).all(), col
        expected_alt = reference_rank_of_two(alt[col], nifty[col])
        assert same_values(alt[f"xs_rank_{col}"], pd.Series(expected_alt)).all(), col
        checked += int(np.isfinite(expected).sum())
    assert checked > len(XS_RANK_COLUMNS) * 1000           # most rows have both symbols' values


def test_single_symbol_rank_request_gives_neutral_default(raw):
    out = prepare_training_features(raw.iloc[:300], REQUIRED_FEATURE_COLUMNS + XS_COLUMNS)
    assert (out[XS_COLUMNS] == 0.5).all().all()
    assert supported_feature_columns(raw) == REQUIRED_FEATURE_COLUMNS


# --------------------------------------------------------------------------------------------------------------------
# OHLCV-only input

@pytest.mark.parametrize("source", ["price_columns_only", "imported_symbol"])
def test_ohlcv_only_input(raw, two_symbols, source):
    "Without an option chain: option families are unsupported and take their neutral defaults; technicals unchanged."
    if source == "price_columns_only": ohlcv = raw[KEY_COLUMNS + RAW_PRICE_COLUMNS]
    else: ohlcv = two_symbols[two_symbols.symbol == "ALT"].reset_index(drop=True)
    assert supported_feature_columns(ohlcv) == NON_OPTION_COLUMNS
    out = prepare_training_features(ohlcv)
    assert list(out.columns) == KEY_COLUMNS + REQUIRED_FEATURE_COLUMNS
    # an imported NSE symbol still gets the exchange-wide VIX and FII/DII flows from the warehouse
    market_wide = [] if source == "price_columns_only" else ["vix", "vix_chg_15", "vix_term", "fii_flow", "dii_flow"]
    for col in OPTION_COLUMNS:
        if col not in market_wide: assert (out[col] == OPTION_FEATURE_DEFAULTS[col]).all(), col
    if market_wide: assert np.array_equal(out.vix.to_numpy(), ohlcv.vix.to_numpy())
    if source == "price_columns_only":   # same bars: indicators and time features equal those of the full-chain frame
        full = prepare_training_features(raw)
        pd.testing.assert_frame_equal(out[NON_OPTION_COLUMNS], full[NON_OPTION_COLUMNS], check_exact=True)


def test_time_features_by_hand(raw):
    out = compute_all_features(raw)
    local = raw.timestamp.dt.tz_convert("Asia/Kolkata")
    minutes = (local.dt.hour * 60 + local.dt.minute - (9 * 60 + 15)).to_numpy()
    assert np.array_equal(out.time_of_day.to_numpy(), minutes / 375)
    assert np.array_equal(out.day_of_week.to_numpy(), local.dt.day_of_week.to_numpy().astype(float))
    assert np.array_equal(out.is_expiry_day.to_numpy(), (raw.days_to_expiry < 1).to_numpy().astype(float))


# --------------------------------------------------------------------------------------------------------------------
# neutral defaults

def test_prepared_equals_unfilled_with_documented_defaults(raw):
    "Every NaN/±inf of the unfilled features becomes exactly FEATURE_DEFAULTS[column]; every other value is kept."
    unfilled = compute_all_features(raw)
    prepared = prepare_training_features(raw)
    n_defaulted = 0
    for col in REQUIRED_FEATURE_COLUMNS:
        v = unfilled[col].to_numpy(dtype=float)
        expected = np.where(np.isfinite(v), v, FEATURE_DEFAULTS[col])
        assert np.array_equal(prepared[col].to_numpy(), expected), col
        n_defaulted += int((~np.isfinite(v)).sum())
    assert n_defaulted > 1000      # the warm-up rows really exercise the defaults


def test_fill_neutral_defaults_of_nan_and_inf():
    cols = REQUIRED_FEATURE_COLUMNS + XS_COLUMNS
    frame = pd.DataFrame({c: [np.nan, np.inf, -np.inf, 0.125] for c in cols})
    out = fill_neutral_defaults(frame, cols)
    expected = {**FEATURE_DEFAULTS, **XS_RANK_DEFAULTS}
    for col in cols:
        assert out[col].tolist() == [expected[col]] * 3 + [0.125], col
        assert out[col].dtype == "float64"


def test_documented_default_values():
    "Spot checks of the documented meanings (module docs): oscillators 50, positions 0.5, ratios 1, typical VIX/IV."
    expected = {"rsi_14": 50.0, "bb_pctb_20": 0.5, "volume_ratio_20": 1.0, "ret_1": 0.0, "atm_iv": 0.15, "vix": 15.0,
                "oi_concentration_atm": 0.25, "log_pcr_oi": 0.0, "days_to_expiry": 3.0, "time_of_day": 0.5,
                "day_of_week": 2.0, "williams_r_14": -50.0, "adx_14": 20.0,
                # shares of the last 10 bars: 0.5; the candle shape (signed body, wicks) of a flat bar, the only one without it: 0
                "higher_high_frac_10": 0.5, "higher_low_frac_10": 0.5, "lower_high_frac_10": 0.5, "lower_low_frac_10": 0.5,
                "body_frac": 0.0, "upper_wick_frac": 0.0, "lower_wick_frac": 0.0}
    present = {k: v for k, v in expected.items() if k in FEATURE_DEFAULTS}
    assert len(present) >= len(expected) - 1
    assert {k: FEATURE_DEFAULTS[k] for k in present} == present
    assert set(XS_RANK_DEFAULTS.values()) == {0.5}
    assert set(FEATURE_DEFAULTS) >= set(INDICATOR_COLUMNS)


def test_a_flat_bar_has_no_body_and_no_wicks(raw):
    "high == low (so open == close): the candle fractions are undefined, and the prepared features read a flat bar: all 0."
    frame = raw.iloc[:300].copy()
    frame.loc[250, ["open", "high", "low", "close"]] = frame.close[249]
    unfilled, prepared = compute_all_features(frame), prepare_training_features(frame)
    assert unfilled.loc[250, ["body_frac", "upper_wick_frac", "lower_wick_frac"]].isna().all()
    assert prepared.loc[250, ["body_frac", "upper_wick_frac", "lower_wick_frac"]].tolist() == [0.0, 0.0, 0.0]
    assert unfilled.body_frac.dropna().between(-1, 1).all() and unfilled.body_frac.min() < -0.5    # signed, centred on 0


def test_missing_chain_inputs_become_defaults(raw):
    "A day whose option-chain inputs are all missing gets the neutral default in every level feature of the chain."
    missing_day = slice(2 * BARS_PER_DAY, 3 * BARS_PER_DAY)
    inputs = ["pcr_oi", "pcr_volume", "pcr_oi_atm", "max_pain_strike", "atm_strike", "call_oi", "put_oi", "atm_iv",
              "next_atm_iv", "iv_skew", "gex", "oi_concentration_atm", "days_to_expiry"]
    holed = raw.copy()
    holed.loc[holed.index[missing_day], inputs] = np.nan
    out = prepare_training_features(holed).iloc[missing_day]
    for col in ["log_pcr_oi", "log_pcr_oi_chg_15", "log_pcr_oi_chg_60", "log_pcr_volume", "log_pcr_oi_atm", "max_pain_distance",
                "atm_shift_1", "atm_shift_15", "oi_concentration_atm", "call_oi_chg_rate_15", "put_oi_chg_rate_15",
                "atm_iv", "iv_skew", "iv_term", "atm_iv_chg_15", "gex_sign", "gex_log", "days_to_expiry", "is_expiry_day"]:
        assert (out[col] == FEATURE_DEFAULTS[col]).all(), col


def test_missing_pcr_volume_gives_neutral_ema(raw):
    missing_day = slice(2 * BARS_PER_DAY, 3 * BARS_PER_DAY)
    holed = raw.copy()
    holed.loc[holed.index[missing_day], "pcr_volume"] = np.nan
    out = prepare_training_features(holed).iloc[missing_day]
    assert (out.log_pcr_volume == 0).all()
    assert (out.log_pcr_volume_ema_15 == FEATURE_DEFAULTS["log_pcr_volume_ema_15"]).all()


# --------------------------------------------------------------------------------------------------------------------
# bad input: a clear error naming the column or the first offending row

@pytest.mark.parametrize("column", KEY_COLUMNS + RAW_PRICE_COLUMNS)
def test_missing_column_is_named(raw, column):
    with pytest.raises(ValueError, match=rf"missing columns \['{column}'\]"):
        prepare_training_features(raw.iloc[:50].drop(columns=column))


def test_unsorted_rows_name_the_row(raw):
    frame = raw.iloc[:50].iloc[[*range(20), 21, 20, *range(22, 50)]].reset_index(drop=True)
    with pytest.raises(ValueError, match="out of order at row 21"):
        prepare_training_features(frame)


def test_unsorted_rows_in_time_major_multi_symbol_frame(two_symbols):
    frame = two_symbols.iloc[:100].copy()
    nifty_rows = np.flatnonzero(frame.symbol.to_numpy() == "NIFTY")[[10, 11]]     # NIFTY bars 10 and 11
    order = np.arange(len(frame)); order[nifty_rows] = order[nifty_rows[::-1]]
    with pytest.raises(ValueError, match="out of order"):
        compute_all_features(frame.iloc[order].reset_index(drop=True))


def test_duplicates_name_the_row(raw):
    frame = pd.concat([raw.iloc[:30], raw.iloc[[29]], raw.iloc[30:50]]).reset_index(drop=True)
    with pytest.raises(ValueError, match=r"duplicate \(symbol, timestamp\) at row 30"):
        prepare_training_features(frame)


def test_naive_timestamps_are_refused(raw):
    frame = raw.iloc[:50].assign(timestamp=raw.timestamp.iloc[:50].dt.tz_localize(None))
    with pytest.raises(ValueError, match="'timestamp' must be tz-aware"):
        prepare_training_features(frame)


@pytest.mark.parametrize("bad_close", [0.0, -1.0, np.nan, np.inf])
def test_bad_close_names_the_row(raw, bad_close):
    frame = raw.iloc[:50].copy()
    frame.loc[17, "close"] = bad_close
    with pytest.raises(ValueError, match=r"non-positive or missing 'close' at row 17"):
        prepare_training_features(frame)


@pytest.mark.parametrize("column", ["exchange", "symbol"])
@pytest.mark.parametrize("missing", [None, np.nan, "", "  "])
def test_a_row_without_exchange_or_symbol_is_named(two_symbols, column, missing):
    "Such a row would leave its series (groupby drops it) and lose its chain features, silently."
    frame = two_symbols.iloc[:600].copy()
    frame[column] = frame[column].astype(object)
    frame.loc[333, column] = missing
    with pytest.raises(ValueError, match=rf"missing '{column}' at row 333"):
        compute_all_features(frame)


@pytest.mark.parametrize("column, odd", [("exchange", "nse"), ("exchange", "NSE "), ("symbol", "Nifty")])
def test_a_key_spelled_two_ways_is_refused(raw, column, odd):
    "A row spelled 'nse' among 'NSE' rows would start a series of its own and break the diffs of both."
    frame = raw.iloc[:600].copy()
    frame[column] = frame[column].astype(object)
    frame.loc[500, column] = odd
    usual = raw[column].iloc[0]
    with pytest.raises(ValueError, match=rf"{column} '{odd}' at row 500 is '{usual}' \(row 0\) spelled differently"):
        prepare_training_features(frame)


def test_one_spelling_in_any_case_is_one_series(raw):
    "Spelled one way throughout, lower case is still one series: the same features as upper case."
    frame = raw.iloc[:600]
    lower = frame.assign(exchange="nse", symbol="nifty")
    pd.testing.assert_frame_equal(prepare_training_features(lower).iloc[:, 3:], prepare_training_features(frame).iloc[:, 3:])


def test_row_numbers_are_positions_not_index_labels(raw):
    frame = raw.iloc[:50].copy(); frame.index = frame.index + 1000
    frame.loc[1007, "close"] = 0.0
    with pytest.raises(ValueError, match="at row 7"):
        check_raw_features(frame)


# --------------------------------------------------------------------------------------------------------------------
# changes across a roll: the nearest options expiry (weekly) and the front-month future (monthly)

ROLL_WAREHOUSES = {   # (exchange, first day, sessions): what rolls inside
    "nse_weekly": ("NSE", "2025-08-06", 3),    # the weekly options expiry of Thu 7 Aug; no futures roll
    "nse_monthly": ("NSE", "2025-08-28", 2),   # Thu 28 Aug: the monthly options expiry and the futures roll
    "bse_monthly": ("BSE", "2025-08-26", 2),   # Tue 26 Aug: BSE's (weekly = monthly) expiry and futures roll
}
OPTION_CHANGES = {"log_pcr_oi_chg_15": ("pcr_oi", 15, "log_diff"), "log_pcr_oi_chg_60": ("pcr_oi", 60, "log_diff"),
                  "call_oi_chg_rate_15": ("call_oi", 15, "rate"), "put_oi_chg_rate_15": ("put_oi", 15, "rate"),
                  "atm_iv_chg_15": ("atm_iv", 15, "diff")}
BUILDUP = ["long_buildup", "short_buildup", "short_covering", "long_unwinding"]


@pytest.fixture(scope="module", params=list(ROLL_WAREHOUSES))
def roll_raw(request, tmp_path_factory) -> pd.DataFrame:
    "`ml_features` of simulated sessions around an expiry (see ROLL_WAREHOUSES)."
    exchange, start, days = ROLL_WAREHOUSES[request.param]
    cfg = RunConfig(data_dir=str(tmp_path_factory.mktemp(request.param)))
    con = connect(cfg)
    try:
        simulate_market(con, exchange, start, n_days=days, seed=5, run_cfg=cfg)
        return load_historical_data_for_ml(con, exchange)
    finally:
        con.close()


def closes_between(raw: pd.DataFrame, bars: int, expiries) -> np.ndarray:
    "Per row, whether an expiry's 15:30 IST close lies between the bar `bars` rows earlier (inclusive) and this bar."
    close_times = [pd.Timestamp(e).tz_localize(IST) + pd.Timedelta(hours=15, minutes=30) for e in expiries]
    t, before = raw.timestamp, raw.timestamp.shift(bars)
    return np.array([any(b <= c < now for c in close_times) if pd.notna(b) else False for b, now in zip(before, t)])


def plain_change(x: pd.Series, bars: int, kind: str) -> pd.Series:
    "The change over `bars` rows, ignoring contracts."
    if kind == "log_diff": return np.log(x).diff(bars)
    if kind == "rate": return x.diff(bars) / x.shift(bars)
    return x.diff(bars)


def test_option_changes_never_compare_two_expiries(roll_raw):
    """A 15/60-bar change whose window spans the nearest expiry's close compares two series: missing (neutral 0 once
    prepared); every other change is the plain row difference, bit for bit. Rolls from the exchange calendar."""
    cfg = get_exchange_config(roll_raw.exchange.iloc[0])
    days = roll_raw.timestamp.dt.tz_convert(IST).dt.date
    expiries = weekly_expiries(cfg, days.min(), days.max())
    out, prepared = compute_all_features(roll_raw), prepare_training_features(roll_raw)
    for col, (source, bars, kind) in OPTION_CHANGES.items():
        rolled = closes_between(roll_raw, bars, expiries)
        assert rolled.sum() == bars, col                                         # the data holds one roll
        plain = plain_change(roll_raw[source], bars, kind)
        assert plain[rolled].notna().all() and (plain[rolled] != 0).all(), col   # which the plain change would misread
        expected = plain.where(~rolled)
        assert same_values(out[col], expected).all(), col
        assert (prepared[col][rolled] == 0).all(), col


def test_futures_changes_never_compare_two_contracts(roll_raw):
    """futures_oi_chg_15 and the build-up flags are missing for the 15 bars after the monthly expiry's close (the front
    month rolls); a weekly expiry leaves them as they were."""
    cfg = get_exchange_config(roll_raw.exchange.iloc[0])
    days = roll_raw.timestamp.dt.tz_convert(IST).dt.date
    months = sorted({(d.year, d.month) for d in days})
    rolled = closes_between(roll_raw, 15, [monthly_expiry(cfg, y, m) for y, m in months])
    out = compute_all_features(roll_raw)
    oi, price = roll_raw.futures_oi, roll_raw.futures_price
    expected = (oi.diff(15) / oi.shift(15)).where(~rolled)
    assert same_values(out.futures_oi_chg_15, expected).all()
    assert out.loc[rolled, BUILDUP].isna().all().all()
    kept = ~rolled & price.diff(15).notna().to_numpy()
    assert (out.loc[kept, BUILDUP].sum(axis=1) == (price.diff(15)[kept] != 0) & (oi.diff(15)[kept] != 0)).all()
    weekly = closes_between(roll_raw, 15, weekly_expiries(cfg, days.min(), days.max())) & ~rolled
    if rolled.any(): assert rolled.sum() == 15
    else: assert weekly.sum() == 15 and out.futures_oi_chg_15[weekly].notna().all()   # the weekly roll: futures kept


def test_no_lookahead_across_a_roll(roll_raw):
    "Cut points around the roll: features of the truncated rows equal the full-history ones."
    first_after = int(np.flatnonzero(np.diff(roll_raw.days_to_expiry.to_numpy()) > 1)[0]) + 1   # the next series' first bar
    positions = [first_after - 1, first_after, first_after + 7, first_after + 14, first_after + 15, first_after + 59,
                 first_after + 60, len(roll_raw) - 1]
    problems = lookahead_violations(compute_all_features, roll_raw, roll_raw.timestamp.iloc[positions])
    assert not problems, "look-ahead:\n" + "\n".join(problems[:20])


# --------------------------------------------------------------------------------------------------------------------
# the ATM shift counts strikes of the symbol's own chain

def atm_frame(symbol: str, first_atm: float, step: float, with_step: bool = True) -> pd.DataFrame:
    "20 NSE bars whose ATM strike moves up by one listed strike (`step` points) at bar 10."
    times = pd.date_range("2025-08-04 09:15", periods=20, freq="min", tz=IST).tz_convert("UTC")
    atm = np.where(np.arange(20) < 10, first_atm, first_atm + step)
    frame = pd.DataFrame({"timestamp": times, "exchange": "NSE", "symbol": symbol, "open": atm + 1.0, "high": atm + 3.0,
                          "low": atm - 1.0, "close": atm + 1.0, "volume": 0.0, "atm_strike": atm, "pcr_oi": 1.0, "call_oi": 1e6})
    return frame.assign(strike_step=step) if with_step else frame


@pytest.mark.parametrize("symbol, first_atm, step", [("NIFTY", 24500.0, 50.0), ("BANKNIFTY", 52000.0, 100.0), ("MIDCPNIFTY", 12000.0, 25.0)])
def test_atm_shift_counts_strikes_of_the_symbols_own_chain(symbol, first_atm, step):
    out = compute_all_features(atm_frame(symbol, first_atm, step))
    assert out.atm_shift_1.tolist()[1:] == [0.0] * 9 + [1.0] + [0.0] * 9
    assert out.atm_shift_15[15:].tolist() == [1.0] * 5


def test_a_symbol_without_a_known_strike_step_is_refused():
    "Without `strike_step` only the exchange's benchmark has a known step; another index chain is refused, naming it."
    nifty = compute_all_features(atm_frame("NIFTY", 24500.0, 50.0, with_step=False))
    assert nifty.atm_shift_1[10] == 1.0                               # NIFTY: ExchangeConfig.strike_step
    with pytest.raises(ValueError, match=r"symbol 'BANKNIFTY' has ATM strikes \(first at row 0\) but no 'strike_step' column"):
        compute_all_features(atm_frame("BANKNIFTY", 52000.0, 100.0, with_step=False))
    ohlcv = atm_frame("BANKNIFTY", 52000.0, 100.0, with_step=False).drop(columns="atm_strike")
    assert compute_all_features(ohlcv).atm_shift_1.isna().all()       # no chain: nothing to count


def chain_snapshot(ts, symbol: str, spot: float, step: float) -> list[dict]:
    "A one-expiry chain of 11 strikes `step` apart around `spot`, calls and puts."
    atm = round(spot / step) * step
    return [{"timestamp": ts, "exchange": "NSE", "symbol": symbol, "expiry": pd.Timestamp("2025-08-07").date(),
             "strike": atm + step * k, "option_type": typ, "ltp": 10.0, "iv": 0.15, "oi": 1000.0, "oi_change": 0.0, "volume": 10.0,
             "bid": 9.9, "ask": 10.1, "bid_qty": 1.0, "ask_qty": 1.0, "underlying_price": spot, "lot_size": 30, "source": "test"}
            for k in range(-5, 6) for typ in ("CE", "PE")]


def test_an_imported_index_chain_shifts_in_its_own_strikes(con):
    """End to end: a BANKNIFTY chain (strikes 100 apart) in the NSE warehouse; the ATM moves one strike between two
    snapshots. ml_features carries each snapshot's step, and the feature reads one strike, not two."""
    t0 = pd.Timestamp("2025-08-04 09:15", tz=IST).tz_convert("UTC")
    times = t0 + pd.to_timedelta(np.arange(4), unit="min")
    spots = [52010.0, 52010.0, 52110.0, 52110.0]
    chain = pd.DataFrame([row for t, s in zip(times, spots) for row in chain_snapshot(t, "BANKNIFTY", s, 100.0)])
    bars = pd.DataFrame({"timestamp": times, "exchange": "NSE", "symbol": "BANKNIFTY", "open": spots, "high": np.add(spots, 5),
                         "low": np.subtract(spots, 5), "close": spots, "volume": 1e3, "futures_price": np.nan, "futures_oi": np.nan,
                         "advances": pd.array([pd.NA] * 4, dtype="Int64"), "declines": pd.array([pd.NA] * 4, dtype="Int64"), "source": "test"})
    write_batch(con, {"option_chain_snapshots": chain, "underlying_bars": bars}, {"batch_id": "bn", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    raw = load_historical_data_for_ml(con, "NSE")
    assert raw.strike_step.tolist() == [100.0] * 4 and raw.atm_strike.tolist() == [52000.0, 52000.0, 52100.0, 52100.0]
    assert compute_all_features(raw).atm_shift_1.tolist()[1:] == [0.0, 1.0, 0.0]


# --------------------------------------------------------------------------------------------------------------------
# reference distributions for drift monitoring

def test_bin_proportions_by_hand():
    values = np.arange(1.0, 11.0)                                              # 1..10
    assert bin_proportions(values, [3.25, 5.5, 7.75]).tolist() == [0.3, 0.2, 0.2, 0.3]
    assert bin_proportions(np.array([0.0, 1, 2, 3]), [1.0]).tolist() == [0.25, 0.75]   # a value on an edge goes up
    assert bin_proportions(np.array([np.nan, np.inf, 1.0, 2.0]), [1.5]).tolist() == [0.5, 0.5]  # non-finite dropped
    assert bin_proportions(np.array([5.0, 6.0]), []).tolist() == [1.0]


def test_feature_distribution_by_hand():
    frame = pd.DataFrame({"x": np.r_[np.arange(1.0, 11.0), np.nan], "const": 2.0, "none": np.nan})
    dist = feature_distribution(frame, ["x", "const", "none"], n_bins=4)
    # linear-interpolated quartiles of 1..10 are 3.25, 5.5, 7.75; each edge moves to the middle of its gap between
    # the values: (3 + 4) / 2, (5 + 6) / 2, (7 + 8) / 2
    assert dist["x"] == {"edges": [3.5, 5.5, 7.5], "proportions": [0.3, 0.2, 0.2, 0.3], "range": [1.0, 10.0]}
    assert dist["const"] == {"edges": [], "proportions": [1.0], "range": [2.0, 2.0]}   # one value: no gap, no edge
    ties = feature_distribution(pd.DataFrame({"t": np.repeat([1.0, 2.0, 3.0], [5, 90, 5])}), ["t"], n_bins=4)["t"]
    assert ties == {"edges": [2.5], "proportions": [0.95, 0.05], "range": [1.0, 3.0]}   # all quartiles on the tie 2.0: the gap above it
    assert dist["none"] == {"edges": [], "proportions": [0.0]}                 # no values: no range
    deciles = feature_distribution(pd.DataFrame({"u": np.arange(1000.0)}), ["u"])["u"]
    assert len(deciles["edges"]) == 9 and deciles["proportions"] == [0.1] * 10


def window_psi_reference(values, edges, rows, stride):
    "Each window's shares (every `stride`, and one ending at the last finite value) against the shares of all finite values."
    finite = values[np.isfinite(values)]
    starts = sorted(set(range(0, len(finite) - rows + 1, stride)) | {len(finite) - rows})
    e = np.maximum(bin_proportions(finite, edges), 1e-4)
    out = []
    for start in starts:
        a = np.maximum(bin_proportions(finite[start:start + rows], edges), 1e-4)
        out.append(float(np.sum((a - e) * np.log(a / e))))
    return np.array(out)


@pytest.mark.parametrize("seed", range(4))
def test_window_psi_matches_a_window_by_window_reference(seed):
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=1_500))                                  # a persistent path, with gaps
    values[rng.choice(1_500, 40, replace=False)] = np.nan
    values[rng.choice(1_500, 5, replace=False)] = np.inf
    edges = feature_distribution(pd.DataFrame({"v": values}), ["v"])["v"]["edges"]
    rows, stride = int(rng.integers(50, 400)), int(rng.integers(1, 60))
    np.testing.assert_allclose(window_psi(values, edges, rows, stride), window_psi_reference(values, edges, rows, stride),
                               rtol=1e-10, atol=1e-12)


def test_feature_distribution_window_levels():
    "Levels from windows every rows // 20 (and the last): 95th percentile, maximum, and the maximum away from the worst window."
    rng = np.random.default_rng(0)
    slow = np.cumsum(rng.normal(size=4_030))
    frame = pd.DataFrame({"slow": slow, "short": np.r_[rng.normal(size=3_999), [np.nan] * 31]})
    dist = feature_distribution(frame, ["slow", "short"], window_rows=1_000)
    windows = window_psi_reference(slow, dist["slow"]["edges"], 1_000, 50)
    starts = np.r_[np.arange(0, 3_031, 50), 3_030]                                   # 0, 50, ..., 3000, then 3030
    worst = starts[np.argmax(windows)]
    assert dist["slow"]["window_psi"] == pytest.approx({
        "rows": 1_000, "windows": 62, "side_by_side": 4, "q95": float(np.quantile(windows, 0.95)), "max": float(windows.max()),
        "max_apart": float(windows[np.abs(starts - worst) >= 1_000].max())}, rel=1e-12)
    assert dist["slow"]["range"] == [slow.min(), slow.max()]
    assert "window_psi" not in dist["short"]                  # 3,999 finite values: fewer than four windows' worth
    assert "window_psi" not in feature_distribution(frame, ["slow"])["slow"]            # not asked for
    with pytest.raises(ValueError, match="stride must be a whole number >= 1"):
        window_psi(slow, dist["slow"]["edges"], 100, 0)


def test_a_decile_inside_float_noise_moves_to_the_gap_above_it():
    "Deciles that all fall inside the noise around zero (an overnight gap column) still give an edge above the noise."
    values = np.r_[np.repeat([-1.78e-15, 0.0, 1.78e-15], [400, 550, 10]), np.linspace(0.002, 0.01, 40)]
    dist = feature_distribution(pd.DataFrame({"gap": values}), ["gap"])["gap"]
    assert dist["edges"] == [0.001] and dist["proportions"] == [0.96, 0.04]            # before: no edge, PSI 0 forever
    two_groups = np.r_[np.repeat([1.0, 1.0 + 1e-12, 2.0, 2.0 + 1e-12, 3.0], [30, 20, 10, 20, 20])]
    assert feature_distribution(pd.DataFrame({"t": two_groups}), ["t"], n_bins=4)["t"]["edges"] == [1.5, 2.5]


# ---------------------------------------------------------------- the drift family (43_monitor's family scale)

def psi_matrix_reference(frame, distribution, columns, rows, stride, leave_out=False):
    "Window-by-window PSI over aligned row windows, pandas/numpy only: NaN below 90 % finite values in the window."
    from oi_ml.features import bin_proportions, psi
    n = len(frame)
    starts = list(range(0, n - rows + 1, stride)); starts += [n - rows] if starts[-1] != n - rows else []
    out = np.full((len(starts), len(columns)), np.nan)
    for j, c in enumerate(columns):
        v, edges = frame[c].to_numpy(dtype=float), distribution[c]["edges"]
        for i, s in enumerate(starts):
            window = v[s:s + rows]
            if np.isfinite(window).sum() < 0.9 * rows: continue
            rest = np.r_[v[:s], v[s + rows:]]
            expected = bin_proportions(rest, edges) if leave_out else distribution[c]["proportions"]
            out[i, j] = psi(expected, bin_proportions(window, edges))
    return np.array(starts), out


@pytest.mark.parametrize("leave_out", [False, True])
def test_window_psi_matrix_matches_a_window_by_window_reference(leave_out):
    "Aligned windows with a warm-up of NaN rows, scattered NaN and a constant column, against the stored or the other rows' shares."
    from oi_ml.features import window_psi_matrix
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"walk": np.cumsum(rng.normal(size=1_300)), "noise": rng.normal(size=1_300), "flat": 2.0})
    frame.loc[:119, "walk"] = np.nan                                   # a warm-up: the first windows are not judged
    frame.loc[rng.choice(1_300, 30, replace=False), "noise"] = np.nan
    dist = feature_distribution(frame, list(frame.columns))
    starts, matrix = window_psi_matrix(frame, dist, list(frame.columns), 200, 30, leave_out=leave_out)
    ref_starts, reference = psi_matrix_reference(frame, dist, list(frame.columns), 200, 30, leave_out)
    assert list(starts) == list(ref_starts)
    np.testing.assert_allclose(matrix, reference, rtol=1e-10, atol=1e-12)
    assert np.isnan(matrix[0, 0]) and np.all(matrix[:, 2] == 0)                # warm-up window; one bin, PSI 0


def test_family_levels_ratios_and_scale_by_brute_force():
    "Held-out levels (max of the non-overlapping windows, floored), per-window ratios, and the smallest scale leaving <= alpha."
    from oi_ml.features import family_scale, loo_levels, window_ratios
    rng = np.random.default_rng(1)
    psis = rng.gamma(2.0, 0.2, size=(60, 5)); psis[rng.random(psis.shape) < 0.05] = np.nan
    starts = np.r_[np.arange(0, 590, 10), 595]
    levels = loo_levels(psis, starts, 100, 0.25)
    for i, s in enumerate(starts):
        apart = np.abs(starts - s) >= 100
        np.testing.assert_allclose(levels[i], np.maximum(0.25, np.nanmax(psis[apart], axis=0)), rtol=0, atol=0)
    ratios = window_ratios(psis, levels)
    np.testing.assert_allclose(ratios, np.nanmax(psis / levels, axis=1))
    for alpha in (0.0, 0.05, 0.1, 0.3):
        c = family_scale(ratios, alpha)
        assert np.mean(ratios >= c) <= alpha
        assert c == 1.0 or np.mean(ratios >= c / (1 + 1e-5)) > alpha             # no smaller scale would do
    assert family_scale(np.full(10, 0.5), 0.1) == 1.0                            # never below 1


def test_drift_family_calibrates_on_used_columns_with_levels():
    "The entry: only columns with training-window levels; held-out ratios, one per window; None below four windows' worth."
    from oi_ml.features import drift_family, family_scale
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({f"s{k}": pd.Series(rng.normal(size=6_000)).ewm(halflife=40).mean() for k in range(8)})
    frame["flat"] = 1.0
    frame["short"] = np.r_[np.full(2_500, np.nan), rng.normal(size=3_500)]       # under four windows' worth: no levels
    dist = feature_distribution(frame, list(frame.columns), window_rows=1_000)
    entry = drift_family(frame, dist, list(frame.columns), 1_000, 0.25)
    assert entry["columns"] == [f"s{k}" for k in range(8)] + ["flat"] and entry["rows"] == 1_000 and entry["stride"] == 50
    assert entry["windows"] == len(entry["ratios"]) == 101 and entry["side_by_side"] == 6 and entry["psi_alert"] == 0.25
    assert entry["rate_at_scale_1"] == np.mean(np.array(entry["ratios"]) >= 1) > 0.2   # eight slow columns: the family alerts
    assert family_scale(entry["ratios"], 0.1) > 1
    assert drift_family(frame.iloc[:3_999], dist, list(frame.columns), 1_000, 0.25) is None
    assert drift_family(frame, dist, ["short"], 1_000, 0.25) is None

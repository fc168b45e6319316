"""Property and integration tests for `oi_ml.indicators`.

The central test is the no-look-ahead property: for random cut points t, the features computed on the bars truncated
at t equal the features for those bars computed on the full history, for every column, exactly (NaN equal to NaN,
no tolerance). Column-by-column agreement with pandas references lives in `nbs/11_indicators.ipynb`."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from oi_ml.indicators import (
    INDICATOR_COLUMNS,
    WARMUP_BARS,
    XS_RANK_COLUMNS,
    compute_indicators,
    compute_indicators_by_symbol,
    cross_sectional_ranks,
)

BARS_PER_SESSION = 375  # 1-minute bars in an NSE session


def random_walk_ohlcv(n_bars: int, seed: int, start_price: float = 100.0, flat_frac: float = 0.0,
                      zero_volume_frac: float = 0.0) -> pd.DataFrame:
    "Consistent random-walk bars; optionally some flat bars (high == low) and zero-volume bars."
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    open_ = np.r_[start_price, close[:-1]][:n_bars] * np.exp(rng.normal(0, 0.002, n_bars))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.004, n_bars)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.004, n_bars)))
    volume = rng.integers(100, 10_000, n_bars).astype(np.float64)
    flat = (rng.random(n_bars) < flat_frac) & (np.arange(n_bars) > 0)
    close[flat] = open_[flat] = high[flat] = low[flat] = close[np.flatnonzero(flat) - 1]
    volume[rng.random(n_bars) < zero_volume_frac] = 0.0
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume})


def assert_prefix_equal(truncated: pd.DataFrame, full: pd.DataFrame, cut: int) -> None:
    "Every column of `truncated` equals the first `cut` rows of `full` exactly; names the columns that differ."
    expected = full.iloc[:cut]
    bad = [col for col in INDICATOR_COLUMNS
           if not np.array_equal(truncated[col].to_numpy(), expected[col].to_numpy(), equal_nan=True)]
    assert not bad, f"look-ahead at cut {cut} in columns: {bad}"


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    "About 8 sessions of 1-minute bars with a few flat and zero-volume bars."
    return random_walk_ohlcv(3000, seed=11, start_price=24_500.0, flat_frac=0.02, zero_volume_frac=0.01)


def cut_points(n_bars: int, n_random: int = 20, seed: int = 5) -> list[int]:
    "Random cut points plus the edges of the warm-up."
    rng = np.random.default_rng(seed)
    edges = [1, 2, 3, 27, WARMUP_BARS - 1, WARMUP_BARS, WARMUP_BARS + 1, BARS_PER_SESSION, BARS_PER_SESSION + 1]
    return sorted(set(edges) | set(rng.integers(1, n_bars, n_random).tolist()))


@pytest.mark.parametrize("anchored_vwap", [True, False])
def test_no_look_ahead(history, anchored_vwap):
    sessions = np.arange(len(history)) // BARS_PER_SESSION if anchored_vwap else None
    full = compute_indicators(history, session_id=sessions)
    assert full.iloc[WARMUP_BARS:].notna().mean().min() > 0.9  # the test compares real values, not just NaNs
    for cut in cut_points(len(history)):
        truncated = compute_indicators(history.iloc[:cut], session_id=None if sessions is None else sessions[:cut])
        assert_prefix_equal(truncated, full, cut)


def test_no_look_ahead_future_changes(history):
    "Rewriting every bar after t (a different future) leaves the features up to t unchanged."
    full = compute_indicators(history)
    for cut in cut_points(len(history), n_random=5, seed=9):
        other_future = random_walk_ohlcv(len(history) - cut, seed=cut, start_price=float(history.close.iloc[cut - 1]))
        changed = pd.concat([history.iloc[:cut], other_future], ignore_index=True)
        assert_prefix_equal(compute_indicators(changed).iloc[:cut], full, cut)


def test_no_look_ahead_index_without_volume(history):
    "An index has no volume: volume columns are NaN, and everything stays causal."
    index_like = history.assign(volume=0.0)
    full = compute_indicators(index_like)
    assert full[["obv_flow_20", "vwap_dist", "cmf_20", "mfi_14"]].isna().all().all()
    assert full["rsi_14"].iloc[WARMUP_BARS:].notna().all()
    for cut in cut_points(len(history), n_random=5):
        assert_prefix_equal(compute_indicators(index_like.iloc[:cut]), full, cut)


def long_frame(seed: int = 0) -> pd.DataFrame:
    "Three symbols with different spans (only NIFTY after the 650th minute), rows shuffled, non-default index."
    times = pd.date_range("2025-09-01 03:45", periods=700, freq="min", tz="UTC")
    parts = [random_walk_ohlcv(700, seed=1, start_price=24_500.0).assign(symbol="NIFTY", timestamp=times),
             random_walk_ohlcv(600, seed=2, start_price=80_500.0).assign(symbol="SENSEX", timestamp=times[50:650]),
             random_walk_ohlcv(500, seed=3, start_price=51_000.0).assign(symbol="BANKNIFTY", timestamp=times[:500])]
    frame = pd.concat(parts, ignore_index=True)
    frame["session"] = frame["timestamp"].dt.hour  # any int per bar works as a session id
    return frame.sample(frac=1.0, random_state=seed).set_index(pd.RangeIndex(10_000, 10_000 + len(frame)))


def test_by_symbol_matches_single_symbol():
    frame = long_frame()
    result = compute_indicators_by_symbol(frame, session_col="session")
    assert result.index.equals(frame.index) and list(result.columns) == ["symbol", "timestamp", *INDICATOR_COLUMNS]
    assert (result["symbol"] == frame["symbol"]).all() and (result["timestamp"] == frame["timestamp"]).all()
    for symbol, bars in frame.groupby("symbol"):
        bars = bars.sort_values("timestamp")
        expected = compute_indicators(bars[["open", "high", "low", "close", "volume"]], bars["session"].to_numpy())
        got = result.loc[bars.index, INDICATOR_COLUMNS]
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy(), err_msg=symbol)


def test_by_symbol_isolates_symbols_and_time():
    frame = long_frame()
    base = compute_indicators_by_symbol(frame)
    changed = frame.copy()
    sensex = changed["symbol"] == "SENSEX"
    changed.loc[sensex, ["open", "high", "low", "close"]] *= 3.0  # another symbol's bars must not matter
    other = compute_indicators_by_symbol(changed)
    np.testing.assert_array_equal(other.loc[~sensex, INDICATOR_COLUMNS].to_numpy(), base.loc[~sensex, INDICATOR_COLUMNS].to_numpy())
    cut_time = frame["timestamp"].sort_values().iloc[len(frame) // 2]
    early = frame[frame["timestamp"] <= cut_time]
    np.testing.assert_array_equal(compute_indicators_by_symbol(early)[INDICATOR_COLUMNS].to_numpy(),
                                  base.loc[early.index, INDICATOR_COLUMNS].to_numpy())


def reference_ranks(frame: pd.DataFrame, column: str) -> np.ndarray:
    "Slow reference: loop over timestamps, scipy average ranks scaled to [0, 1]."
    out = np.full(len(frame), np.nan)
    values, times = frame[column].to_numpy(), pd.factorize(frame["timestamp"])[0]
    for time in np.unique(times):
        rows = np.flatnonzero((times == time) & ~np.isnan(values))
        if len(rows) >= 2: out[rows] = (rankdata(values[rows]) - 1) / (len(rows) - 1)
    return out


def test_cross_sectional_ranks_match_reference():
    features = compute_indicators_by_symbol(long_frame())
    ranks = cross_sectional_ranks(features)
    assert list(ranks.columns) == [f"xs_rank_{col}" for col in XS_RANK_COLUMNS] and ranks.index.equals(features.index)
    for col in XS_RANK_COLUMNS:
        np.testing.assert_allclose(ranks[f"xs_rank_{col}"].to_numpy(), reference_ranks(features, col), rtol=0, atol=1e-15)
    assert ranks.min().min() == 0.0 and ranks.max().max() == 1.0
    nifty_alone = features["timestamp"] > features.loc[features.symbol == "SENSEX", "timestamp"].max()
    assert nifty_alone.sum() == 50 and ranks[nifty_alone].isna().all().all()
    assert ranks[~nifty_alone].notna().mean().min() > 0.9


def test_cross_sectional_ranks_single_symbol_is_nan():
    features = compute_indicators(random_walk_ohlcv(300, seed=4)).assign(timestamp=np.arange(300))
    assert cross_sectional_ranks(features).isna().all().all()


def test_bad_input():
    bars = random_walk_ohlcv(50, seed=0)
    with pytest.raises(ValueError, match=r"missing columns: \['low', 'volume'\]"):
        compute_indicators(bars.drop(columns=["low", "volume"]))
    for col, row, value, message in (("close", 7, np.nan, "'close' has a non-finite value at row 7"),
                                     ("high", 3, np.inf, "'high' has a non-finite value at row 3"),
                                     ("low", 9, 1e9, "high below open/close/low at row 9"),
                                     ("close", 4, -1.0, "price <= 0 at row 4"),
                                     ("volume", 5, -1.0, "volume < 0 at row 5")):
        bad = bars.copy()
        bad.loc[row, col] = value
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            compute_indicators(bad)
    with pytest.raises(ValueError, match="'open' is not numeric"):
        compute_indicators(bars.assign(open="x"))
    with pytest.raises(ValueError, match="session_id has shape"):
        compute_indicators(bars, session_id=np.zeros(10, dtype=int))
    shuffled = bars.set_index(pd.date_range("2025-01-01", periods=50, freq="min")).sample(frac=1.0, random_state=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_indicators(shuffled)


def test_bad_long_frame():
    frame = long_frame()
    with pytest.raises(ValueError, match=r"missing columns: \['symbol'\]"):
        compute_indicators_by_symbol(frame.drop(columns=["symbol"]))
    with pytest.raises(ValueError, match=r"duplicate \(symbol, timestamp\) key: \('NIFTY'"):
        compute_indicators_by_symbol(pd.concat([frame, frame[frame.symbol == "NIFTY"].iloc[:1]]))
    bad = frame.copy()
    bad.loc[bad.index[bad.symbol == "BANKNIFTY"][0], "close"] = np.nan
    with pytest.raises(ValueError, match="symbol 'BANKNIFTY': column 'close' has a non-finite value"):
        compute_indicators_by_symbol(bad)
    with pytest.raises(ValueError, match=r"missing columns: \['rsi_14'\]"):
        cross_sectional_ranks(frame, columns=("rsi_14",))


def test_empty_and_short_inputs():
    empty = compute_indicators(random_walk_ohlcv(0, seed=0))
    assert empty.shape == (0, len(INDICATOR_COLUMNS))
    short = compute_indicators(random_walk_ohlcv(3, seed=0))
    assert short.shape == (3, len(INDICATOR_COLUMNS)) and short["sma_5_dist"].isna().all()

"""Tests of `oi_ml.labels` and `oi_ml.meta_labels` against slow, obviously-correct pure-Python references.

The triple-barrier kernel must match `reference_triple_barrier` *exactly* (same floats) on random series with
frequent equality touches and ties, NaN/zero volatilities, NaN closes, zero sides, sessions (closed or cut short by the
data) and series ends."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oi_ml.config import IST
from oi_ml.labels import (
    HIT_NONE,
    HIT_PROFIT,
    HIT_SEGMENT_END,
    HIT_STOP,
    HIT_VERTICAL,
    TARGETS,
    LabelConfig,
    atr_volatility,
    breakout_levels,
    check_bar_frame,
    define_triple_barrier_target,
    forward_changes,
    forward_returns,
    label_names,
    labels_frame,
    make_target,
    segment_end_from_ids,
    triple_barrier_labels,
)
from oi_ml.meta_labels import (
    average_uniqueness,
    define_meta_labels,
    label_concurrency,
    meta_labels,
    sample_weights,
    time_decay_weights,
)

NAN = float("nan")


# ---------------------------------------------------------------- references (pure Python, one bar at a time)
def reference_triple_barrier(close, high, low, vol, horizon, pm, sm, side=None, touch="high_low", seg=None, closed=None):
    """Per bar (label, realised_return, label_end_index, barrier_hit), straight from the documented rules; `closed[t]`:
    bar t's segment ended in a real close (None: every segment did)."""
    n, out = len(close), []
    for t in range(n):
        s, c, v = (1.0 if side is None else float(side[t])), float(close[t]), float(vol[t])
        last = min(t + horizon, n - 1 if seg is None else int(seg[t]))
        if not (math.isfinite(c) and c > 0 and math.isfinite(v) and v > 0) or s not in (1.0, -1.0) or last <= t:
            out.append((0, NAN, -1, -1))
            continue
        profit = c * (1.0 + pm * v) if s > 0 else c * (1.0 - pm * v)
        stop = c * (1.0 - sm * v) if s > 0 else c * (1.0 + sm * v)
        result = None
        for j in range(t + 1, last + 1):
            hi, lo = (float(close[j]), float(close[j])) if touch == "close" else (float(high[j]), float(low[j]))
            profit_hit = hi >= profit if s > 0 else lo <= profit
            stop_hit = lo <= stop if s > 0 else hi >= stop
            if stop_hit:                       # ties: stop first
                result = (-1, s * (min(max(stop, lo), hi) / c - 1.0), j, 2)
                break
            if profit_hit:
                result = (1, s * (min(max(profit, lo), hi) / c - 1.0), j, 1)
                break
        exit_close = float(close[last])
        exit_ok = math.isfinite(exit_close) and exit_close > 0       # an exit close that is no price decides nothing
        if result is None:
            if last == t + horizon and exit_ok:
                result = (0, s * (exit_close / c - 1.0), last, 0)
            elif last < t + horizon and seg is not None and (closed is None or closed[t]) and exit_ok:
                result = (0, s * (exit_close / c - 1.0), last, 3)
            else:
                result = (0, NAN, -1, -1)
        out.append(result)
    return out


def as_tuples(res):
    return list(zip(res.label.tolist(), res.realised_return.tolist(), res.label_end_index.tolist(), res.barrier_hit.tolist()))


def assert_same(got, want):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        same_ret = g[1] == w[1] or (math.isnan(g[1]) and math.isnan(w[1]))
        assert g[0] == w[0] and same_ret and g[2] == w[2] and g[3] == w[3], f"bar {t}: kernel {g} != reference {w}"


def grid_series(rng, n):
    """Prices on a coarse integer grid: equality touches and two-sided bars (ties) are frequent."""
    close = 100.0 + np.cumsum(rng.integers(-2, 3, n)).astype(float)
    high = close + rng.integers(0, 4, n)
    low = close - rng.integers(0, 4, n)
    vol = rng.choice([0.01, 0.02, 0.03, 0.25, NAN, 0.0, -0.01], n, p=[0.25, 0.25, 0.2, 0.1, 0.1, 0.05, 0.05])
    return close, high, low, vol


def with_nan_prices(rng, close, high, low):
    """Copies with a few NaN closes, highs and lows (array API: a NaN never touches; NaN entry close: no label)."""
    close, high, low = close.copy(), high.copy(), low.copy()
    for arr in (close, high, low):
        arr[rng.random(arr.shape[0]) < 0.05] = NAN
    return close, high, low


# ---------------------------------------------------------------- triple barrier vs reference
@settings(max_examples=200, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 70), horizon=st.integers(1, 15),
       pm=st.sampled_from([0.5, 1.0, 1.75, 3.0, math.inf]), sm=st.sampled_from([0.5, 1.0, 2.0, math.inf]),
       touch=st.sampled_from(["high_low", "close"]), use_side=st.booleans(), use_seg=st.booleans(),
       nan_prices=st.booleans(), cut_short=st.booleans())
def test_triple_barrier_matches_reference(seed, n, horizon, pm, sm, touch, use_side, use_seg, nan_prices, cut_short):
    rng = np.random.default_rng(seed)
    close, high, low, vol = grid_series(rng, n)
    if nan_prices:
        close, high, low = with_nan_prices(rng, close, high, low)
    side = rng.choice([1.0, -1.0, 0.0, NAN], n, p=[0.4, 0.4, 0.1, 0.1]) if use_side else None
    seg = segment_end_from_ids(np.sort(rng.integers(0, 5, n))) if use_seg else None
    closed = seg < n - 1 if use_seg and cut_short else None        # the data stops inside the last segment
    res = triple_barrier_labels(close, high, low, vol, horizon, pm, sm, side=side, touch=touch, segment_end_index=seg,
                                segment_closed=closed)
    assert_same(as_tuples(res), reference_triple_barrier(close, high, low, vol, horizon, pm, sm, side, touch, seg, closed))


@pytest.mark.parametrize("seed", range(5))
def test_triple_barrier_matches_reference_on_longer_walks(seed):
    rng = np.random.default_rng(1000 + seed)
    n = 2000
    close = 24500 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    high, low = close * (1 + np.abs(rng.normal(0, 0.0005, n))), close * (1 - np.abs(rng.normal(0, 0.0005, n)))
    vol = atr_volatility(high, low, close, 14)
    side = rng.choice([1.0, -1.0], n)
    seg = segment_end_from_ids(np.arange(n) // 375)
    for kw in ({}, {"side": side, "seg": seg}):
        res = triple_barrier_labels(close, high, low, vol, 30, 1.75, 1.0, side=kw.get("side"),
                                    segment_end_index=kw.get("seg"))
        assert_same(as_tuples(res), reference_triple_barrier(close, high, low, vol, 30, 1.75, 1.0, **kw))


# hand-made ties and edges: vol 0.25 puts the barriers of a close of 100 exactly at 125 / 75
@pytest.mark.parametrize("side, high, low, want", [
    (1.0, [100, 125, 100], [100, 75, 100], (-1, -0.25, 1, HIT_STOP)),     # long, both touched exactly: stop first
    (-1.0, [100, 125, 100], [100, 75, 100], (-1, -0.25, 1, HIT_STOP)),    # short, both touched: its stop (125) first
    (1.0, [100, 140, 100], [100, 60, 100], (-1, -0.25, 1, HIT_STOP)),     # wide bar through both
    (1.0, [100, 125, 100], [100, 76, 100], (1, 0.25, 1, HIT_PROFIT)),     # equality touches count
    (-1.0, [100, 124, 100], [100, 75, 100], (1, 0.25, 1, HIT_PROFIT)),
    (1.0, [100, 124.9, 100], [100, 75.1, 100], (0, 0.0, 2, HIT_VERTICAL)),
])
def test_hand_made_ties_and_edges(side, high, low, want):
    res = triple_barrier_labels([100.0] * 3, high, low, [0.25] * 3, 2, 1.0, 1.0, side=[side] * 3)
    assert as_tuples(res)[0] == want
    assert as_tuples(res)[0] == reference_triple_barrier([100.0] * 3, high, low, [0.25] * 3, 2, 1.0, 1.0, [side] * 3)[0]


def test_entry_bar_is_never_checked_and_no_look_ahead():
    """Changing bar k's high/low cannot change the label of any bar t >= k (entry bar unchecked, no look-back)."""
    rng = np.random.default_rng(7)
    close, high, low, vol = grid_series(rng, 300)
    vol = np.full(300, 0.02)
    base = as_tuples(triple_barrier_labels(close, high, low, vol, 10, 1.0, 1.0))
    for k in (0, 50, 150, 299):
        high2, low2 = high.copy(), low.copy()
        high2[k], low2[k] = 1e9, 1e-9                       # would touch everything if it were checked
        moved = as_tuples(triple_barrier_labels(close, high2, low2, vol, 10, 1.0, 1.0))
        assert_same(moved[k:], base[k:])
        if k > 0:                                           # ... while the bar before does see it (a tie: stop)
            assert moved[k - 1][2:] == (k, HIT_STOP)


def test_series_end_and_segment_end_conventions():
    close = [100.0, 101, 102, 103, 104]
    res = triple_barrier_labels(close, close, close, [0.25] * 5, 3, 1.0, 1.0)
    assert res.barrier_hit.tolist() == [HIT_VERTICAL, HIT_VERTICAL, HIT_NONE, HIT_NONE, HIT_NONE]
    assert res.label_end_index.tolist()[2:] == [-1, -1, -1] and np.isnan(res.realised_return[2:]).all()
    # López de Prado's fill (vertical barrier at the last bar) via a segment covering the whole series
    res = triple_barrier_labels(close, close, close, [0.25] * 5, 3, 1.0, 1.0, segment_end_index=[4] * 5)
    assert res.barrier_hit.tolist() == [HIT_VERTICAL, HIT_VERTICAL, HIT_SEGMENT_END, HIT_SEGMENT_END, HIT_NONE]
    assert res.label_end_index.tolist() == [3, 4, 4, 4, -1]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="horizon"):
        triple_barrier_labels([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.1, 0.1], 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="profit_mult"):
        triple_barrier_labels([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.1, 0.1], 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="volatility has 1 values"):
        triple_barrier_labels([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.1], 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="touch"):
        triple_barrier_labels([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.1, 0.1], 1, 1.0, 1.0, touch="open")


# ---------------------------------------------------------------- frames
def toy_bars(n_sessions=4, bars_per_session=60, seed=0):
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2025-09-01", periods=n_sessions)
    ts = [pd.Timestamp(d.date()).tz_localize(IST) + pd.Timedelta(hours=9, minutes=15 + i)
          for d in days for i in range(bars_per_session)]
    n = len(ts)
    close = 24500.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({"timestamp": pd.DatetimeIndex(ts).tz_convert("UTC"), "open": open_,
                         "high": np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0005, n))),
                         "low": np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0005, n))),
                         "close": close, "total_oi": rng.integers(10**6, 2 * 10**6, n).astype(float)})


def test_define_triple_barrier_target_matches_reference():
    bars = toy_bars()
    cfg = LabelConfig()
    out = define_triple_barrier_target(bars, cfg)
    vol = atr_volatility(bars.high, bars.low, bars.close, cfg.vol_window)
    seg = segment_end_from_ids(bars.timestamp.dt.tz_convert(IST).dt.date)
    want = reference_triple_barrier(bars.close.to_numpy(), bars.high.to_numpy(), bars.low.to_numpy(), vol,
                                    cfg.horizon_bars, cfg.profit_mult, cfg.stop_mult, seg=seg,
                                    closed=seg < len(bars) - 1)        # no exchange column: the last session's close is unknown
    for t, (lab, ret, end, hit) in enumerate(want):
        row = out.iloc[t]
        if hit == -1:
            assert pd.isna(row.tb_label) and pd.isna(row.target) and pd.isna(row.label_end_time)
        else:
            assert row.tb_label == lab and row.tb_return == ret and row.barrier_hit == hit
            assert row.label_end_time == bars.timestamp.iloc[end]
            assert row.target == {1: "BUY", -1: "SELL", 0: "HOLD"}[lab]
    assert out.columns[:len(bars.columns)].tolist() == bars.columns.tolist()


def test_session_segments_flag():
    bars = toy_bars(n_sessions=2, bars_per_session=30)
    inside = define_triple_barrier_target(bars, LabelConfig(horizon_bars=10))
    crossing = define_triple_barrier_target(bars, LabelConfig(horizon_bars=10, session_segments=False))
    day = lambda s: s.dt.tz_convert(IST).dt.date
    ok = inside.label_end_time.notna()
    assert (day(inside.label_end_time[ok]) == day(bars.timestamp[ok])).all()
    assert (day(crossing.label_end_time.dropna()) != day(bars.timestamp[crossing.label_end_time.notna()])).any()
    # an explicit session_date column wins over the IST calendar date: two days as one session, closed by a third
    third = toy_bars(n_sessions=3, bars_per_session=30)
    joint = define_triple_barrier_target(third.assign(session_date=np.r_[[1] * 60, [2] * 30]), LabelConfig(horizon_bars=10))
    has = joint.label_end_time[:30].notna()
    assert (day(joint.label_end_time[:30][has]) != day(third.timestamp[:30][has])).any()     # crosses the IST day
    assert (joint.label_end_time[:60].dropna() <= third.timestamp[59]).all()                  # never leaves its session
    assert (joint.barrier_hit[50:59] == HIT_SEGMENT_END).any()      # the session closed: forced exits at its last bar


def test_frame_errors_name_column_and_row():
    bars = toy_bars(n_sessions=1, bars_per_session=10)
    bad = bars.copy()
    bad.loc[4, "high"] = np.nan
    with pytest.raises(ValueError, match=r"'high'.*row 4"):
        check_bar_frame(bad)
    with pytest.raises(ValueError, match=r"'high' is below 'low' at row 2"):
        check_bar_frame(bars.assign(high=np.where(np.arange(10) == 2, bars.low - 1, bars.high)))
    dup = pd.concat([bars.iloc[:3], bars.iloc[2:]], ignore_index=True)
    with pytest.raises(ValueError, match="strictly increasing at row 3"):
        define_triple_barrier_target(dup)


def test_forward_returns_and_changes_match_pandas_shift():
    bars = toy_bars(n_sessions=3, bars_per_session=40)
    day = bars.timestamp.dt.tz_convert(IST).dt.date
    seg = segment_end_from_ids(day)
    fr = forward_returns(bars.close, (1, 3, 30), segment_end_index=seg)
    fc = forward_changes(bars.total_oi, (3, 30), segment_end_index=seg)
    for h in (1, 3, 30):
        want = bars.close.groupby(day).shift(-h) / bars.close - 1
        pd.testing.assert_series_equal(fr[f"fwd_ret_{h}"], want, check_names=False)
    for h in (3, 30):
        want = bars.total_oi.groupby(day).shift(-h) - bars.total_oi
        pd.testing.assert_series_equal(fc[f"fwd_oi_chg_{h}"], want, check_names=False)
    plain = forward_returns(bars.close, (5,))
    pd.testing.assert_series_equal(plain.fwd_ret_5, bars.close.shift(-5) / bars.close - 1, check_names=False)


def reference_breakout(high, low, day, last_closed=False):
    """Per bar (broke, direction, end index or -1), scanning to the session end for a new extreme; without one, 0 only
    when the session closed (a later one follows, or `last_closed`)."""
    n, out = len(high), []
    starts = [i for i in range(n) if i == 0 or day[i] != day[i - 1]]
    for t in range(n):
        s = max(i for i in starts if i <= t)
        prev = [i for i in starts if i < s]
        end = next((i - 1 for i in starts if i > t), n - 1)
        if not prev or end <= t:
            out.append((0, 0, -1))
            continue
        up = max(max(high[prev[-1]:s]), max(high[s:t + 1]))
        down = min(min(low[prev[-1]:s]), min(low[s:t + 1]))
        hit = next((j for j in range(t + 1, end + 1) if high[j] > up or low[j] < down), None)
        if hit is None:
            out.append((0, 0, end) if end < n - 1 or last_closed else (0, 0, -1))
        else:
            u, d = high[hit] > up, low[hit] < down
            out.append((1, 1 if u and not d else -1 if d and not u else 0, hit))
    return out


def test_breakout_targets_match_reference():
    bars = toy_bars(n_sessions=4, bars_per_session=25, seed=3)
    day = bars.timestamp.dt.tz_convert(IST).dt.date.tolist()
    want = reference_breakout(bars.high.tolist(), bars.low.tolist(), day)
    cfg = LabelConfig()
    broke, direction = make_target("breakout_day", bars, cfg), make_target("breakout_direction", bars, cfg)
    for t, (b, d, end) in enumerate(want):
        if end < 0:
            assert pd.isna(broke.target[t]) and pd.isna(direction.target[t]) and pd.isna(broke.label_end_time[t])
        else:
            assert (broke.target[t], direction.target[t]) == (b, d), t
            assert broke.label_end_time[t] == direction.label_end_time[t] == bars.timestamp[end]
    upper, _ = breakout_levels(bars)
    assert np.isnan(upper[:25]).all() and (upper[25:] >= bars.high[25:]).all()


def test_regime_target_matches_rowwise_rules():
    bars = toy_bars(n_sessions=2, bars_per_session=80, seed=5)
    cfg = LabelConfig(regime_bars=10, vol_window=10, session_segments=False)
    out = make_target("regime", bars, cfg).target
    close = bars.close.to_numpy()
    trailing = (bars.close.pct_change().ewm(span=10, min_periods=10).std()).to_numpy()
    for t in range(len(close)):
        if t + 10 >= len(close) or not np.isfinite(trailing[t]):
            assert pd.isna(out[t])
            continue
        r = [close[j] / close[j - 1] - 1 for j in range(t + 1, t + 11)]
        fwd_vol, fwd_ret = math.sqrt(sum(x * x for x in r) / 10), close[t + 10] / close[t] - 1
        thr = trailing[t] * math.sqrt(10)
        want = ("high_vol" if fwd_vol > 1.5 * trailing[t] else "bull" if fwd_ret > thr
                else "bear" if fwd_ret < -thr else "sideways")
        assert out[t] == want, t


def test_every_registered_target_has_future_end_times():
    bars = toy_bars()
    cfg = LabelConfig(oi_column="total_oi")
    for name in TARGETS:
        out = make_target(name, bars, cfg)
        has = out.target.notna()
        assert has.any() and (has == out.label_end_time.notna()).all(), name
        assert (out.label_end_time[has] > bars.timestamp[has]).all(), name


def test_labels_frame_columns():
    bars = toy_bars(n_sessions=2)
    cfg = LabelConfig(oi_column="total_oi", forward_horizons=(2, 7))
    lf = labels_frame(bars, cfg)
    assert lf.columns.is_unique and len(lf) == len(bars)
    for name in label_names(cfg):
        assert name in lf.columns and f"{name}_label_end_time" in lf.columns
    assert "fwd_ret_7" in lf.columns and "fwd_oi_chg_2" in lf.columns and "fwd_ret_30" not in lf.columns
    with pytest.raises(ValueError, match="unknown target"):
        make_target("fwd_ret_0", bars, cfg)


# ---------------------------------------------------------------- meta-labels
def test_meta_labels_follow_the_side_reference():
    rng = np.random.default_rng(11)
    close, high, low, vol = grid_series(rng, 400)
    side = rng.choice([1.0, -1.0, 0.0], 400)
    m = meta_labels(close, high, low, vol, side, 8, 1.5, 1.0)
    ref = reference_triple_barrier(close, high, low, vol, 8, 1.5, 1.0, side)
    assert m.meta_label.tolist() == [1 if hit == 1 else 0 for _, _, _, hit in ref]
    assert m.has_label.tolist() == [hit != -1 for _, _, _, hit in ref]
    pos = meta_labels(close, high, low, vol, side, 8, 1.5, 1.0, rule="positive_return")
    assert pos.meta_label.tolist() == [1 if hit != -1 and ret > 0 else 0 for _, ret, _, hit in ref]


def test_define_meta_labels_frame():
    bars = toy_bars(n_sessions=2)
    side = np.where(np.arange(len(bars)) % 3 == 0, 0.0, 1.0)
    out = define_meta_labels(bars, side)
    assert out.meta_label[side == 0].isna().all()
    assert ((out.meta_label == 1) == (out.barrier_hit == HIT_PROFIT)).all()
    with pytest.raises(ValueError, match="shape"):
        define_meta_labels(bars, side[:-1])


# ---------------------------------------------------------------- sample weights
def reference_uniqueness(start, end, n_bars):
    """AFML snippets 4.1-4.2 as a quadratic loop."""
    conc = [sum(1 for s, e in zip(start, end) if e >= 0 and s <= b <= e) for b in range(n_bars)]
    avg = [NAN if e < 0 else sum(1.0 / conc[b] for b in range(s, e + 1)) / (e - s + 1) for s, e in zip(start, end)]
    return conc, avg


@settings(max_examples=100, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), max_len=st.integers(0, 20))
def test_uniqueness_matches_quadratic_reference(seed, n, max_len):
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 80, n)                                  # unsorted, with duplicates
    end = start + rng.integers(0, max_len + 1, n)
    end[rng.random(n) < 0.15] = -1
    n_bars = 100
    conc, avg = reference_uniqueness(start.tolist(), end.tolist(), n_bars)
    assert label_concurrency(start, end, n_bars).tolist() == conc
    np.testing.assert_allclose(average_uniqueness(start, end, n_bars), avg, rtol=1e-12, equal_nan=True)


def reference_time_decay(u, oldest_weight):
    """AFML snippet 4.11 with pandas, labels already in start order."""
    cum = pd.Series(u).dropna().cumsum()
    slope = (1 - oldest_weight) / cum.iloc[-1] if oldest_weight >= 0 else 1 / ((oldest_weight + 1) * cum.iloc[-1])
    w = (1 - slope * cum.iloc[-1]) + slope * cum
    return w.clip(lower=0).reindex(range(len(u))).to_numpy()


@pytest.mark.parametrize("oldest_weight", [1.0, 0.5, 0.0, -0.3])
def test_time_decay_matches_afml(oldest_weight):
    rng = np.random.default_rng(3)
    u = rng.uniform(0.1, 1.0, 50)
    u[[4, 17]] = np.nan
    np.testing.assert_allclose(time_decay_weights(u, oldest_weight=oldest_weight), reference_time_decay(u, oldest_weight),
                               rtol=1e-12, equal_nan=True)


def test_sample_weights_of_a_labelled_frame():
    bars = toy_bars(n_sessions=2)
    tb = define_triple_barrier_target(bars)
    sw = sample_weights(bars.timestamp, tb.label_end_time)
    ok = tb.label_end_time.notna().to_numpy()
    end = np.array([bars.timestamp.tolist().index(x) if isinstance(x, pd.Timestamp) else -1 for x in tb.label_end_time])
    _, avg = reference_uniqueness(list(range(len(bars))), end.tolist(), len(bars))
    np.testing.assert_allclose(sw.avg_uniqueness, avg, rtol=1e-12, equal_nan=True)
    assert np.isclose(sw.sample_weight[ok].mean(), 1.0) and sw.sample_weight[~ok].isna().all()


# ---------------------------------------------------------------- daily bars
def test_daily_bars_are_labelled_across_sessions_and_no_label_at_all_is_named():
    """A daily bar is its session's only bar: labelled inside its session no row had a label (and training crashed on
    the empty table). Bars as long as the session are labelled across sessions; a target with no label is a ValueError."""
    from oi_ml.labels import labels_for_bars, require_labels
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2024-01-01", periods=120)
    close = 21000 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    frame = pd.DataFrame({"timestamp": (days + pd.Timedelta(hours=9, minutes=15)).tz_localize(IST).tz_convert("UTC"),
                          "high": close * 1.005, "low": close * 0.995, "close": close})
    cfg = LabelConfig(horizon_bars=15)
    assert make_target("triple_barrier", frame, cfg).target.isna().all()   # what session segments do to daily bars
    with pytest.raises(ValueError, match=r"target 'triple_barrier' over 120 bars in 120 session\(s\): no row has a label: .* "
                                         r"longest session holds 1 bar\(s\).* bar_minutes"):
        require_labels("triple_barrier", frame, cfg, make_target("triple_barrier", frame, cfg))
    daily = labels_for_bars(cfg, bar_minutes=375, session_minutes=375)
    assert daily.session_segments is False and labels_for_bars(cfg, bar_minutes=5, session_minutes=375) is cfg
    for name in ("triple_barrier", "direction", "fwd_ret_5", "range_breach"):
        out = require_labels(name, frame, daily, make_target(name, frame, daily))
        assert out.target.notna().sum() > 90, name
        ok = out.label_end_time.notna()
        assert (out.label_end_time[ok] > frame.timestamp[ok]).all()


# ---------------------------------------------------------------- data that stops inside a session (review finding)
def named_sessions(n_sessions=3, exchange="NSE", seed=0):
    """Whole one-minute NSE sessions (09:15-15:29 IST) named by the `exchange` column, as a dataset's rows are."""
    return toy_bars(n_sessions=n_sessions, bars_per_session=375, seed=seed).assign(exchange=exchange)


def assert_cut_only_removes(full, cut_rows, cfg):
    """Every label of the first `cut_rows` bars alone is the full series' label of that row (value and end time)."""
    cut = full.iloc[:cut_rows]
    for name in label_names(cfg):
        a, b = make_target(name, cut, cfg), make_target(name, full, cfg).iloc[:cut_rows]
        has = a.target.notna()
        assert (has == a.label_end_time.notna()).all(), name
        wrong = has & ((a.target.astype(str) != b.target.astype(str)) | (a.label_end_time != b.label_end_time))
        assert not wrong.any(), (f"{name}: row {int(np.flatnonzero(wrong)[0])} labelled {a.target[wrong].iloc[0]} ending "
                                 f"{a.label_end_time[wrong].iloc[0]} with the data cut at row {cut_rows}, "
                                 f"{b.target[wrong].iloc[0]} ending {b.label_end_time[wrong].iloc[0]} with the whole session")
    side = np.random.default_rng(1).choice([-1.0, 1.0], len(full))
    a, b = define_meta_labels(cut, side[:cut_rows], cfg), define_meta_labels(full, side, cfg).iloc[:cut_rows]
    has = a.meta_label.notna()
    assert a.meta_label[has].equals(b.meta_label[has]) and a.label_end_time[has].equals(b.label_end_time[has])


@pytest.mark.parametrize("cut_rows", [375 * 2 + 165, 375 * 2 + 7, 375 + 300, 375 * 2 + 374])
def test_a_series_cut_inside_a_session_gets_no_guessed_label(cut_rows):
    """Review finding: with session segments the last bars of data that stops mid-session (an export of an unfinished
    day, an explicit end at noon) were force-exited at the last bar as if the session had closed (HOLD, segment_end) and
    breakout targets said 'no breakout before the close'; later bars then changed those labels. A cut only removes."""
    full, cfg = named_sessions(), LabelConfig(oi_column="total_oi")
    assert_cut_only_removes(full, cut_rows, cfg)
    tb = make_target("triple_barrier", full.iloc[:cut_rows], cfg)
    last_session = np.arange(cut_rows) >= cut_rows // 375 * 375
    assert not (tb.barrier_hit[last_session] == HIT_SEGMENT_END).any()
    assert (tb.barrier_hit[~last_session] == HIT_SEGMENT_END).any()       # sessions followed by another still close


def test_a_session_is_closed_by_its_exchange_close_and_unknown_without_an_exchange():
    full, cfg = named_sessions(n_sessions=2), LabelConfig()
    whole = make_target("triple_barrier", full, cfg)
    assert (whole.barrier_hit[375:] == HIT_SEGMENT_END).any()                   # ran to 15:29: the close is a real exit
    anonymous = make_target("triple_barrier", full.drop(columns="exchange"), cfg)
    assert not (anonymous.barrier_hit[375:] == HIT_SEGMENT_END).any()           # no exchange: no known close
    other = make_target("triple_barrier", full.assign(exchange="LSE"), cfg)   # a venue without an ExchangeConfig
    assert not (other.barrier_hit[375:] == HIT_SEGMENT_END).any()
    assert_cut_only_removes(full.drop(columns="exchange"), 375 * 2, cfg)
    from oi_ml.labels import session_closed
    assert session_closed(full).all()                                          # the last session ran to 15:29
    cut = session_closed(full.iloc[:-1])                                        # the 15:29 bar missing: unfinished
    assert cut[:375].all() and not cut[375:].any()


def special_session_frame(day, opens, closes):
    """A whole regular NSE session on the trading day before `day`, then `day`'s special session [opens, closes) IST."""
    regular = named_sessions(n_sessions=1)
    before = (pd.Timestamp(day) - pd.offsets.BDay(1)).strftime("%Y-%m-%d")
    regular["timestamp"] = pd.date_range(f"{before} 09:15", periods=375, freq="min", tz=IST).tz_convert("UTC")
    hour = pd.date_range(f"{day} {opens}", f"{day} {closes}", freq="min", tz=IST, inclusive="left").tz_convert("UTC")
    rng = np.random.default_rng(4)
    close = regular.close.iloc[-1] * np.exp(np.cumsum(rng.normal(0, 0.001, len(hour))))
    special = pd.DataFrame({"timestamp": hour, "open": close, "high": close * 1.0004, "low": close * 0.9996,
                            "close": close, "total_oi": 1e6, "exchange": "NSE"})
    return pd.concat([regular, special], ignore_index=True)


def test_special_sessions_close_at_their_own_close():
    """The 2024 Muhurat hour (18:00-19:00 IST) runs past the regular 15:30 close: cut at 18:30 it is unfinished, run to
    18:59 it closed; the 2025 one closes at 14:45, before the regular close, and counts as closed there."""
    cfg, vertical_only = LabelConfig(), LabelConfig(profit_mult=math.inf, stop_mult=math.inf)   # no touch: every exit is timed
    muhurat = special_session_frame("2024-11-01", "18:00", "19:00")
    whole = make_target("triple_barrier", muhurat, vertical_only)
    assert (whole.barrier_hit[-5:-1] == HIT_SEGMENT_END).all()                # closed at 19:00: forced exits at 18:59
    cut = make_target("triple_barrier", muhurat.iloc[:375 + 30], vertical_only)
    assert cut.barrier_hit[-6:].tolist() == [HIT_VERTICAL] + [HIT_NONE] * 5   # cut at 18:29, past 15:30: unfinished
    assert_cut_only_removes(muhurat, 375 + 30, cfg)
    from oi_ml.labels import session_closed
    assert session_closed(muhurat).all()
    early = special_session_frame("2025-10-21", "13:45", "14:45")
    assert session_closed(early).all() and not session_closed(early.iloc[:-1])[375:].any()


# ---------------------------------------------------------------- every session judged by its own close (review finding)
def bars_at(days_and_times, exchange="NSE", seed=5):
    """Bars at the given IST (day, start, end, freq) runs, inclusive of `end`, as one frame named by `exchange`."""
    ts = pd.DatetimeIndex(pd.concat([pd.Series(pd.date_range(f"{d} {a}", f"{d} {b}", freq=f, tz=IST).tz_convert("UTC"))
                                     for d, a, b, f in days_and_times], ignore_index=True))
    rng = np.random.default_rng(seed)
    close = 24500.0 * np.exp(np.cumsum(rng.normal(0, 0.001, len(ts))))
    return pd.DataFrame({"timestamp": ts, "open": close, "high": close * 1.0004, "low": close * 0.9996, "close": close,
                         "total_oi": rng.integers(10**6, 2 * 10**6, len(ts)).astype(float), "exchange": exchange})


@pytest.mark.parametrize("cut_end", ["12:00", "15:00", "15:28"])
def test_a_session_cut_short_is_unfinished_even_when_a_later_session_follows(cut_end):
    """Review finding: only the frame's last session was checked against the exchange's close; any session followed by
    another counted as closed, although its data stopped mid-session (a feed outage, a halt). Its rows were force-exited
    at the cut (HOLD, segment_end) and breakout_day read 'no breakout before the close' for every row, the very guess
    that the same day as the frame's last was spared. A session is now judged the same wherever it stands."""
    full, cut = ("2025-08-01", "09:15", "15:29", "min"), ("2025-08-04", "09:15", cut_end, "min")
    followed = bars_at([full, cut, ("2025-08-05", "09:15", "15:29", "min")])
    n = len(followed) - 375
    alone = followed.iloc[:n]                                       # the same bars, the cut day last
    cfg = LabelConfig(oi_column="total_oi")
    for name in label_names(cfg):                                   # the day after the cut changes nothing before it
        a, b = make_target(name, alone, cfg), make_target(name, followed, cfg).iloc[:n]
        pd.testing.assert_frame_equal(a, b, obj=f"target {name!r} of the bars up to the cut at {cut_end}")
    side = np.random.default_rng(2).choice([-1.0, 1.0], len(followed))
    pd.testing.assert_frame_equal(define_meta_labels(alone, side[:n], cfg), define_meta_labels(followed, side, cfg).iloc[:n])
    tb = make_target("triple_barrier", followed, cfg)
    assert not (tb.barrier_hit[375:n] == HIT_SEGMENT_END).any()     # no forced exit at the cut
    assert (tb.barrier_hit[:375] == HIT_SEGMENT_END).any() and (tb.barrier_hit[n:] == HIT_SEGMENT_END).any()
    assert not (make_target("breakout_day", followed, cfg).target[375:n] == 0).any()   # 'no breakout before the close' unknown
    from oi_ml.labels import session_closed
    closed = session_closed(followed)
    assert closed[:375].all() and not closed[375:n].any() and closed[n:].all()


def test_a_halted_session_counts_as_closed_only_where_its_data_reaches_the_close():
    """NSE halted on 24 Feb 2021 at 11:40 IST and traded again from 15:45 to 17:00: data with the evening bars ran to
    (past) the close; data that stops at the halt is unfinished although the next day follows."""
    from oi_ml.labels import session_closed
    day_after = ("2021-02-25", "09:15", "15:29", "min")
    resumed = bars_at([("2021-02-24", "09:15", "11:39", "min"), ("2021-02-24", "15:45", "16:59", "min"), day_after])
    assert session_closed(resumed).all()
    stopped = bars_at([("2021-02-24", "09:15", "11:39", "min"), day_after])
    assert not session_closed(stopped)[:145].any() and session_closed(stopped)[145:].all()


def test_a_muhurat_hour_is_judged_by_its_own_close_between_regular_days():
    """The 2024 Muhurat hour (1 Nov, 18:00-19:00 IST) between two regular days: run to 18:59 it closed; cut at 18:30
    it is unfinished, although 4 Nov follows (it had been force-exited at 18:30)."""
    from oi_ml.labels import session_closed
    before, after = ("2024-10-31", "09:15", "15:29", "min"), ("2024-11-04", "09:15", "15:29", "min")
    assert session_closed(bars_at([before, ("2024-11-01", "18:00", "18:59", "min"), after])).all()
    cut = bars_at([before, ("2024-11-01", "18:00", "18:30", "min"), after])
    closed = session_closed(cut)
    assert closed[:375].all() and not closed[375:375 + 31].any() and closed[375 + 31:].all()
    vertical_only = LabelConfig(profit_mult=math.inf, stop_mult=math.inf)
    tb = make_target("triple_barrier", cut, vertical_only)
    assert tb.barrier_hit[375 + 25:375 + 31].tolist() == [HIT_VERTICAL] + [HIT_NONE] * 5   # 18:25 reaches 18:30; then unknown
    # regular hours that a synthetic calendar put on the Muhurat date end before the hour opens: the regular close judges
    regular = bars_at([before, ("2024-11-01", "09:15", "15:29", "min"), after])
    assert session_closed(regular).all() and not session_closed(regular.iloc[:375 + 300])[375:].any()


# (bar length, the last bar of a full session: simulator (whole bars only), ingest (keeps the partial bar), bar-end stamps)
BAR_GRIDS = [("1min", "15:29", "09:15"), ("1min", "15:30", "09:16"), ("5min", "15:25", "09:15"), ("5min", "15:30", "09:20"),
             ("10min", "15:15", "09:15"), ("10min", "15:25", "09:15"), ("15min", "15:15", "09:15"),
             ("30min", "14:45", "09:15"), ("30min", "15:15", "09:15"), ("60min", "14:15", "09:15"), ("60min", "15:15", "09:15")]


@pytest.mark.parametrize("freq,last,first", BAR_GRIDS)
def test_every_full_session_closes_at_every_bar_length_and_one_cut_two_bars_short_does_not(freq, last, first):
    """Full sessions close wherever they stand (the simulator's 10/30/60-minute sessions end with the last whole bar,
    15:15/14:45/14:15, and had left the frame's last session unfinished); a session two bars short of that is
    unfinished wherever it stands, the frame's last or not."""
    from oi_ml.labels import last_session_closed, session_closed
    days = ["2025-08-04", "2025-08-05", "2025-08-06"]
    full = bars_at([(d, first, last, freq) for d in days])
    assert session_closed(full).all() and last_session_closed(full)
    short = (pd.Timestamp(f"2025-08-05 {last}") - 2 * pd.Timedelta(freq)).strftime("%H:%M")
    cut = bars_at([(days[0], first, last, freq), (days[1], first, short, freq), (days[2], first, last, freq)])
    per_session = pd.Series(session_closed(cut)).groupby(cut.timestamp.dt.tz_convert(IST).dt.date.to_numpy()).agg(["all", "any"])
    assert per_session["all"].tolist() == [True, False, True] and per_session["any"].tolist() == [True, False, True]
    assert not last_session_closed(cut.iloc[:-int(len(full) / 3)])


def test_without_an_exchange_a_later_session_still_closes_the_one_before():
    """No exchange, no known close: the documented fallback keeps 'a later session follows' (and the last one open)."""
    from oi_ml.labels import session_closed
    frame = bars_at([("2025-08-04", "09:15", "15:29", "min"), ("2025-08-05", "09:15", "12:00", "min"),
                     ("2025-08-06", "09:15", "15:29", "min")]).drop(columns="exchange")
    closed = session_closed(frame)
    assert closed[:-375].all() and not closed[-375:].any()


# ---------------------------------------------------------------- bad prices and bad time order (review findings)
def test_a_close_or_open_outside_the_bar_range_is_refused_naming_row_and_values():
    """Review finding: check_bar_frame accepted a close above the high; the triple barrier then exited at that close,
    beyond a profit barrier the bar's extremes never touched (HOLD with a return past the barrier)."""
    bars = toy_bars(n_sessions=1, bars_per_session=10)
    high = bars.high.to_numpy()
    with pytest.raises(ValueError, match=r"column 'close' lies outside the bar's \[low, high\] at row 3 \(index 3\): close "
                                         rf"{float(high[3] + 5)!r}, low .*, high {float(high[3])!r}.*fix or drop the bar"):
        make_target("triple_barrier", bars.assign(close=np.where(bars.index == 3, high + 5, bars.close)))
    with pytest.raises(ValueError, match=r"column 'close' lies outside .* at row 2"):
        check_bar_frame(bars.assign(close=np.where(bars.index == 2, bars.low * 0.99, bars.close)))
    with pytest.raises(ValueError, match=r"column 'open' lies outside .* at row 1"):
        define_meta_labels(bars.assign(open=np.where(bars.index == 1, high * 2, bars.open)), np.ones(10))
    check_bar_frame(bars.assign(open=np.nan))                   # a missing open: no label reads it
    check_bar_frame(bars.assign(close=bars.high))               # the range's ends are inside it


def test_sample_weights_refuse_rows_out_of_time_order():
    """Review finding: sample weights take row position as time; unsorted timestamps gave silently wrong uniqueness and
    duplicates a bare pandas InvalidIndexError."""
    ts = pd.Series(pd.date_range("2025-01-06 03:45", periods=5, freq="1min", tz="UTC"))
    ends = pd.Series([ts[2], ts[3], ts[3], ts[4], pd.NaT])
    perm = [0, 2, 1, 3, 4]
    with pytest.raises(ValueError, match=r"'timestamp' is not strictly increasing at row 2 \(index 2\): .* sort the bars"):
        sample_weights(ts[perm].reset_index(drop=True), ends[perm].reset_index(drop=True))
    with pytest.raises(ValueError, match=r"'timestamp' is not strictly increasing at row 2"):
        sample_weights(pd.Series([ts[0], ts[1], ts[1], ts[3], ts[4]]), ends)
    with pytest.raises(ValueError, match=r"label_end_time has 4 rows, timestamp has 5"):
        sample_weights(ts, ends[:4])
    np.testing.assert_allclose(sample_weights(ts, ends).avg_uniqueness, [11 / 18, 7 / 18, 1 / 3, 2 / 3, NAN], rtol=1e-12)


def test_a_nan_close_at_the_exit_bar_gives_no_label():
    """Review finding: a NaN close at a vertical (or session-end) exit gave a decided label with a NaN return
    (has_label True; positive_return meta-label 0)."""
    close, flat = [100.0, 100.0, NAN, 100.0], [100.0] * 4
    res = triple_barrier_labels(close, flat, flat, [0.25] * 4, 2, 1.0, 1.0)
    assert res.barrier_hit[0] == HIT_NONE and not res.has_label[0] and res.label_end_index[0] == -1
    res = triple_barrier_labels([100.0, 100.0, 100.0, NAN], flat, flat, [0.25] * 4, 3, 1.0, 1.0, segment_end_index=[3] * 4)
    assert res.barrier_hit.tolist()[:3] == [HIT_NONE] * 3                        # session-end exits at a NaN close
    m = meta_labels(close, flat, flat, [0.25] * 4, [1.0] * 4, 2, 1.0, 1.0, rule="positive_return")
    assert not m.has_label[0] and m.meta_label[0] == 0

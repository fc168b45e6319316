"""Backtest engine: a hand-made path with known P&L and costs, fills that never use the signal bar or later, limits."""
import numpy as np
import pandas as pd
import pytest

from oi_ml.backtest import BacktestConfig, run_backtest


def _bars(n_sessions=1, per_session=30, seed=None, start="2025-08-04"):
    days = pd.bdate_range(start, periods=n_sessions)
    ts = pd.DatetimeIndex([pd.Timestamp(f"{d.date()} 09:15", tz="Asia/Kolkata") + pd.Timedelta(minutes=i)
                           for d in days for i in range(per_session)]).tz_convert("UTC")
    n = len(ts)
    if seed is None:
        open_ = 100.0 + np.arange(n)
    else:
        open_ = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.002, n)))
    close = open_ + 0.5
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": np.maximum(open_, close) + 0.2,
                         "low": np.minimum(open_, close) - 0.2, "close": close})


def _signals(n, at=(), side=1, confidence=0.9):
    s = np.zeros(n, dtype=np.int64)
    for i in at: s[i] = side
    return pd.DataFrame({"signal": s, "confidence": confidence})


def test_hand_made_trade_has_the_exact_pnl_costs_and_fill_times():
    bars = _bars(per_session=10)
    cfg = BacktestConfig(exchange="NSE", holding_period_minutes=3, transaction_cost_bps=2.0, slippage_bps=1.0, min_confidence=0.5,
                         account_size=1_000_000.0, margin_per_lot=100_000.0, max_risk_per_trade=0.2, sizing="fixed")
    res = run_backtest(bars, _signals(len(bars), at=[2]), cfg)
    t = res.trades.iloc[0]
    assert len(res.trades) == 1
    # signal at bar 2 -> filled at bar 3's open (103), held 3 bars -> out at bar 6's open (106)
    assert t.entry_price == 103.0 and t.exit_price == 106.0
    assert t.entry_time == bars.timestamp[3] and t.exit_time == bars.timestamp[6]
    # fixed sizing without barriers: 0.2 x 1,000,000 / 100,000 margin per lot = 2 lots of 75 (NIFTY, Aug 2025)
    assert t.lots == 2 and t.lot_size == 75
    assert np.isclose(t.gross_pnl, (106 - 103) * 2 * 75)
    assert np.isclose(t.costs, 3e-4 * (103 * 150 + 106 * 150))                   # 3 bps of each leg's notional
    assert np.isclose(t.net_pnl, t.gross_pnl - t.costs)
    assert np.isclose(res.equity_curve.equity_net.iloc[-1], 1_000_000 + t.net_pnl)


def test_fills_never_use_the_signal_bar_or_later_information():
    bars = _bars(n_sessions=2, per_session=120, seed=1)
    rng = np.random.default_rng(2)
    sig = pd.DataFrame({"signal": rng.choice([-1, 0, 0, 1], len(bars)), "confidence": rng.uniform(0.5, 1, len(bars))})
    cfg = BacktestConfig(exchange="NSE", holding_period_minutes=5, min_confidence=0.6, max_open_positions=2,
                         margin_per_lot=50_000.0, max_risk_per_trade=0.2)
    base = run_backtest(bars, sig, cfg).trades
    assert len(base) > 10
    for cut in (40, 100, 170):
        future = bars.copy()
        later = future.index > cut                      # everything after bar `cut` changes, bar `cut` itself too except its open
        noise = np.random.default_rng(cut).normal(0, 0.01, later.sum())
        for c in ("open", "high", "low", "close"): future.loc[later, c] *= np.exp(noise)
        future.loc[cut, ["high", "low", "close"]] = future.loc[cut, ["high", "low", "close"]] * 1.01
        future["high"] = future[["open", "high", "close"]].max(axis=1); future["low"] = future[["open", "low", "close"]].min(axis=1)
        moved = run_backtest(future, sig, cfg).trades
        # every trade whose entry fill is at or before bar `cut`'s open is entered identically
        known = base[base.entry_time <= bars.timestamp[cut]]
        same = moved[moved.entry_time <= bars.timestamp[cut]]
        pd.testing.assert_frame_equal(known[["timestamp", "side", "entry_time", "entry_price"]].reset_index(drop=True),
                                      same[["timestamp", "side", "entry_time", "entry_price"]].reset_index(drop=True))


def test_the_signal_bars_close_never_sets_the_fill_price():
    bars = _bars(per_session=20)
    cfg = BacktestConfig(exchange="NSE", holding_period_minutes=3, min_confidence=0.5, margin_per_lot=100_000.0, max_risk_per_trade=0.2)
    a = run_backtest(bars, _signals(len(bars), at=[5]), cfg).trades
    shocked = bars.copy(); shocked.loc[5, ["close", "high"]] = [150.0, 150.5]
    b = run_backtest(shocked, _signals(len(bars), at=[5]), cfg).trades
    assert a.entry_price.tolist() == b.entry_price.tolist() == [106.0]


@pytest.mark.parametrize("max_open, cooldown", [(1, 0.0), (1, 7.0), (3, 0.0)])
def test_position_limits_and_cooldown_hold(max_open, cooldown):
    bars = _bars(n_sessions=2, per_session=200, seed=3)
    rng = np.random.default_rng(4)
    sig = pd.DataFrame({"signal": rng.choice([-1, 1], len(bars)), "confidence": 0.9})
    cfg = BacktestConfig(exchange="NSE", holding_period_minutes=10, min_confidence=0.5, max_open_positions=max_open,
                         cooldown_minutes=cooldown, margin_per_lot=50_000.0, max_risk_per_trade=0.2)
    t = run_backtest(bars, sig, cfg).trades.sort_values("entry_time").reset_index(drop=True)
    assert len(t) > 5
    events = sorted([(e, 1) for e in t.entry_time] + [(x, -1) for x in t.exit_time], key=lambda p: (p[0], p[1]))
    open_now, peak = 0, 0
    for _, step in events:
        open_now += step; peak = max(peak, open_now)
    assert peak <= max_open
    if max_open == 1:
        gaps = (t.entry_time.iloc[1:].to_numpy() - t.exit_time.iloc[:-1].to_numpy()) / np.timedelta64(1, "m")
        assert (gaps >= cooldown).all()

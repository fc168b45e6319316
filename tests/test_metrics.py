"""Tests of oi_ml.metrics: hand-computed examples for every metric, the DSR paper example, PBO (CSCV) against hand
cases and a brute-force reference, bootstrap determinism and coverage, grouped metrics and input validation."""
import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oi_ml import metrics as M

SQ2 = math.sqrt(2)


# ---------------------------------------------------------------- return-series metrics, by hand

def test_sharpe_sortino_volatility_by_hand():
    r = [0.02, 0.0, -0.01, 0.03]
    # mean 0.01; deviations .01 -.01 -.02 .02; squares sum 1e-4+1e-4+4e-4+4e-4 = 1e-3; var 1e-3/3; std 0.0182574
    assert M.sharpe_ratio(r) == pytest.approx(0.01 / math.sqrt(1e-3 / 3), rel=1e-12)
    assert M.sharpe_ratio(r, 12) == pytest.approx(0.547723 * math.sqrt(12), rel=1e-6)
    assert M.volatility(r, 12) == pytest.approx(math.sqrt(1e-3 / 3 * 12), rel=1e-12)
    # downside: only -0.01 -> mean of squares 1e-4/4 -> deviation 0.005; Sortino 0.01/0.005 = 2
    assert M.sortino_ratio(r) == pytest.approx(2.0, rel=1e-12)
    assert M.sortino_ratio(r, 4) == pytest.approx(4.0, rel=1e-12)
    # target 0.01 per period: excess .01 -.01 -.02 .02, mean 0; Sortino 0
    assert M.sortino_ratio(r, target_per_period=0.01) == pytest.approx(0.0, abs=1e-12)


def test_annualised_return_and_calmar_by_hand():
    r = [0.1, -0.5, 1.0]  # growth 1.1 * 0.5 * 2 = 1.1
    assert M.annualised_return(r, 3) == pytest.approx(0.1, rel=1e-12)
    assert M.annualised_return(r, 1.5) == pytest.approx(1.1**0.5 - 1, rel=1e-12)
    # equity 1, 1.1, 0.55, 1.1: drawdown 0.5 -> Calmar 0.1 / 0.5
    assert M.calmar_ratio(r, 3) == pytest.approx(0.2, rel=1e-12)
    assert M.calmar_ratio([-0.1], 1) == pytest.approx(-0.1 / 0.1, rel=1e-12)  # first-period loss is a drawdown


def test_sharpe_against_pure_python_reference():
    rng = np.random.default_rng(0)
    r = rng.normal(0.0005, 0.01, 257)
    n = len(r)
    mean = sum(r) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    assert M.sharpe_ratio(r, 252) == pytest.approx(mean / sd * math.sqrt(252), rel=1e-10)
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / n)
    assert M.sortino_ratio(r, 252) == pytest.approx(mean / down * math.sqrt(252), rel=1e-10)


def test_undefined_return_metrics_are_nan_not_errors():
    for f in (M.sharpe_ratio, M.sortino_ratio, M.volatility, M.calmar_ratio, M.annualised_return):
        assert math.isnan(f([]))
    assert math.isnan(M.sharpe_ratio([0.003] * 50))  # zero variance up to rounding
    assert math.isnan(M.max_drawdown([]).max_drawdown) and math.isnan(M.time_under_water([]).fraction)


def test_non_finite_inputs_raise_with_position():
    with pytest.raises(ValueError, match="position 2"):
        M.sharpe_ratio([0.01, 0.0, np.nan])
    with pytest.raises(ValueError, match="position 0"):
        M.time_under_water([-5.0, 1.0])


# ---------------------------------------------------------------- drawdowns vs a loop reference

def _drawdown_reference(eq):
    peak, peak_i, best = eq[0], 0, (0.0, 0, 0)
    under, run, run_start, longest, longest_start = 0, 0, -1, 0, -1
    for i, e in enumerate(eq):
        if e > peak: peak, peak_i = e, i
        dd = 1 - e / peak
        if dd > best[0]: best = (dd, peak_i, i)
        if e < peak:
            under += 1
            run, run_start = run + 1, (i if run == 0 else run_start)
            if run > longest: longest, longest_start = run, run_start
        else:
            run = 0
    return best, (longest, longest_start, under)


@pytest.mark.parametrize("seed", range(5))
def test_drawdown_and_time_under_water_match_loop_reference(seed):
    eq = 100 * np.cumprod(1 + np.random.default_rng(seed).normal(0.0002, 0.01, 400))
    (dd, peak, trough), (longest, start, total) = _drawdown_reference(list(eq))
    got, tuw = M.max_drawdown(eq), M.time_under_water(eq)
    assert got.max_drawdown == pytest.approx(dd, rel=1e-12) and (got.peak, got.trough) == (peak, trough)
    assert (tuw.longest_periods, tuw.longest_start, tuw.total_periods) == (longest, start, total)
    assert tuw.fraction == pytest.approx(total / len(eq))


def test_drawdown_by_hand():
    eq = [50, 60, 30, 45, 60, 61, 40]  # peaks 50 60 60 60 60 61 61; dd 0 0 .5 .25 0 0 .344
    assert M.max_drawdown(eq) == M.Drawdown(0.5, 1, 2)
    assert M.time_under_water(eq) == M.TimeUnderWater(2, 2, 3, 3 / 7)  # at 60 again = recovered


# ---------------------------------------------------------------- trade metrics

def test_trade_metrics_by_hand():
    pnl = [250.0, -100.0, -50.0, 0.0, 150.0, -100.0]
    assert M.profit_factor(pnl) == pytest.approx(400 / 250)
    assert M.hit_rate(pnl) == pytest.approx(2 / 6)
    assert M.average_win(pnl) == pytest.approx(200.0)
    assert M.average_loss(pnl) == pytest.approx(-250 / 3)
    assert M.expectancy(pnl) == pytest.approx(150 / 6)
    assert M.cost_per_trade([12.0, 8.0]) == pytest.approx(10.0)


def test_trade_metric_edge_cases():
    assert M.profit_factor([10.0, 5.0]) == math.inf
    assert math.isnan(M.profit_factor([])) and math.isnan(M.profit_factor([0.0]))
    assert M.profit_factor([-1.0]) == 0.0
    assert math.isnan(M.hit_rate([])) and math.isnan(M.expectancy([]))
    assert M.average_holding_time([], []) is pd.NaT


def test_turnover_and_holding_time_by_hand():
    assert M.turnover([5e5, 5e5, 1e6], capital=2e6, years=2.0) == pytest.approx(2 * 2e6 / 2e6 / 2)
    entry = pd.to_datetime(["2025-08-04 04:00", "2025-08-04 06:00"], utc=True)
    exit_ = pd.to_datetime(["2025-08-04 04:10", "2025-08-05 04:00"], utc=True)  # 10 min and 22 h
    assert M.average_holding_time(entry, exit_) == pd.Timedelta(minutes=(10 + 22 * 60) / 2)


def _exposure_reference(entries, exits, start, end):
    minutes = pd.date_range(start, end, freq="min", inclusive="left")
    return np.mean([any(e <= t < x for e, x in zip(entries, exits)) for t in minutes])


def test_exposure_matches_minute_grid_reference():
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2025-08-04 03:45", tz="UTC")
    entries = start + pd.to_timedelta(rng.integers(-30, 400, 25), unit="min")
    exits = entries + pd.to_timedelta(rng.integers(0, 60, 25), unit="min")
    end = start + pd.Timedelta(minutes=375)
    ref = _exposure_reference(entries, exits, start, end)
    assert M.exposure(entries, exits, start, end) == pytest.approx(ref, abs=1e-12)
    grid = pd.date_range(start, end, freq="min", inclusive="left")
    assert M.exposure_bars(entries, exits, grid) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- tables

def _trades():
    entry = pd.to_datetime(["2025-07-31 19:00", "2025-08-01 04:00", "2025-08-01 06:00", "2025-09-01 04:00"], utc=True)
    return pd.DataFrame({
        "entry_time": entry, "exit_time": entry + pd.Timedelta(hours=1),
        "gross_pnl": [300.0, -80.0, 0.0, 120.0], "costs": [20.0, 20.0, 10.0, 20.0],
        "net_pnl": [280.0, -100.0, -10.0, 100.0], "notional": [2e5, 1e5, 1e5, 1e5],
        "regime": ["calm", "stressed", "stressed", "calm"], "entry_vol": [0.10, 0.30, 0.20, 0.40]})


def test_summarize_trades_without_equity_by_hand():
    s = M.summarize_trades(_trades(), capital=1e6)
    assert s["n_trades"] == 4
    assert s["profit_factor_net"] == pytest.approx(380 / 110) and s["profit_factor_gross"] == pytest.approx(420 / 80)
    assert s["hit_rate_net"] == 0.5 and s["hit_rate_gross"] == 0.5   # gross 0.0 is not a win
    assert s["average_loss_net"] == pytest.approx(-55.0) and s["average_loss_gross"] == pytest.approx(-80.0)
    assert s["expectancy_net"] == pytest.approx(67.5) and s["expectancy_gross"] == pytest.approx(85.0)
    assert s["cost_per_trade"] == pytest.approx(17.5) and s["total_costs"] == pytest.approx(70.0)
    assert s["average_holding_time"] == pd.Timedelta(hours=1)
    span = pd.Timestamp("2025-09-01 05:00", tz="UTC") - pd.Timestamp("2025-07-31 19:00", tz="UTC")
    assert s["exposure"] == pytest.approx(4 * 3600 / span.total_seconds())
    assert s["turnover"] == pytest.approx(2 * 5e5 / 1e6 / (span / pd.Timedelta(days=365.25)))
    assert "sharpe_net" not in s


def test_summarize_trades_with_equity():
    ts = pd.date_range("2025-08-01 03:45", periods=6, freq="1h", tz="UTC")
    equity = pd.DataFrame({"timestamp": ts, "equity_gross": [1000.0, 1100, 1045, 1067, 1100, 1210],
                           "equity_net": [1000.0, 1080, 1026, 1026, 1080, 1161]})
    trades = _trades().iloc[1:3]
    s = M.summarize_trades(trades, equity, periods_per_year=5)
    r_net = np.array([1080, 1026, 1026, 1080, 1161]) / np.array([1000, 1080, 1026, 1026, 1080]) - 1
    assert s["sharpe_net"] == pytest.approx(M.sharpe_ratio(r_net, 5))
    assert s["annualised_return_net"] == pytest.approx(0.161) and s["annualised_return_gross"] == pytest.approx(0.21)
    assert s["max_drawdown_net"] == pytest.approx(54 / 1080) and s["max_drawdown_gross"] == pytest.approx(55 / 1100)
    assert s["time_under_water_longest_net"] == 2 and s["time_under_water_longest_gross"] == 2
    assert s["calmar_net"] == pytest.approx(0.161 / (54 / 1080))
    # trades open 04:00-05:00 and 06:00-07:00; bars 03:45 04:45 05:45 06:45 07:45 08:45 -> open at 04:45 and 06:45
    assert s["exposure_bars"] == pytest.approx(2 / 6)
    assert s["exposure"] == pytest.approx(2 / 5)           # 2 h of the 5 h span
    assert s["turnover"] == pytest.approx(2 * 2e5 / 1000 / (5 / 24 / 365.25))  # capital = first net equity
    assert s["n_periods"] == 6


def test_zero_trades_give_nan_without_exception():
    empty = pd.DataFrame({c: [] for c in M.TRADE_COLUMNS})  # object dtypes: still a valid empty table
    s = M.summarize_trades(empty)
    assert s["n_trades"] == 0 and math.isnan(s["profit_factor_net"]) and math.isnan(s["hit_rate_gross"])
    assert math.isnan(s["exposure"]) and s["average_holding_time"] is pd.NaT
    assert len(M.metrics_by(_trades().iloc[:0], "regime")) == 0


def test_validation_names_column_and_row():
    t = _trades()
    t.loc[2, "net_pnl"] = 5.0
    with pytest.raises(ValueError, match=r"'net_pnl'.*row 2"):
        M.validate_trades(t)
    t = _trades()
    t.loc[1, "gross_pnl"] = np.nan
    with pytest.raises(ValueError, match=r"'gross_pnl': non-finite value at row 1"):
        M.validate_trades(t)
    with pytest.raises(ValueError, match="must be datetime64"):
        M.validate_trades(_trades().assign(entry_time="2025-08-01"))
    eq = pd.DataFrame({"timestamp": pd.date_range("2025-08-01", periods=3, freq="min", tz="UTC"),
                       "equity_gross": [1.0, 2.0, 3.0], "equity_net": [1.0, -2.0, 3.0]})
    with pytest.raises(ValueError, match=r"'equity_net': equity must be positive at row 1"):
        M.validate_equity(eq)


def test_metrics_by_regime_month_and_volatility_bucket():
    t = _trades()
    by = M.metrics_by(t, "regime")
    assert by.index.name == "regime" and list(by.index) == ["calm", "stressed"]
    assert by.loc["calm", "total_pnl_net"] == 380.0 and by.loc["calm", "profit_factor_net"] == math.inf
    assert by.loc["stressed", "profit_factor_net"] == 0.0 and math.isnan(by.loc["stressed", "average_win_net"])
    assert by.loc["stressed", "profit_factor_gross"] == 0.0 and by.loc["stressed", "hit_rate_gross"] == 0.0  # -80, 0
    assert by.loc["stressed", "cost_per_trade"] == 15.0
    # 2025-07-31 19:00 UTC = 2025-08-01 00:30 IST
    month = M.metrics_by(t, M.trade_month(t["entry_time"]))
    assert month["n_trades"].to_dict() == {"2025-08": 3, "2025-09": 1}
    assert month.loc["2025-08", "total_pnl_net"] == pytest.approx(170.0)
    vol = M.metrics_by(t, M.volatility_bucket(t["entry_vol"], 2))
    assert list(vol.index) == ["vol_q1", "vol_q2"]
    assert vol.loc["vol_q1", "total_pnl_net"] == pytest.approx(270.0)   # vols 0.10, 0.20 -> trades 0 and 2
    assert vol.loc["vol_q2", "hit_rate_net"] == pytest.approx(0.5)


def test_volatility_buckets_of_tied_values_share_a_bucket():
    """pd.qcut refused repeated quantile edges, so volatility_bucket (and the approval pack's breakdown by volatility
    bucket) raised 'Bin edges must be unique' when most trades shared one volatility, even with 3 distinct values."""
    vol = [0.001] * 6 + [0.002, 0.003]                 # both tercile cuts are 0.001
    assert M.volatility_bucket(vol).tolist() == ["vol_q1"] * 6 + ["vol_q2"] * 2
    assert M.volatility_bucket([0.002] * 5).tolist() == ["vol_q1"] * 5
    rng = np.random.default_rng(3)
    for _ in range(20):                                # without ties: exactly pd.qcut's buckets
        v = rng.lognormal(-6, 1, int(rng.integers(3, 40)))
        assert M.volatility_bucket(v).tolist() == pd.qcut(v, 3, labels=["vol_q1", "vol_q2", "vol_q3"]).astype(object).tolist()
    from oi_ml.packs import MIN_VOLATILITY_VALUES, performance_breakdowns
    assert pd.Series(vol).nunique() >= MIN_VOLATILITY_VALUES   # the pack's guard lets this through
    t = pd.Timestamp("2025-08-04 04:00", tz="UTC")
    trades = pd.DataFrame({"entry_time": [t] * 8, "exit_time": [t + pd.Timedelta(minutes=5)] * 8, "gross_pnl": np.arange(8.0) - 3,
                           "costs": 0.0, "notional": 1e5}).assign(net_pnl=lambda f: f.gross_pnl)
    table = performance_breakdowns(trades, pd.Series(vol))["volatility bucket"]
    assert table.index.tolist() == ["vol_q1", "vol_q2"] and table.n_trades.tolist() == [6, 2]
    assert table.total_pnl_net.tolist() == [-3.0, 7.0]      # -3..2 and 3, 4
    assert table.volatility_min.tolist() == [0.001, 0.002] and table.volatility_max.tolist() == [0.001, 0.003]


def test_volatility_bucket_labels_run_without_gaps():
    """Review finding: values 1, 1, 1, 1, 2, 3 cut at 1 and 1.33 left (1, 1.33] empty, and the labels read vol_q1 x 4 and
    vol_q3 x 2 with no vol_q2, against the docstring's 'vol_q1' .. 'vol_qK'. The buckets holding trades are numbered."""
    assert M.volatility_bucket([1.0, 1, 1, 1, 2, 3]).tolist() == ["vol_q1"] * 4 + ["vol_q2"] * 2
    assert M.volatility_bucket([0.2, 0.1], 3).tolist() == ["vol_q2", "vol_q1"]   # two trades, three buckets: the middle is empty
    rng = np.random.default_rng(7)
    for _ in range(200):                                   # heavy ties, any bucket count: labels q1..qK, ordered, ties shared
        v = rng.choice(rng.lognormal(-6, 1, int(rng.integers(1, 6))), int(rng.integers(1, 30)))
        v[rng.random(v.size) < 0.1] = np.nan
        k = int(rng.integers(2, 7))
        b = M.volatility_bucket(v, k)
        known = ~np.isnan(v)
        rank = b[known].str.removeprefix("vol_q").astype(int).to_numpy()
        assert sorted(set(rank)) == list(range(1, len(set(rank)) + 1)) and len(set(rank)) <= k, (v.tolist(), k, b.tolist())
        order = np.argsort(v[known], kind="stable")
        assert (np.diff(rank[order]) >= 0).all()                                     # calmer trades never in a higher bucket
        assert (pd.Series(rank).groupby(v[known]).nunique() == 1).all()              # tied trades share a bucket
        assert b[~known].isna().all()
    for n in range(4, 30):                                 # no ties, more trades than buckets: still exactly pd.qcut's
        v = rng.lognormal(-6, 1, n)
        assert M.volatility_bucket(v, 3).tolist() == pd.qcut(v, 3, labels=["vol_q1", "vol_q2", "vol_q3"]).astype(object).tolist()

# ---------------------------------------------------------------- PSR / DSR

def test_dsr_reproduces_paper_example():
    # Bailey & Lopez de Prado (2014), numerical example: N = 100 trials, V[annual SR] = 1/2, best annual SR 2.5,
    # 5 years of daily returns (T = 1250), skewness -3, kurtosis 10 -> SR0 = 0.1132 per day, DSR = 0.9004.
    sr0 = M.expected_max_sharpe(100, 0.5 / 250)
    # hand: sqrt(0.002) * ((1 - 0.577216) * 2.326348 + 0.577216 * 2.680210) = 0.044721 * 2.530616
    assert sr0 == pytest.approx(0.044721 * 2.530616, rel=1e-5) and round(sr0, 4) == 0.1132
    dsr = M.deflated_sharpe_ratio(2.5 / math.sqrt(250), 100, 0.5 / 250, 1250, skew=-3.0, kurtosis=10.0)
    assert round(dsr, 4) == 0.9004


def test_psr_by_hand():
    # SR 0.2, benchmark 0.05, n 61, skew -1, kurt 6: spread 1 + 0.2 + 5/4 * 0.04 = 1.25; z = 0.15 * sqrt(60) / sqrt(1.25)
    z = 0.15 * math.sqrt(60) / math.sqrt(1.25)
    assert M.probabilistic_sharpe_ratio(0.2, 0.05, 61, -1.0, 6.0) == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert M.probabilistic_sharpe_ratio(0.0, 0.0, 10) == 0.5


def test_expected_max_sharpe_close_to_monte_carlo():
    rng = np.random.default_rng(11)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((2000, n)).max(axis=1).mean()
        assert M.expected_max_sharpe(n, 1.0) == pytest.approx(simulated, rel=0.05)


def test_dsr_from_returns_matches_components():
    rng = np.random.default_rng(5)
    r = rng.standard_t(5, 1000) * 0.01 + 0.001
    trials = rng.normal(0, 0.03, 50)
    d = M.deflated_sharpe_from_returns(r, trials)
    assert d.n_trials == 50 and d.sr_variance == pytest.approx(np.var(trials, ddof=1))
    assert d.moments.kurtosis == pytest.approx(stats.kurtosis(r) + 3) and d.moments.n_obs == 1000
    expected = M.deflated_sharpe_ratio(d.sr, 50, d.sr_variance, 1000, stats.skew(r), stats.kurtosis(r) + 3)
    assert d.dsr == pytest.approx(expected)
    assert M.deflated_sharpe_from_returns(r, trials, n_trials=500).dsr < d.dsr   # more trials tried, less credible


# ---------------------------------------------------------------- PBO (CSCV)

def _pbo_reference(m, s):
    """Brute force: loop over every combination, Sharpe with np.std, rank by counting."""
    t, n = m.shape
    rows = t // s
    m = m[t - rows * s:]
    blocks = np.split(np.arange(rows * s), s)
    logits, pairs = [], []
    for c in combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[i] for i in c])
        oos_rows = np.concatenate([blocks[i] for i in range(s) if i not in c])
        is_sr = [m[is_rows, k].mean() / m[is_rows, k].std(ddof=1) for k in range(n)]
        oos_sr = [m[oos_rows, k].mean() / m[oos_rows, k].std(ddof=1) for k in range(n)]
        best = int(np.argmax(is_sr))
        below = sum(o < oos_sr[best] for o in oos_sr)
        ties = sum(o == oos_sr[best] for o in oos_sr)
        w = (below + (ties + 1) / 2) / (n + 1)
        logits.append(math.log(w / (1 - w)))
        pairs.append((is_sr[best], oos_sr[best]))
    return float(np.mean(np.array(logits) <= 0)), np.array(logits), np.array(pairs)


def test_pbo_hand_case_four_partitions():
    # One row per block, so every half is two returns x, y with Sharpe (x + y) / (sqrt2 |x - y|).
    a = np.array([0.01, 0.02, 0.03, 0.05])
    b = np.array([0.02, 0.03, 0.01, 0.06])
    # half:    {0,1}   {0,2}   {0,3}   {1,2}   {1,3}   {2,3}
    # A:   3/√2=2.121 4/(2√2)=1.414 6/(4√2)=1.061 5/√2=3.536 7/(3√2)=1.650 8/(2√2)=2.828
    # B:   5/√2=3.536 3/√2=2.121 8/(4√2)=1.414 4/(2√2)=1.414 9/(3√2)=2.121 7/(5√2)=0.990
    # IS {0,1}: B wins, OOS {2,3} A beats B -> B ranks 1 of 2, w = 1/3, logit -ln2   (and mirror IS {2,3}: A, OOS B wins)
    # IS {0,2}: B wins, OOS {1,3} B wins too -> w = 2/3, +ln2                        (mirror IS {1,3}: B, OOS {0,2} B)
    # IS {0,3}: B wins, OOS {1,2} A wins -> -ln2                                    (mirror IS {1,2}: A, OOS {0,3} B)
    out = M.probability_of_backtest_overfitting(np.column_stack([a, b]), n_partitions=4)
    ln2 = math.log(2)
    np.testing.assert_allclose(out["logits"], [-ln2, ln2, -ln2, -ln2, ln2, -ln2], atol=1e-9)
    assert out["pbo"] == pytest.approx(4 / 6) and out["n_combinations"] == 6
    np.testing.assert_allclose(out["is_sharpe"], [5 / SQ2, 3 / SQ2, 2 / SQ2, 5 / SQ2, 3 / SQ2, 4 / SQ2], rtol=1e-9)
    np.testing.assert_allclose(out["oos_sharpe"], [7 / (5 * SQ2), 3 / SQ2, 2 / SQ2, 1.5 / SQ2, 3 / SQ2, 3 / SQ2], rtol=1e-9)
    assert out["prob_oos_loss"] == 0.0


def test_pbo_hand_case_two_partitions():
    a = np.array([0.02, 0.04, -0.01, 0.01])
    out = M.probability_of_backtest_overfitting(np.column_stack([a, a[::-1]]), n_partitions=2)
    assert out["pbo"] == 1.0
    out = M.probability_of_backtest_overfitting(np.column_stack([a, a - 0.03]), n_partitions=2)
    assert out["pbo"] == 0.0 and out["prob_oos_loss"] == 0.0


@pytest.mark.parametrize("seed,s,t,n", [(0, 6, 123, 5), (1, 8, 96, 7), (2, 4, 41, 3)])
def test_pbo_matches_brute_force_reference(seed, s, t, n):
    m = np.random.default_rng(seed).normal(0.0003, 0.01, (t, n))
    m[:, 0] += 0.002 * np.sin(np.arange(t) / 7)   # give one trial some structure
    pbo, logits, pairs = _pbo_reference(m, s)
    out = M.probability_of_backtest_overfitting(m, n_partitions=s, chunk=5)   # small chunks exercise the chunking
    assert out["pbo"] == pytest.approx(pbo)
    np.testing.assert_allclose(out["logits"], logits, atol=1e-9)
    np.testing.assert_allclose(out["is_sharpe"], pairs[:, 0], rtol=1e-8)
    np.testing.assert_allclose(out["oos_sharpe"], pairs[:, 1], rtol=1e-8)
    assert out["rows_dropped"] == t % s and out["rows_per_partition"] == t // s


def test_pbo_noise_near_half_and_edge_near_zero():
    pbos = [M.probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (480, 20)), 8)["pbo"]
            for seed in range(6)]
    assert 0.35 < np.mean(pbos) < 0.65
    rng = np.random.default_rng(42)
    m = np.column_stack([rng.normal(0, 0.01, (480, 20)), rng.normal(0.0025, 0.01, 480)])
    out = M.probability_of_backtest_overfitting(m, 8)
    assert out["pbo"] < 0.02 and np.mean(out["oos_sharpe"] > 0) > 0.98


def test_pbo_handles_a_trial_that_never_trades():
    rng = np.random.default_rng(9)
    m = np.column_stack([np.zeros(64), rng.normal(0, 0.01, (64, 3))])
    out = M.probability_of_backtest_overfitting(m, 4)
    assert np.isfinite(out["logits"]).all() and 0 <= out["pbo"] <= 1
    with pytest.raises(ValueError, match="row 3, trial column 1"):
        bad = m.copy(); bad[3, 1] = np.nan
        M.probability_of_backtest_overfitting(bad, 4)


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_is_deterministic_for_a_seed():
    x = np.random.default_rng(0).normal(0.001, 0.01, 300)
    for block in (None, 5.0):
        a = M.sharpe_ci(x, 252, n_boot=200, block=block, seed=1)
        assert a == M.sharpe_ci(x, 252, n_boot=200, block=block, seed=1)
        assert a != M.sharpe_ci(x, 252, n_boot=200, block=block, seed=2)
    assert M.bootstrap_ci(x, np.mean, n_boot=50, seed=3).estimate == pytest.approx(x.mean())


def test_iid_bootstrap_interval_matches_by_hand_resamples():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    rng = np.random.default_rng(7)
    means = np.sort([x[rng.integers(0, 4, 4)].mean() for _ in range(40)])
    ci = M.bootstrap_ci(x, np.mean, n_boot=40, alpha=0.1, seed=7)
    # inverted-CDF quantiles of 40 sorted values: 5 % -> 2nd value, 95 % -> 38th value
    assert (ci.lower, ci.upper) == (means[1], means[37])


def test_stationary_bootstrap_block_lengths():
    idx = M.stationary_bootstrap_indices(20_000, 8.0, np.random.default_rng(0))
    starts = np.flatnonzero(np.diff(idx) % 20_000 != 1)
    assert 20_000 / (len(starts) + 1) == pytest.approx(8.0, rel=0.1)
    assert np.bincount(idx, minlength=20_000).mean() == 1.0


def _coverage(make_sample, truth, block, reps=150, n_boot=250):
    hits = 0
    for rep in range(reps):
        x = make_sample(np.random.default_rng(1000 + rep))
        ci = M.bootstrap_ci(x, np.mean, n_boot=n_boot, block=block, seed=rep)
        hits += ci.lower <= truth <= ci.upper
    return hits / reps


def test_bootstrap_coverage_iid():
    cov = _coverage(lambda rng: rng.normal(0.5, 1.0, 60), 0.5, None)
    assert 0.88 <= cov <= 0.99


@pytest.mark.slow
def test_block_bootstrap_covers_better_on_autocorrelated_returns():
    def ar1(rng, phi=0.7, n=240):
        e = rng.normal(0, 1, n)
        x = np.empty(n); x[0] = e[0] / math.sqrt(1 - phi**2)
        for i in range(1, n): x[i] = phi * x[i - 1] + e[i]
        return x
    iid, block = _coverage(ar1, 0.0, None), _coverage(ar1, 0.0, 15.0)
    assert iid < 0.8 and block > iid + 0.1


def test_profit_factor_ci_handles_inf_resamples():
    ci = M.profit_factor_ci([120.0, -40.0, 60.0, 30.0, 10.0], n_boot=300, seed=0)
    assert ci.estimate == pytest.approx(220 / 40) and ci.upper == math.inf and ci.lower < ci.estimate


@pytest.mark.parametrize("kind", ["random_walk", "rupee_steps", "mostly_flat", "monotone"])
def test_fast_return_metrics_equal_the_composed_definition(kind):
    rng = np.random.default_rng(["random_walk", "rupee_steps", "mostly_flat", "monotone"].index(kind))
    for _ in range(40):
        n = int(rng.integers(2, 3000))
        if kind == "random_walk": eq = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        elif kind == "rupee_steps": eq = np.round(1e6 + np.cumsum(rng.choice([0, 0, 0, 100, -100], n)), 2).clip(1)
        elif kind == "mostly_flat": eq = np.full(n, 1e6) + np.cumsum(rng.normal(0, 1, n)) * (rng.random(n) < 0.05)
        else: eq = np.maximum.accumulate(100 + np.cumsum(np.abs(rng.normal(0, 1, n))))
        fast, ref = M.return_metrics(eq, 94_500.0), M.return_metrics_reference(eq, 94_500.0)
        assert fast.keys() == ref.keys()
        for k in ref:
            a, b = fast[k], ref[k]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), (kind, n, k, a, b)


def test_exposure_bars_merge_and_binary_search_equal_the_definition():
    rng = np.random.default_rng(5)
    grid = pd.date_range("2025-08-01 03:45", periods=2000, freq="min", tz="UTC")
    entry = grid[rng.integers(0, 1990, 300)]
    exit_ = entry + pd.to_timedelta(rng.integers(0, 30, 300), unit="min")
    t, e, x = (pd.DatetimeIndex(v).asi8 for v in (grid, entry, exit_))
    ref = np.mean([((e <= ti) & (ti < x)).any() for ti in t])   # the definition, bar by bar: some trade open at t
    assert M.exposure_bars(entry, exit_, grid) == pytest.approx(ref, abs=1e-15)
    assert M.exposure_bars(entry, exit_, grid[::-1]) == pytest.approx(ref, abs=1e-15)


def test_equity_check_in_one_pass_agrees_with_the_definition():
    "validate_equity raises exactly when some row breaks a rule, naming the first such row of the first rule checked."
    rng = np.random.default_rng(11)
    base = pd.DataFrame({"timestamp": pd.date_range("2025-08-01 03:45", periods=40, freq="min", tz="UTC"),
                         "equity_gross": 1e6 + rng.normal(0, 100, 40).cumsum(), "equity_net": 1e6 + rng.normal(0, 100, 40).cumsum()})
    breaks = {"timestamp": [pd.NaT, "repeat", "earlier"], "equity_gross": [np.nan, np.inf, -np.inf, 0.0, -5.0],
              "equity_net": [np.nan, np.inf, 0.0, -1e-9]}
    for trial in range(300):
        eq = base.copy()
        for _ in range(int(rng.integers(0, 3))):
            column = str(rng.choice(list(breaks)))
            row = int(rng.integers(1, 40))
            value = breaks[column][int(rng.integers(len(breaks[column])))]
            if value == "repeat": value = eq.timestamp[row - 1]
            elif value == "earlier": value = eq.timestamp[row - 1] - pd.Timedelta(seconds=1)
            eq.loc[row, column] = value
        # the definition, rule by rule in the order of the checks: missing/non-finite values per column, order, sign
        ts = eq.timestamp
        expected = None
        for column in ("timestamp", "equity_gross", "equity_net"):
            bad = ts.isna() if column == "timestamp" else ~np.isfinite(eq[column])
            if expected is None and bad.any(): expected = (column, int(np.flatnonzero(bad)[0]))
        if expected is None:
            later = np.r_[True, ts.to_numpy()[1:] > ts.to_numpy()[:-1]]
            if not later.all(): expected = ("timestamp", int(np.flatnonzero(~later)[0]))
        for column in ("equity_gross", "equity_net"):
            if expected is None and (eq[column] <= 0).any(): expected = (column, int(np.flatnonzero(eq[column] <= 0)[0]))
        if expected is None:
            M.validate_equity(eq)
            continue
        with pytest.raises(ValueError, match=rf"column '{expected[0]}': .* at row {expected[1]} "):
            M.validate_equity(eq)


def test_drawdown_divided_at_each_trough_equals_the_bar_by_bar_maximum_exactly():
    "return_metrics divides a drawdown out once per peak; the result must be the very number of the bar-by-bar definition."
    rng = np.random.default_rng(21)
    for trial in range(300):
        n = int(rng.integers(2, 300))
        steps = rng.choice([-1.0, 0.0, 1.0], n) * rng.uniform(0, 3, n)
        eq = 100.0 + np.round(np.cumsum(steps), int(rng.integers(0, 3)))   # rounding makes equal highs and lows common
        eq = eq - min(eq.min(), 0.0) + 1.0
        bar_by_bar = float(np.max(1.0 - eq / np.maximum.accumulate(eq)))
        fast = M.return_metrics(eq, 252.0)
        assert fast["max_drawdown"] == bar_by_bar == M.max_drawdown(eq).max_drawdown, trial


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_exposure_bars_in_the_equity_frames_own_time_unit(unit):
    "summarize_trades keeps the equity timestamps in their unit; trade times off the bar grid must still count exactly."
    rng = np.random.default_rng(8)
    grid = pd.date_range("2025-08-01 03:45", periods=600, freq="min", tz="UTC").as_unit(unit)
    n = 19   # trades 30 bars apart, held under 30 minutes: no overlap, so every off-grid nanosecond shows in the count
    offsets = pd.to_timedelta(rng.integers(-3, 4, n) * rng.choice([1, 999, 1000, 10**6, 10**9], n), unit="ns")
    entry = pd.DatetimeIndex(grid[np.arange(1, 600 - 30, 30)].as_unit("ns") + offsets)
    exit_ = entry + pd.to_timedelta(rng.integers(1, 29, n), unit="min") - offsets[::-1]
    trades = pd.DataFrame({"entry_time": entry, "exit_time": exit_, "gross_pnl": 1.0, "costs": 0.0, "net_pnl": 1.0, "notional": 1e5})
    equity = pd.DataFrame({"timestamp": grid, "equity_gross": 1e6, "equity_net": 1e6})
    t, e, x = grid.as_unit("ns").asi8, entry.asi8, exit_.asi8
    definition = np.mean([((e <= ti) & (ti < x)).any() for ti in t])   # bar by bar, in nanoseconds
    assert M.summarize_trades(trades, equity, periods_per_year=252 * 375)["exposure_bars"] == pytest.approx(definition, abs=1e-15)

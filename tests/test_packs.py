"""Approval-pack building blocks checked against hand-computed values, and the template rendered with papermill on tiny
simulated runs: the baseline it was rendered for (warning when the gate compared against another), the backtest
engine's annualisation read from the saved summary, expected bars per session from the session and bar lengths, the
drawdown in percent, and the volatility-bucket breakdown."""
import dataclasses
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from oi_ml import packs
from oi_ml.backtest import BacktestConfig
from oi_ml.config import IST, RunConfig

from conftest import TINY_TRAIN


# ---------------------------------------------------------------- 1: the baseline the pack was rendered for
GATE = {"baseline": "v-0003",
        "candidate": {"backtest": {"n_trades": 12, "sharpe_net": 1.5, "max_drawdown_net": 0.04},
                      "probabilities": {"model": {"brier": 0.20, "log_loss": 0.60, "directional_auc": 0.55}}},
        "production": {"backtest": {"n_trades": 9, "sharpe_net": 0.5, "max_drawdown_net": 0.06},
                       "probabilities": {"model": {"brier": 0.25, "log_loss": 0.70, "directional_auc": 0.52}}}}


def test_baseline_notice_names_the_baseline_and_warns_on_a_mismatch():
    same = packs.baseline_notice("v-0003", GATE)
    assert "MISMATCH" not in same and "<b>v-0003</b>" in same
    other = packs.baseline_notice("v-0007", GATE)
    assert "BASELINE MISMATCH" in other and "v-0007" in other and "v-0003" in other and "Do not sign" in other
    assert "no baseline (absolute criteria)" in packs.baseline_notice("v-0007", {**GATE, "baseline": None})
    assert "MISMATCH" not in packs.baseline_notice("", GATE)          # none asked for: nothing to contradict
    assert "BASELINE NOT CHECKED" in packs.baseline_notice("v-0007", None)
    assert "&lt;script&gt;" in packs.baseline_notice("<script>", GATE)  # ids are escaped


# ---------------------------------------------------------------- 2: the engine's annualisation
def test_periods_per_year_come_from_the_saved_backtest():
    cfg = dataclasses.asdict(BacktestConfig(exchange="BSE", bar_minutes=5, holding_period_minutes=15))
    assert packs.backtest_periods_per_year({"config": cfg, "metrics": {"periods_per_year": 1234.0}}) == 1234.0
    assert packs.backtest_periods_per_year({"config": cfg, "metrics": {}}) == 252 * 375 / 5      # 18,900
    assert packs.backtest_periods_per_year({"config": {**cfg, "periods_per_year": 500.0}}) == 500.0
    text = packs.backtest_setup(cfg, 18900.0, 5)
    assert "**18,900 bars a year**" in text and "Warning" not in text and "holding period 15 minutes" in text
    assert "bars are 1 minutes long but the backtest ran with bar_minutes=5" in packs.backtest_setup(cfg, 18900.0, 1)


# ---------------------------------------------------------------- 3: expected bars per session
def _session(bar_minutes, day="2025-08-04"):
    n = 375 // bar_minutes
    return pd.DataFrame({"timestamp": pd.date_range(f"{day} 09:15", periods=n, freq=f"{bar_minutes}min", tz=IST).tz_convert("UTC")})


@pytest.mark.parametrize("bar_minutes, expected", [(1, 375), (5, 75), (15, 25), (25, 15)])
def test_a_complete_session_is_complete_whatever_the_bar_length(bar_minutes, expected):
    frame = pd.concat([_session(bar_minutes), _session(bar_minutes, "2025-08-05")], ignore_index=True)
    assert packs.bar_minutes_of(frame) == bar_minutes
    assert packs.session_bars("NSE", bar_minutes) == packs.session_bars("BSE", bar_minutes) == expected
    cov = packs.daily_coverage(frame, packs.session_bars("NSE", packs.bar_minutes_of(frame)))
    assert cov.bars.tolist() == cov.expected.tolist() == [expected] * 2 and cov.missing.tolist() == [0, 0]


def test_missing_bars_are_counted_in_bars_of_the_data():
    frame = _session(15).drop(index=[4, 5]).sample(frac=1, random_state=0)   # shuffled, 10:15 and 10:30 missing
    assert packs.bar_minutes_of(frame) == 15
    cov = packs.daily_coverage(frame, 25)
    assert cov[["bars", "expected", "missing", "longest_gap_minutes"]].values.tolist() == [[23, 25, 2, 45.0]]
    assert packs.session_bars("NSE", 10) == 37 and packs.bar_minutes_of(frame.iloc[:1]) is None
    with pytest.raises(ValueError, match="bar_minutes"):
        packs.session_bars("NSE", 0)


# ---------------------------------------------------------------- 4 and 6: risk profile and the other builders
def test_risk_profile_values():
    # equity 1,000 -> 1,200 -> 900 -> 1,100: worst fall 1,200 -> 900 = 300 rupees = 25 % of the peak
    ts = pd.date_range("2025-08-04 04:00", periods=5, freq="min", tz="UTC")
    equity = pd.DataFrame({"timestamp": ts, "equity_net": [1000.0, 1200.0, 900.0, 1100.0, 1150.0]})
    # trade 1: entry bar 0, exit at bar 1's open; trade 2: entry bar 3, exit at bar 3's close (exit_time one minute after its
    # timestamp, as the engine writes barrier exits): bars 0 and 3 have a trade open, 2 of 5 = 0.4 (holding_bars sum: 1 / 5)
    trades = pd.DataFrame({"net_pnl": [-300.0, 250.0], "lots": [3, 1], "risk_fraction": [0.015, 0.005], "holding_bars": [1, 0],
                           "entry_time": ts[[0, 3]], "exit_time": pd.DatetimeIndex([ts[1], ts[3] + pd.Timedelta("1min")])})
    config = dict(account_size=1000.0, sizing="kelly", max_risk_per_trade=0.02, margin_per_lot=50.0, max_open_positions=2,
                  cooldown_minutes=5.0, transaction_cost_bps=1.0, slippage_bps=0.5)
    rp = packs.risk_profile(trades, equity, config).set_index("item").value
    assert rp["max drawdown (net, % of peak)"] == "25.000 %"
    assert rp["max drawdown (net, ₹)"] == "300.00"
    assert rp["worst trade (₹)"] == "-300.00" and rp["largest position (lots)"] == "3" and rp[packs.RISK_FRACTION_LABEL] == "0.015"
    assert rp[packs.EXPOSURE_LABEL] == "0.4" and rp["costs (bps per leg)"] == "1.5"
    assert rp["sizing"] == "kelly" and rp["max open positions"] == "2" and rp["cooldown (minutes)"] == "5"


def test_metrics_with_ci_values():
    r = np.array([0.004, -0.002, 0.003, 0.001, -0.004, 0.006, 0.0, 0.002, -0.001, 0.005, 0.001, -0.003, 0.002])
    equity = pd.DataFrame({"equity_net": 1e6 * np.cumprod(np.r_[1.0, 1 + r])})
    trades = pd.DataFrame({"net_pnl": [300.0, -100.0, -50.0, 150.0]})         # gains 450 / losses 150 = 3
    ci = packs.metrics_with_ci(trades, equity, periods_per_year=2500.0, block_bars=4).set_index("metric")
    sharpe = sum(r) / len(r) / math.sqrt(sum((x - sum(r) / len(r)) ** 2 for x in r) / (len(r) - 1)) * 50.0
    assert ci.loc["Sharpe (net, per-bar, annualised)", "estimate"] == pytest.approx(sharpe, rel=1e-9)
    assert ci.loc["profit factor (net)", "estimate"] == pytest.approx(3.0, rel=1e-12)
    assert (ci.lower_95 <= ci.estimate).all() and (ci.estimate <= ci.upper_95).all()
    # each interval states its scheme, resamples and level, as metrics.bootstrap_ci draws it
    assert ci.loc["Sharpe (net, per-bar, annualised)", "method"] == (
        "stationary block bootstrap of the 13 per-bar net returns (geometric blocks, mean 4 bars = one session); 500 resamples; "
        "95% percentile interval")
    assert ci.loc["profit factor (net)", "method"] == "iid bootstrap over the 4 trades' net P&L; 1,000 resamples; 95% percentile interval"
    from oi_ml.metrics import sharpe_ci
    assert ci.loc["Sharpe (net, per-bar, annualised)", "lower_95"] == pytest.approx(sharpe_ci(r, 2500.0, n_boot=500, block=4, seed=0).lower, rel=1e-9)
    with pytest.raises(ValueError, match="block must be >= 1"):
        packs.metrics_with_ci(trades, equity, 2500.0, block_bars=0.5)
    short = packs.metrics_with_ci(trades.head(2), equity.head(5), 2500.0, 4)  # too few returns and trades: no rows
    assert short.empty and short.columns.tolist() == ["metric", "estimate", "lower_95", "upper_95", "method"]


def test_daily_sharpe_reuses_the_gates_daily_returns():
    from oi_ml.gate import daily_returns
    ts = pd.DatetimeIndex([f"2025-08-{d:02d} {h}" for d in (4, 5, 6, 7, 8) for h in ("04:00", "09:59")], tz="UTC")
    equity = pd.DataFrame({"timestamp": ts, "equity_net": 1e6 + np.array([0, 500, 800, 300, 900, 1500, 1400, 1200, 1300, 2100.0])})
    ci = packs.metrics_with_ci(pd.DataFrame({"net_pnl": []}), equity, 94500.0, 2, account_size=1e6).set_index("metric")
    daily = daily_returns(equity, 1e6).to_numpy()
    assert len(daily) == 5
    expected = daily.mean() / daily.std(ddof=1) * math.sqrt(252)
    assert ci.loc["Sharpe (net daily returns, ×√252)", "estimate"] == pytest.approx(expected, rel=1e-12)
    assert ci.loc["Sharpe (net daily returns, ×√252)", "method"].startswith("iid bootstrap over the 5 sessions' net returns")
    assert packs.annualised_daily_sharpe({str(i): v for i, v in enumerate(daily)}) == pytest.approx(expected, rel=1e-12)


def test_candidate_vs_production_values():
    t = packs.candidate_vs_production(GATE).set_index("metric")
    assert t.columns.tolist() == ["candidate", "production"]
    assert t.loc["n_trades"].tolist() == [12, 9] and t.loc["max_drawdown_net (% of peak)"].tolist() == ["4.000 %", "6.000 %"]
    assert t.loc["brier"].tolist() == [0.20, 0.25] and t.loc["log_loss"].tolist() == [0.60, 0.70]
    assert t.loc["sortino_net (per-bar, annualised)"].isna().all()
    assert t.index.tolist()[-3:] == ["brier", "log_loss", "directional_auc"]
    alone = packs.candidate_vs_production({**GATE, "production": None}, keys=("sharpe_net",))
    assert alone.values.tolist() == [["sharpe_net (per-bar, annualised)", 1.5], ["brier", 0.20], ["log_loss", 0.60], ["directional_auc", 0.55]]
    days = {"2025-10-13": 0.002, "2025-10-14": -0.001, "2025-10-15": 0.0015, "2025-10-16": 0.0005}
    daily = packs.candidate_vs_production({**GATE, "candidate": {**GATE["candidate"], "daily_returns": days}}).set_index("metric")
    v = np.array(list(days.values()))
    assert daily.index.tolist()[1:3] == ["sharpe_net (per-bar, annualised)", "sharpe of net daily returns (×√252)"]
    assert daily.loc["sharpe of net daily returns (×√252)", "candidate"] == pytest.approx(v.mean() / v.std(ddof=1) * math.sqrt(252), rel=1e-12)


def test_candidate_vs_production_daily_sharpe_on_the_comparison_window():
    "A narrowed comparison: both daily Sharpes come from the comparison window's sessions, as the gate now saves them."
    whole = {"2025-10-13": 0.002, "2025-10-14": -0.001, "2025-10-15": 0.0015, "2025-10-16": 0.0005}
    cand_days = {"2025-10-15": 0.0015, "2025-10-16": 0.0005, "2025-10-17": 0.001}
    prod_days = {"2025-10-15": 0.0005, "2025-10-16": -0.0002, "2025-10-17": 0.0004}
    gate = {**GATE, "candidate": {**GATE["candidate"], "daily_returns": whole},
            "baseline_comparison": {"compared": True, "whole_holdout": False, "candidate": {**GATE["candidate"], "daily_returns": cand_days}},
            "production": {**GATE["production"], "daily_returns": prod_days}}
    row = packs.candidate_vs_production(gate, keys=("sharpe_net",)).set_index("metric").loc["sharpe of net daily returns (×√252)"]
    sr = lambda d: np.mean(list(d.values())) / np.std(list(d.values()), ddof=1) * math.sqrt(252)
    assert row["candidate"] == pytest.approx(sr(cand_days), rel=1e-12) and row["production"] == pytest.approx(sr(prod_days), rel=1e-12)


def test_benchmark_frame_values():
    windows = {"in_sample": {"start": "2025-08-01", "benchmarks": {"ml_signal": {"n_trades": 40, "return_net": 0.012},
                                                                   "buy_and_hold": {"n_trades": 1, "return_net": 0.03, "sharpe_net": 2.0}}},
               "out_of_sample": {"benchmarks": {"ml_signal": {"n_trades": 7, "return_net": -0.002, "hit_rate_net": 0.43}}}}
    b = packs.benchmark_frame(windows)
    assert b.columns.tolist() == ["window", "start (IST)", "end (IST)", "strategy", "n_trades", "return_net (% of account)",
                                  "sharpe_net (per-bar, annualised)", "max_drawdown_net (% of peak)", "profit_factor_net", "hit_rate_net", "note"]
    assert b[["window", "start (IST)", "strategy", "n_trades", "return_net (% of account)"]].values.tolist() == [
        ["in_sample", "2025-08-01", "ml_signal", 40, "1.200 %"], ["in_sample", "2025-08-01", "buy_and_hold", 1, "3.000 %"],
        ["out_of_sample", "—", "ml_signal", 7, "-0.200 %"]]
    sharpe = b["sharpe_net (per-bar, annualised)"]
    assert sharpe.tolist()[1] == 2.0 and b.hit_rate_net.tolist()[2] == 0.43 and sharpe.isna().sum() == 2


def test_random_distribution_frame_values_and_old_runs():
    dist = {"n_runs": 200, "seed": 0, "target_trades": 94, "draws_at_target": 200, "trade_counts": [94, 94], "note": "",
            "return_net_strategy": 0.012, "return_net_median": -0.003, "return_net_p05": -0.008, "return_net_p95": 0.002,
            "p_value_return_net": 1 / 201, "sharpe_net_strategy": None, "sharpe_net_median": -1.2, "sharpe_net_p05": -4.0,
            "sharpe_net_p95": 1.5, "p_value_sharpe_net": None, "sharpe_net_undefined": 0,
            "draws": {"return_net": [-0.01, None, 0.0, 0.004], "sharpe_net": [None] * 4, "n_trades": [94] * 4}}
    windows = {"out_of_sample": {"start": "2025-10-14", "end": "2025-10-30", "benchmarks": {"ml_signal": {"n_trades": 94}}, "random_distribution": dist},
               "walk_forward_0": {"start": "2025-09-02", "end": "2025-09-15", "benchmarks": {"ml_signal": {"n_trades": 39}}}}  # an old run
    f = packs.random_distribution_frame(windows)
    assert f.window.tolist() == ["walk_forward_0", "out_of_sample"]
    oos = f.iloc[1]
    assert (oos["sessions (IST)"], oos["random draws (seed)"], oos["draws' trades"], oos["net return (%): random sides, 5–95 %"]) == (
        "2025-10-14 → 2025-10-30", "200 (seed 0)", "94", "-0.800 … 0.200 %")
    assert oos["p (net return): random sides"] == pytest.approx(1 / 201) and math.isnan(oos["p (Sharpe): random sides"])
    assert oos.note == "no Sharpe for the strategy: no p (Sharpe); no side-matched null (a run saved before it)"
    old = f.iloc[0]
    assert old["strategy trades"] == 39 and old["random draws (seed)"] == "—" and math.isnan(old["p (net return): random sides"])
    assert old.note == "not measured in this run (saved before the random-signal distribution)"
    html = f.to_html(index=False, na_rep="—")
    assert "NaN" not in html and "None" not in html
    fig = packs.random_distribution_figure(windows["out_of_sample"])
    assert list(fig.data[0].x) == [-1.0, 0.0, 0.4] and fig.layout.shapes[0].x0 == pytest.approx(1.2) and "p = 0.005" in fig.layout.annotations[0].text
    assert packs.random_distribution_figure(windows["walk_forward_0"]) is None
    b = packs.benchmark_frame({"w": {"benchmarks": {"ml_signal": {"n_trades": 3}, "random_signal": {"n_trades": 3}}}})
    assert b.strategy.tolist() == ["ml_signal", "random_signal (one draw)"]


def test_returns_show_in_percent_everywhere():
    "Review finding: return_net was a bare fraction in the Backtests tables (0.009625) while the decision summary said 0.962 %."
    windows = {"out_of_sample": {"start": "2025-10-13", "end": "2025-10-30",
                                 "benchmarks": {"ml_signal": {"n_trades": 93, "return_net": 0.0096246517, "total_costs": 106000.0}},
                                 "random_distribution": {"n_runs": 200, "seed": 0, "target_trades": 93, "trade_counts": [93, 93], "note": "",
                                                         "return_net_strategy": 0.0096246517, "return_net_median": -0.0346,
                                                         "return_net_p05": -0.0374, "return_net_p95": -0.0134, "p_value_return_net": 1 / 201}}}
    b = packs.benchmark_frame(windows)
    assert b["return_net (% of account)"].tolist() == ["0.962 %"]
    gate = {"candidate": {"backtest": {"return_net": 0.0096246517}, "probabilities": {"model": {}}}}
    assert packs.candidate_vs_production(gate, keys=("return_net",)).candidate.tolist()[0] == "0.962 %"   # the decision summary's figure
    r = packs.random_distribution_frame(windows).iloc[0]
    assert (r["net return (% of account): strategy"], r["net return (%): random sides, median"], r["net return (%): random sides, 5–95 %"]) == (
        "0.962 %", "-3.460 %", "-3.740 … -1.340 %")


def _two_nulls(p_coin, p_matched, strategy=0.0096, median=-0.0265, matched_median=0.004):
    "A saved distribution with both nulls."
    base = {"n_runs": 200, "seed": 0, "target_trades": 93, "trade_counts": [93, 93], "note": "", "long_share": 89 / 93,
            "return_net_strategy": strategy, "return_net_median": median, "return_net_p05": -0.037, "return_net_p95": -0.013,
            "p_value_return_net": p_coin, "sharpe_net_strategy": 6.3, "p_value_sharpe_net": p_coin,
            "draws": {"return_net": [median] * 3, "sharpe_net": [0.0] * 3, "n_trades": [93] * 3}}
    return base | {"side_matched": base | {"return_net_median": matched_median, "return_net_p05": -0.01, "return_net_p95": 0.02,
                                           "p_value_return_net": p_matched, "p_value_sharpe_net": p_matched,
                                           "draws": {"return_net": [matched_median] * 3, "sharpe_net": [0.0] * 3, "n_trades": [93] * 3}}}


def test_random_benchmark_shows_both_nulls_and_the_long_share():
    """Review finding: the random draws take 50/50 sides, so their centre is minus the costs and a long-biased strategy beats
    them by its bias; the pack claimed a trend lifts the draws too. Both p-values, the long share and the costs caveat for
    every window (not only losing ones) must show."""
    windows = {"in_sample": {"benchmarks": {"ml_signal": {"total_costs": 500000.0}}, "random_distribution": _two_nulls(0.005, 0.4, strategy=0.23)},
               "out_of_sample": {"benchmarks": {"ml_signal": {"total_costs": 106000.0}}, "random_distribution": _two_nulls(0.005, 0.3)}}
    f = packs.random_distribution_frame(windows).set_index("window")
    assert f.loc["out_of_sample", "strategy long share"] == "96%"
    assert f.loc["out_of_sample", "p (net return): random sides"] == pytest.approx(0.005) and f.loc["out_of_sample", "p (net return): side-matched"] == 0.3
    assert f.loc["out_of_sample", "net return (%): side-matched, median"] == "0.400 %" and f.loc["out_of_sample", "note"] == ""
    note = packs.random_nulls_note(windows, 5e6)
    assert "`in_sample` (96% long)" in note and "`out_of_sample` (96% long)" in note                       # every window, none losing
    assert "(the strategy's own costs: −2.120 %)" in note and "minus the costs" in note
    old = {"out_of_sample": {"random_distribution": {k: v for k, v in _two_nulls(0.005, 0.3).items() if k not in ("long_share", "side_matched")}}}
    sides = pd.DataFrame({"side": [1, 1, 1, -1]})                                                       # a run saved before the long share
    assert "`out_of_sample` (75% long)" in packs.random_nulls_note(old, 5e6, {"out_of_sample": sides}) and "no side-matched null" in packs.random_nulls_note(old)
    assert "beats costs-only random trading" in packs.RANDOM_DISTRIBUTION_TEXT and "timing skill beyond the long/short mix" in packs.RANDOM_DISTRIBUTION_TEXT
    assert "any entry wins" not in packs.RANDOM_DISTRIBUTION_TEXT                                       # the wrong sentence is gone
    fig = packs.random_distribution_figure(windows["out_of_sample"])
    assert [t.name for t in fig.data] == ["random sides", "side-matched"] and "0.300 (side-matched)" in fig.layout.annotations[0].text


def test_what_is_traded_from_the_saved_configs():
    "Review finding: the pack never said what the label is, what confidence means, which instrument the P&L is on, nor what 'fixed' sizing is."
    report = {"target": "triple_barrier", "selected_features": ["adx_14", "vix", "ret_60"],
              "config": {"labels": {"horizon_bars": 15, "profit_mult": 1.5, "stop_mult": 1.5, "volatility": "ewm", "vol_window": 20, "touch": "close"}}}
    config = {"min_confidence": 0.65, "transaction_cost_bps": 1.0, "slippage_bps": 0.5, "sizing": "fixed", "max_risk_per_trade": 0.001,
              "margin_per_lot": 200000.0, "max_open_positions": 1, "account_size": 5e6, "stop_loss_mult": 1.5,
              "holding_period_minutes": 15, "bar_minutes": 1}
    text = packs.what_is_traded(report, config, "BSE")
    for bit in ("`triple_barrier`", "1.5 × the EWM std (span 20)", "checked on closes over the next **15 bars**", "calibrated probability",
                "HOLD there is no trade", "threshold 0.65", "3 selected features: `adx_14`, `vix`, `ret_60`", "BSE index level",
                "near-month future", "futures lots", "₹200,000 margin a lot", "basis", "1 bps transaction cost + 0.5 bps slippage",
                "**fixed-fraction risk**", "0.1 % of current capital", "lots varies", "loss at the stop: entry price × stop multiple 1.5"):
        assert bit in text, bit


def test_what_is_traded_with_the_stop_off_says_what_a_lots_risk_is():
    """Last session's note: the pack described a lot's risk as its loss at the stop even when the labels (and so the
    backtest) had no stop; `backtest.risk_basis` then sizes by one volatility move over the holding period. Checked on a
    real backtest: the risk fraction it records is that text's formula."""
    from oi_ml.backtest import BacktestConfig, run_backtest
    report = {"target": "triple_barrier", "selected_features": ["vix"],
              "config": {"labels": {"horizon_bars": 15, "profit_mult": 1.5, "stop_mult": None, "volatility": "ewm", "vol_window": 20}}}
    cfg = BacktestConfig(exchange="NSE", holding_period_minutes=15, take_profit_mult=1.5, stop_loss_mult=None, min_confidence=0.5,
                         transaction_cost_bps=0.0, slippage_bps=0.0, account_size=5e6, max_risk_per_trade=0.01)
    text = packs.what_is_traded(report, dataclasses.asdict(cfg), "NSE")
    assert "a take-profit barrier 1.5 × the EWM std (span 20) of one-bar returns away (no stop barrier)" in text
    assert "loss at the stop" not in text and "stop is off" in text and "entry price × volatility × √15 bars × lot size" in text
    ts = pd.date_range("2025-08-04 03:45", periods=40, freq="1min", tz="UTC")
    close = np.full(40, 24000.0)
    bars = pd.DataFrame(dict(timestamp=ts, open=close, high=close + 5, low=close - 5, close=close))
    signals = pd.DataFrame(dict(timestamp=ts, signal=[1] + [0] * 39, confidence=0.9, volatility=0.001))
    trade = run_backtest(bars, signals, cfg).trades.iloc[0]
    assert trade.lots > 0
    assert trade.risk_fraction * 5e6 / trade.lots == pytest.approx(24000.0 * 0.001 * np.sqrt(15) * trade.lot_size)   # one lot's risk, as sized


def test_validation_statement_depends_on_the_batches():
    "Review finding: the pack said every batch passed the data-quality gate, but simulated batches carry an empty validation report."
    sim = {"batch_id": "sim-1", "kind": "simulate", "source": "simulated", "status": "stored", "rows_in": 855120, "rows_stored": 855120,
           "rows_quarantined": 0, "validation_report": {}}
    imp = {"batch_id": "imp-1", "kind": "bars", "source": "imported", "status": "stored", "rows_in": 100, "rows_stored": 98,
           "rows_quarantined": 2, "validation_report": {"ok": True, "counts": {"ohlc": 2}}}
    manifest = {"batches": [sim], "row_count": 22500, "files": {"ml_features.parquet": {"rows": 22500}}}
    text = packs.validation_statement(manifest)
    assert "not checked at import" in text and "passed the data-quality gate" not in text and "22,500 bars" in text and "all its store tables" in text
    assert packs.validation_summary(manifest)["data-quality check"].tolist() == ["not checked at import"]
    both = packs.validation_statement({**manifest, "batches": [sim, imp]})
    assert "**1 of 2 batch(es) passed the data-quality gate at import**" in both and "**1 of 2 batch(es) were not checked at import**" in both
    t = packs.validation_summary({"batches": [sim, imp]})
    assert t["data-quality check"].tolist() == ["not checked at import", "passed"] and t["ohlc problems"].tolist()[1] == 2
    assert "rows in (all tables)" in t.columns


def test_decision_summary_search_note_and_trial_counts():
    "Review finding: NSE's PBO failure came from a search that did not produce the candidate; trial counts 8 vs 9 disagreed."
    gate = {"decision": "FAIL", "failed": ["pbo"], "criteria": [{"name": "pbo", "value": 0.52, "threshold": 0.5, "rule": "<=", "passed": False}]}
    banner = packs.decision_banner(gate, from_search=False)
    assert "did not produce this candidate" in banner
    assert "did not produce this candidate" not in packs.decision_banner(gate, from_search=True)
    assert packs.search_failure_line({"criteria": [{"name": "oos_sharpe", "passed": False}]}, False) == ""
    text = packs.trial_count_text({"total_trials": 8}, {"dsr": {"n_trials": 9}})
    assert "8 AutoML trials" in text and "**9 trials: these 8 and the candidate**" in text


def test_risk_profile_time_under_water_and_drawdown_against_net():
    "Review finding: the risk profile left out time under water and the drawdown against the window's net P&L."
    from oi_ml.metrics import time_under_water
    ts = pd.DatetimeIndex(["2025-08-04 04:00", "2025-08-04 05:00", "2025-08-04 06:00", "2025-08-05 04:00", "2025-08-05 05:00", "2025-08-05 06:00"], tz="UTC")
    equity = pd.DataFrame({"timestamp": ts, "equity_net": [1000.0, 1200.0, 1100.0, 1000.0, 1150.0, 1300.0]})
    trades = pd.DataFrame({"net_pnl": [300.0], "lots": [1], "risk_fraction": [0.01], "entry_time": ts[:1], "exit_time": ts[5:6]})
    config = dict(account_size=1000.0, sizing="fixed", max_risk_per_trade=0.02, margin_per_lot=50.0, max_open_positions=1,
                  cooldown_minutes=0.0, transaction_cost_bps=1.0, slippage_bps=0.5)
    rp = packs.risk_profile(trades, equity, config).set_index("item").value
    assert rp["time under water (share of bars below the running net peak)"] == "50.0% (3 of 6 bars)"
    assert time_under_water(equity.equity_net.to_numpy()).fraction == 0.5
    assert rp["longest time under water"] == "3 bars over 2 sessions (2025-08-04 11:30 IST → 2025-08-05 10:30 IST)"
    assert rp["max drawdown as a share of the window's net P&L"] == "66.7% (₹200.00 of ₹300.00)"   # 1,200 -> 1,000 against +300


def test_regime_shift_and_calibration_and_cv_row_named_raw():
    "Review findings: BSE's holdout was 67.6 % regime 2 against 27.6 % of CV rows; calibration worsened the cross-fitted Brier unsaid."
    report = {"holdout": {"per_regime": {"0": {"n": 79}, "1": {"n": 1377}, "2": {"n": 3032}}},
              "cv": {"per_regime": {"0": {"n": 6180}, "1": {"n": 6665}, "2": {"n": 4907}}}}
    note = packs.regime_shift_note(report)
    assert note.startswith("**Regime mix shift:** regime 2 67.6% of the holdout's rows against 27.6% of the CV rows; regime 0 1.8%")
    assert "mostly measures regime 2 (67.6% of its rows)" in note
    assert packs.holdout_regime_table(report)["share of CV rows"].tolist() == ["34.8%", "37.5%", "27.6%"]
    metrics = {"n": 10, "brier": 0.5432641199, "log_loss": 0.87}
    old = {"cv": {"metrics": metrics, "folds": [], "per_regime": {}}, "regimes": {"routes": {}},
           "holdout": {"calibrated": {**metrics, "brier": 0.5424}, "raw": {**metrics, "brier": 0.5447}, "majority_baseline": metrics},
           "calibration": {"brier_before": 0.5432641199, "brier_after": 0.5444017444, "method": "isotonic"}}
    assert packs.cv_tables(old)["summary"].model.tolist()[3] == "CV out-of-fold, raw (before calibration)"
    text = packs.calibration_text(old)
    assert text.startswith("**Calibration worsened the cross-fitted out-of-fold Brier**: 0.5433 raw → 0.5444 calibrated (+0.0011")
    assert "0.5447 raw and 0.5424 calibrated" in text
    new = {**old, "calibration": {"chosen": "temperature", "cross_fitted": {"none": {"brier": 0.5433, "log_loss": 0.873},
                                                                           "temperature": {"brier": 0.5430, "log_loss": 0.871},
                                                                           "isotonic": {"brier": 0.5444, "log_loss": 0.875}}}}
    text = packs.calibration_text(new)
    assert text.startswith("**Calibration: temperature**") and "temperature (chosen): Brier 0.5430, log-loss 0.8710" in text and "isotonic: Brier 0.5444" in text


def test_correlation_of_the_selected_features_and_down_sampling_said():
    "Review finding: the heat-map showed the first 30 columns, not the model's features; down-sampled charts did not say so."
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(50000, 40)), columns=[f"f{i}" for i in range(40)])
    fig = packs.correlation_figure(features, list(features.columns), selected=["f35", "f39", "regime_prob_0"])
    assert list(fig.data[0].x) == ["f35", "f39"] and "the model's 2 selected features of 3" in fig.layout.title.text
    assert "every 2th of 50,000 rows" in fig.layout.title.text
    eq = pd.DataFrame({"timestamp": pd.date_range("2025-08-04 04:00", periods=9000, freq="min", tz="UTC"),
                       "equity_net": 1e6, "equity_gross": 1e6})
    assert "every 2th of 9,000 bars shown" in packs.equity_figure(eq, "Equity", 1e6).layout.title.text
    assert "every" not in packs.equity_figure(eq.head(100), "Equity", 1e6).layout.title.text
    assert "SHAP" in packs.GLOSSARY and "directional_auc" in packs.GLOSSARY and "PSI" in packs.GLOSSARY and "f1_macro" in packs.GLOSSARY


def test_a_window_without_trades_says_why():
    # BSE walk-forward segment 0 of the reviewed demo: every bar but one under the 0.65 threshold, the last too late to hold
    seg = {"n_trades": 0, "n_bars": 3750, "decision_entered": 0, "decision_low_confidence": 3749, "decision_no_time_left": 1,
           "decision_cooldown": 0, "sharpe_net": None, "max_drawdown_net": 0.0}
    b = packs.benchmark_frame({"walk_forward_0": {"start": "2025-09-02", "end": "2025-09-15", "benchmarks": {"ml_signal": seg}}}, min_confidence=0.65)
    assert b.note.tolist() == ["no trades: 3,749 of 3,750 bars below the confidence threshold 0.65; 1 too close to the session end"]
    assert b["end (IST)"].tolist() == ["2025-09-15"] and b["max_drawdown_net (% of peak)"].tolist() == ["0.000 %"]
    html = b.to_html(index=False, na_rep="—")                       # the template's rendering: no NaN for a reviewer
    assert "NaN" not in html and "None" not in html


def test_monitoring_baseline_values():
    manifest = {"metrics_summary": {"brier": 0.456789, "n_holdout": 409, "family": "lightgbm"},
                "feature_distribution": {"rsi_14": {"edges": [10.0, 20, 30, 40, 50, 60, 70, 80, 90]},
                                         "pcr": {"edges": [0.71234, 0.9, 1.1]}, "extra": {"edges": [1.0]}}}
    m = packs.monitoring_baseline(manifest, top=2)
    fixed = "drift alert at PSI 0.25 (no training windows)"
    assert m.values.tolist() == [["approval brier", "0.4568"], ["approval n_holdout", "409"], ["approval family", "lightgbm"],
                                 ["drift alert levels", "raised above the fixed PSI 0.25 for 0 of 3 features, to the largest PSI "
                                                        "of the training period's own windows of the live length"],
                                 ["drift alert, family-wise (any used feature)", "no drift_family in the manifest (a model trained "
                                  "before it, or too few in-sample rows): per-feature levels, the family-wise false-alarm rate is not controlled"],
                                 ["feature rsi_14: 5 of 9 training decile edges; drift level", "10, 30, 50, 70, 90; " + fixed],
                                 ["feature pcr: 3 of 3 training decile edges; drift level", "0.7123, 0.9, 1.1; " + fixed]]


def test_monitoring_baseline_shows_the_family_scaled_levels():
    "The pack states the level the monitor alerts at: a used feature's training-window level × the drift family's scale."
    from oi_ml.monitor import MonitorConfig, drift_family_levels, drift_thresholds
    windows = {"rows": 2000, "windows": 380, "side_by_side": 20, "q95": 2.1, "max": 3.456, "max_apart": 3.2}
    family = {"rows": 2000, "stride": 100, "psi_alert": 0.25, "columns": ["vix"], "windows": 20, "side_by_side": 4,
              "rate_at_scale_1": 0.5, "ratios": [0.5] * 10 + [1.2] * 8 + [1.5, 2.0]}
    dist = {"vix": {"edges": [15.0], "proportions": [0.5, 0.5], "window_psi": windows},
            "rsi": {"edges": [50.0], "proportions": [0.5, 0.5], "window_psi": windows}}
    m = packs.monitoring_baseline({"metrics_summary": {}, "drift_family": family, "feature_distribution": dist}).set_index("item").value
    scale = drift_family_levels(family, MonitorConfig(live_rows=2000))["scale"]
    monitor_level = drift_thresholds(dist["vix"], MonitorConfig(live_rows=2000), None, scale)[1]   # what the monitor alerts at
    assert 1.2 < scale < 1.21 and monitor_level == pytest.approx(3.456 * scale)
    assert m["feature vix: 1 of 1 training decile edges; drift level"].startswith(f"15; drift alert at PSI {monitor_level:.3g} (")
    assert f"× the used features' family scale {scale:.3g}" in m["feature vix: 1 of 1 training decile edges; drift level"]
    assert m["feature rsi: 1 of 1 training decile edges; drift level"].startswith("50; drift alert at PSI 3.46 (")   # not used: unscaled
    assert m["drift alert, family-wise (any used feature)"].startswith(f"training-window alert levels of 1 used features × {scale:.3g}")


# ---------------------------------------------------------------- review findings: sign-off, index, DSR text, heat-map
def test_a_failed_gate_never_proposes_approval(tmp_path):
    cfg = RunConfig(data_dir=str(tmp_path))
    failed = packs.signoff_block("BSE", "run-x", cfg, "FAIL")
    assert "--decision rejected" in failed and "--decision approved" not in failed
    passed = packs.signoff_block("BSE", "run-x", cfg, "PASS")
    assert "--decision DECISION" in passed and "--decision approved" not in passed   # the signer chooses; argparse refuses DECISION


def test_index_marks_simulated_runs(tmp_path):
    import nbformat
    for exchange, run, simulated, decision in (("NSE", "run-a", True, "PASS"), ("BSE", "run-b", False, "PASS")):
        out = tmp_path / "reports" / exchange / run; out.mkdir(parents=True)
        (out / "approval_pack.html").write_text("<html></html>")
        nb = nbformat.v4.new_notebook(); nb.metadata["papermill"] = {"parameters": {"candidate_run": run, "data_dir": str(tmp_path / "data")}}
        nbformat.write(nb, out / "approval_pack.ipynb")
        gate_dir = tmp_path / "data" / "models" / exchange / run / "reports"; gate_dir.mkdir(parents=True)
        (gate_dir / "gate_report.json").write_text(json.dumps({"decision": decision, "simulated_data": simulated}))
    page = packs.render_index(RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))).read_text()
    rows = {r.split("</td>")[0].split(">")[-1]: r for r in page.split("<tr>")[2:]}   # exchange -> its row
    assert "SIMULATED DATA" in rows["NSE"] and "PASS (on simulated data)" in rows["NSE"]
    assert "SIMULATED" not in rows["BSE"] and "market data" in rows["BSE"]
    assert "1 of 2 packs come from SIMULATED DATA" in page


DSR_GATE = {"dsr": {"dsr": 0.9947, "n_trials": 9, "n_days": 12, "returns": "AutoML trial rule on the candidate's holdout probabilities",
                    "sr_daily": 1.2878, "sr_benchmark": 0.2463, "reason": ""},
            "pbo": {"pbo": 0.1012}, "policy_sharpe": {"sr_daily": 0.5413, "psr_vs_zero": 0.9532, "n_days": 12},
            "backtest_config": {"min_confidence": 0.65, "max_risk_per_trade": 0.001}}


def test_dsr_text_names_the_trial_rule_and_the_policy_criterion():
    old = packs.overfitting_summary(DSR_GATE)                        # a report from before policy_psr: still renders
    assert "AutoML trial rule** — the sign of the model's score on every bar, gross of costs — not on the traded policy" in old
    assert "predates the `policy_psr` criterion" in old and "**not annualised**" in old
    assert "confidence threshold (0.65) and risk per trade (0.1 % of capital)" in old and "not among the counted trials" in old
    new = packs.overfitting_summary({**DSR_GATE, "criteria": [{"name": "policy_psr", "value": 0.9532, "threshold": 0.95, "rule": ">=", "passed": True}]})
    assert "the gate criterion `policy_psr`" in new and "**0.9532** (needs >= 0.95: **PASS**" in new and "predates" not in new


def test_sensitivity_colours_are_centred_on_zero_and_name_the_slippage():
    records = [{"cost_bps": c, "min_confidence": 0.6, "sharpe_net": v} for c, v in ((0.0, 4.0), (5.0, -2.0))]
    fig = packs.sensitivity_figure(records, config={"slippage_bps": 0.5})
    assert fig.data[0].zmid == 0 and fig.layout.xaxis.title.text == "transaction cost per leg (+ 0.5 bps slippage per leg)"


# ---------------------------------------------------------------- 5: volatility at the signal bar
def _wilder_atr_over_close(high, low, close, window):
    "Reference: true range with the previous close (none on the first bar), Wilder smoothing from the first bar, NaN warm-up."
    out, atr = [], None
    for i, (h, lo, c) in enumerate(zip(high, low, close)):
        tr = h - lo if i == 0 else max(h - lo, abs(h - close[i - 1]), abs(lo - close[i - 1]))
        atr = tr if atr is None else atr * (window - 1) / window + tr / window
        out.append(atr / c if i >= window - 1 else float("nan"))
    return out


def test_trade_volatility_is_atr_over_close_at_the_signal_bar():
    rng = np.random.default_rng(3)
    close = 25_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, 60)))
    high, low = close * (1 + rng.uniform(0, 1e-3, 60)), close * (1 - rng.uniform(0, 1e-3, 60))
    ts = pd.date_range("2025-08-04 03:45", periods=60, freq="1min", tz="UTC")
    frame = pd.DataFrame({"timestamp": ts, "symbol": "NIFTY", "high": high, "low": low, "close": close}).sample(frac=1, random_state=1)
    ref = _wilder_atr_over_close(high, low, close, 14)
    trades = pd.DataFrame({"timestamp": [ts[40], ts[13], ts[59], ts[5], ts[0] - pd.Timedelta("1min")]}, index=[7, 3, 9, 1, 2])
    vol = packs.trade_volatility(frame, trades)
    assert vol.index.tolist() == [7, 3, 9, 1, 2]
    np.testing.assert_allclose(vol.iloc[:3].to_numpy(), [ref[40], ref[13], ref[59]], rtol=1e-12)
    assert vol.iloc[3:].isna().all()                                  # inside the 14-bar warm-up; not a bar of the data
    with pytest.raises(ValueError, match="repeat a timestamp"):
        packs.trade_volatility(pd.concat([frame, frame.head(1)]), trades)


def test_trade_volatility_follows_the_labels_volatility():
    from oi_ml.labels import LabelConfig, label_volatility
    from oi_ml.train import _round
    from oi_ml.config import config_to_dict
    rng = np.random.default_rng(5)
    close = 25_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, 80)))
    high, low = close * (1 + rng.uniform(0, 1e-3, 80)), close * (1 - rng.uniform(0, 1e-3, 80))
    ts = pd.date_range("2025-08-04 03:45", periods=80, freq="1min", tz="UTC")
    frame = pd.DataFrame({"timestamp": ts, "symbol": "NIFTY", "high": high, "low": low, "close": close})
    trades = pd.DataFrame({"timestamp": ts[[30, 55, 79]]})
    ewm = LabelConfig(volatility="ewm", vol_window=20, profit_mult=math.inf)
    expected = label_volatility(frame, ewm)[[30, 55, 79]]
    stored = _round(config_to_dict(ewm))   # the training report's labels: inf stored as null
    for labels in (ewm, stored):
        np.testing.assert_array_equal(packs.trade_volatility(frame, trades, labels).to_numpy(), expected)


def test_performance_breakdowns_by_volatility_bucket():
    entry = pd.date_range("2025-08-04 04:00", periods=9, freq="h", tz="UTC")
    trades = pd.DataFrame({"entry_time": entry, "exit_time": entry + pd.Timedelta("15min"), "net_pnl": [5.0, -3, 8, 1, -6, 2, -4, 7, 3],
                           "regime": ["bull", "bear", "bull", "bull", "bear", "bull", "bear", "bull", "bull"]})
    trades = trades.assign(gross_pnl=trades.net_pnl + 1, costs=1.0, notional=1e5)
    vol = pd.Series([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.3, 0.7, 0.6], index=trades.index)   # terciles: .1-.3 | .4-.6 | .7-.9
    out = packs.performance_breakdowns(trades, vol)
    assert list(out) == [packs.REGIME_BREAKDOWN, "volatility bucket"]    # all on one day: no one-row month table
    vb = out["volatility bucket"]
    assert vb.index.tolist() == ["vol_q1", "vol_q2", "vol_q3"] and vb.n_trades.tolist() == [3, 3, 3]
    assert vb.total_pnl_net.tolist() == [-3 + 1 - 4, 8 + 2 + 3, 5 - 6 + 7]
    assert vb.volatility_min.tolist() == [0.1, 0.4, 0.7] and vb.volatility_max.tolist() == [0.3, 0.6, 0.9]
    assert "volatility bucket" not in packs.performance_breakdowns(trades)
    assert "volatility bucket" not in packs.performance_breakdowns(trades, pd.Series([0.1, 0.2] * 4 + [0.1]))


# ---------------------------------------------------------------- rendered packs (papermill)
# ---------------------------------------------------------------- review findings: what render_pack refuses before a kernel starts
def tiny_dataset(cfg: RunConfig, exchange: str = "NSE", version: str = "2025-08-01") -> Path:
    "A dataset version of three rows whose manifest agrees with its file, as `verify_dataset` checks it."
    from oi_ml.datasets import _content_hash, dataset_dir, sha256_file
    folder = dataset_dir(exchange, version, cfg); folder.mkdir(parents=True)
    pd.DataFrame({"close": [1.0, 2.0, 3.0]}).to_parquet(folder / "ml_features.parquet")
    files = {"ml_features.parquet": {"sha256": sha256_file(folder / "ml_features.parquet"), "rows": 3}}
    (folder / "manifest.json").write_text(json.dumps(dict(version=version, exchange=exchange, window_start="", window_end="",
                                                          row_count=3, files=files, content_sha256=_content_hash(files), source="test")))
    return folder


@pytest.fixture
def pack_cfg(tmp_path, monkeypatch) -> tuple[RunConfig, list]:
    "(run config with a valid tiny dataset 2025-08-01, calls of papermill.execute_notebook, which only records them)."
    import papermill
    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda template, output, **kw: started.append(output))
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    tiny_dataset(cfg)
    return cfg, started


def test_render_pack_refuses_bad_inputs_before_a_kernel_starts(pack_cfg, tmp_path):
    """Review finding: a label that is a path wrote outside reports/; a damaged dataset or run surfaced as a papermill
    traceback after a kernel started. Each is refused first, naming the value or the file, and nothing is written."""
    from oi_ml.datasets import DatasetIntegrityError, dataset_dir
    from oi_ml.registry import RegistryError
    cfg, started = pack_cfg
    ok = {"dataset_version": "2025-08-01"}
    for label in ("../../escaped", "a/b", "..", ""):
        with pytest.raises(ValueError, match=f"invalid pack label {re.escape(repr(label))}"):
            packs.render_pack("NSE", label, ok, cfg)
    with pytest.raises(FileNotFoundError, match="nope/manifest.json: no such dataset version"):
        packs.render_pack("NSE", "nope", {"dataset_version": "nope"}, cfg)
    run = Path(cfg.models_dir) / "NSE" / "run-x"; run.mkdir(parents=True)   # a run whose manifest says BSE
    (run / "manifest.json").write_text(json.dumps(dict(run_id="run-x", exchange="BSE", dataset_version="2025-08-01", dataset_sha256="0",
                                                       target="t", created_at="", files={}, metrics_summary={})))
    with pytest.raises(RegistryError, match="manifest exchange 'BSE' differs from 'NSE'"):
        packs.render_pack("NSE", "run-x", {**ok, "candidate_run": "run-x"}, cfg)
    path = dataset_dir("NSE", "2025-08-01", cfg) / "ml_features.parquet"
    damaged = bytearray(path.read_bytes()); damaged[len(damaged) // 2] ^= 0xFF; path.write_bytes(bytes(damaged))
    with pytest.raises(DatasetIntegrityError, match=r"ml_features\.parquet: sha256 .* does not match the manifest"):
        packs.render_pack("NSE", "2025-08-01", ok, cfg)
    assert started == [] and not (tmp_path / "reports").exists() and not (tmp_path / "escaped").exists()


def test_a_failing_template_leaves_no_running_notebook(pack_cfg, tmp_path, monkeypatch):
    """Review finding: a template that failed left reports/NSE/<label>/approval_pack.running.ipynb and a papermill
    traceback. The half-executed notebook is deleted, the error is one line, an earlier pack stays as it was."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    cfg, _ = pack_cfg
    def failing(template, output, **kw):
        Path(output).write_text("{}")                                   # papermill writes the notebook as it executes
        raise PapermillExecutionError(3, 3, "load_dataset(...)", "DatasetIntegrityError", "ml_features.parquet:\n  sha256 differs", [])
    monkeypatch.setattr(papermill, "execute_notebook", failing)
    out = tmp_path / "reports" / "NSE" / "2025-08-01"; out.mkdir(parents=True)
    (out / "approval_pack.html").write_text("an earlier pack")
    with pytest.raises(packs.PackError, match=r"2025-08-01: the approval-pack template failed: DatasetIntegrityError: "
                                              r"ml_features\.parquet: sha256 differs$"):
        packs.render_pack("NSE", "2025-08-01", {"dataset_version": "2025-08-01"}, cfg)
    assert [p.name for p in out.iterdir()] == ["approval_pack.html"] and (out / "approval_pack.html").read_text() == "an earlier pack"


def _outputs(executed: Path) -> str:
    "Markdown, HTML and text outputs of an executed notebook, plotly charts left out."
    nb, parts = nbformat.read(executed, as_version=4), []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            text = data.get("text/markdown") or data.get("text/html") or o.get("text") or ""
            if "plotly" not in text[:3000]: parts.append(text)
    return "\n".join(parts)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    "A tiny NSE market, retrained once (dataset, model, backtests, gate, pack); returns (run config, pipeline output)."
    from oi_ml.pipeline import RetrainConfig, run_retrain
    from oi_ml.simulate import simulate_market
    from oi_ml.store import connect
    root = tmp_path_factory.mktemp("packs")
    cfg = RunConfig(data_dir=str(root / "data"), reports_dir=str(root / "reports"))
    with connect(cfg) as con:
        # a strong planted signal: six days teach the tiny model enough to trade above the gate's 0.65 threshold once its
        # probabilities are calibrated honestly (strength 1 gave no trade; overfitted isotonic maps had made it trade)
        simulate_market(con, "NSE", "2025-08-01", n_days=6, seed=0, signal_strength=3.0, run_cfg=cfg)
    return cfg, run_retrain(RetrainConfig("NSE", automl=False, train=TINY_TRAIN), cfg)


@pytest.mark.slow
def test_trade_volatility_equals_the_signal_frame_the_backtest_traded(retrained):
    from oi_ml.datasets import load_dataset
    from oi_ml.gate import signals_for
    from oi_ml.train import load_bundle
    cfg, out = retrained
    run_dir = Path(cfg.models_dir) / "NSE" / out["candidate_run"]
    raw, _ = load_dataset("NSE", out["dataset_version"], cfg)
    signals = signals_for(load_bundle(run_dir), raw)
    trades = pd.read_parquet(run_dir / "reports" / "trades_in_sample.parquet")
    assert len(trades) > 10
    expected = signals.set_index("timestamp").volatility.reindex(pd.DatetimeIndex(trades.timestamp)).to_numpy()
    labels = packs.load_run_report("NSE", out["candidate_run"], cfg)["config"]["labels"]   # what the pack passes
    np.testing.assert_array_equal(packs.trade_volatility(raw, trades, labels).to_numpy(), expected)


@pytest.mark.slow
def test_candidate_pack_baseline_annualisation_drawdown_and_volatility(retrained, tmp_path):
    src_cfg, out = retrained
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    for sub in ("datasets", "models"): shutil.copytree(Path(src_cfg.data_dir) / sub, Path(cfg.data_dir) / sub)
    run = out["candidate_run"]
    reports = Path(cfg.models_dir) / "NSE" / run / "reports"
    gate = json.loads((reports / "gate_report.json").read_text())
    assert gate["baseline"] is None                                   # no production model: absolute criteria
    summary_path = reports / "backtest_summary.json"                  # the engine's figure, changed so the pack must read it
    summary = json.loads(summary_path.read_text())
    assert summary["metrics"]["periods_per_year"] == 252 * 375
    summary["metrics"]["periods_per_year"] = 6300.0
    summary_path.write_text(json.dumps(summary))
    windows_path = reports / "backtest_windows.json"                   # a run saved before the random-signal distribution
    saved = json.loads(windows_path.read_text())
    for w in saved["windows"].values(): w.pop("random_distribution")
    windows_path.write_text(json.dumps(saved))
    html = packs.render_pack("NSE", run, dict(dataset_version=out["dataset_version"], candidate_run=run, baseline_version="v-9999"), cfg)
    text = _outputs(html.with_suffix(".ipynb"))
    params = nbformat.read(html.with_suffix(".ipynb"), as_version=4).metadata["papermill"]["parameters"]
    assert params["gate_report_sha256"] == hashlib.sha256((reports / "gate_report.json").read_bytes()).hexdigest()   # what the index checks
    # 1: the baseline the pack was rendered for is shown, with the warning, in the executed notebook and the HTML
    assert "BASELINE MISMATCH" in text and "rendered for baseline v-9999" in text and "BASELINE MISMATCH" in html.read_text()
    # 2: Sharpe of the saved out-of-sample equity, annualised with the saved 6,300 bars a year
    assert "**6,300 bars a year**" in text
    r = pd.read_parquet(reports / "equity_out_of_sample.parquet").equity_net.pct_change().dropna().to_numpy()
    shown = float(re.search(r"\(around ([-0-9.]+), the backtest's out-of-sample window\)", text).group(1))   # beside oos_sharpe
    assert shown == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(6300.0), rel=1e-3)
    # the holdout's per-bar net Sharpe (the gate's oos_sharpe) is shown once, in the criteria table; the other tables refer to it
    oos = next(c for c in gate["criteria"] if c["name"] == "oos_sharpe")["value"]
    assert len(re.findall(rf"<td>{re.escape(f'{oos:.4g}')}</td>", text)) == 1, oos
    assert "→ oos_sharpe (decision summary)" in text
    # the decision summary names every failed criterion (or the tightest margin) before the criteria table
    summary = text[:text.index("<th>criterion</th>")]
    for c in gate["criteria"]:
        if not c["passed"]: assert f"<b>{c['name']}</b>: value <b>" in summary, c["name"]
    assert ("Tightest margin" in summary) == (gate["decision"] == "PASS")
    # 3: 1-minute bars of the 375-minute session
    assert "**375 bars of 1 min**" in text and "All 6 trading days complete" in text
    # 4: drawdown in percent of the peak
    eq = pd.read_parquet(reports / "equity_out_of_sample.parquet").equity_net.to_numpy()
    pct = 100 * float(np.max(1 - eq / np.maximum.accumulate(eq)))
    assert re.search(r"max drawdown \(net, % of peak\)</td>\s*<td>([^<]+)</td>", text).group(1) == f"{pct:.3f} %"
    # time in market is the engine's exposure_bars of the out-of-sample window
    engine = json.loads((reports / "backtest_windows.json").read_text())["windows"]["out_of_sample"]["benchmarks"]["ml_signal"]
    assert re.search(r"time in market[^<]*</td>\s*<td>([^<]+)</td>", text).group(1) == f"{engine['exposure_bars']:,.4g}"
    # review findings: identifiers in full, the DSR and policy_psr text, the sign-off command, no NaN or Python reprs
    assert gate["candidate_manifest_sha256"] + " (matches the run's manifest.json now)" in text
    assert "the gate criterion `policy_psr`" in text and "AutoML trial rule** — the sign of the model's score" in text
    assert ("--decision rejected" in text) == (gate["decision"] == "FAIL") and "--decision approved" not in text
    assert "<td>NaN</td>" not in text and "'holdout_window'" not in text and "stationary block bootstrap of the" in text
    assert "not measured in this run (saved before the random-signal distribution)" in text   # an old run still renders
    # the model-risk review's additions render on a run without AutoML: concentration per window, the side split, the PSI reach
    assert "Profit concentration per window" in text and "Out-of-sample net P&L per session" in text
    assert "Performance by side, every window" in text and "PSI alert cannot fire" in text
    # 5: trades per volatility tercile, volatility taken from the signal frame at each trade's signal bar
    from oi_ml.datasets import load_dataset
    from oi_ml.gate import signals_for
    from oi_ml.train import load_bundle
    raw, _ = load_dataset("NSE", out["dataset_version"], cfg)
    trades = pd.read_parquet(reports / "trades_out_of_sample.parquet")
    vol = signals_for(load_bundle(reports.parent), raw).set_index("timestamp").volatility
    buckets = pd.qcut(vol.reindex(pd.DatetimeIndex(trades.timestamp)).to_numpy(), 3, labels=["vol_q1", "vol_q2", "vol_q3"])
    expected = pd.Series(buckets).value_counts().sort_index()
    assert "Out-of-sample performance by volatility bucket" in text
    for bucket, n in expected.items():
        assert re.search(rf"<th>{bucket}</th>\s*<td>{n}</td>", text), (bucket, n)


@pytest.mark.slow
def test_fifteen_minute_data_pack_counts_25_bars_a_session(tmp_path):
    from oi_ml.datasets import export_training_window
    from oi_ml.simulate import simulate_market
    from oi_ml.store import connect
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=2, freq="15min", run_cfg=cfg)
        manifest = export_training_window(con, "NSE", run_cfg=cfg)
    html = packs.render_pack("NSE", manifest["version"], {"dataset_version": manifest["version"]}, cfg)
    text = _outputs(html.with_suffix(".ipynb"))
    assert "**25 bars of 15 min**" in text and "All 2 trading days complete (50 bars)" in text
    assert "BASELINE" not in text                                     # a data-only pack names no baseline


# ---------------------------------------------------------------- risk-review findings on the demo packs (WRONG items)
def test_shap_chart_shows_the_largest_drivers_sorted_by_value():
    """Review finding: the chart took the first 12 keys of the stored top-20, which the trainer dumps sorted by name, so
    it showed the alphabetically first features, not the largest. Largest first, whatever the key order."""
    values = {f"f{i:02d}": float(v) for i, v in enumerate([0.01, 0.9, 0.02, 0.5, 0.03, 0.7, 0.04])}   # keys alphabetical
    fig = packs.shap_figure({"shap_mean_abs": {"pooled": values}}, top=3)
    assert list(fig.data[0].y)[::-1] == ["f01", "f05", "f03"] and list(fig.data[0].x)[::-1] == [0.9, 0.7, 0.5]   # top of the chart first
    assert "3 largest" in fig.layout.title.text


PBO_GATE = {"automl_run": "automl-x", "window": {"start": "2025-10-13T03:45:00+00:00", "end": "2025-10-30T09:58:00+00:00"},
            "pbo": {"pbo": 0.4880952381, "reason": "", "per_segment": [{"segment": 0, "pbo": 0.9166666667, "n_trials": 4, "n_days": 20},
                                                                      {"segment": 1, "pbo": 0.0595238095, "n_trials": 4, "n_days": 20}]},
            "criteria": [{"name": n, "value": 1.0, "threshold": 0.5, "rule": ">=", "passed": True} for n in
                         ("oos_sharpe", "deflated_sharpe", "policy_psr", "sortino", "profit_factor", "max_drawdown", "brier",
                          "log_loss", "pbo", "min_trades")]}


def test_decision_summary_says_which_criteria_use_automls_in_sample_days_and_pbo_per_segment():
    """Review finding: the decision summary said every criterion was measured on the gate window, but pbo uses only AutoML's
    trial returns on in-sample days and the DSR's trial-Sharpe spread too; the pack showed only PBO's mean of two segments."""
    trials = pd.DataFrame({"trial_key": ["a", "a", "b", "b"], "segment": [0, 0, 1, 1], "return": [0.01, -0.01, 0.02, 0.0],
                           "day": pd.to_datetime(["2025-08-01", "2025-09-01", "2025-08-18", "2025-09-15"])})
    text = packs.criteria_sources(PBO_GATE, trials)
    assert "Every criterion" not in text
    assert text.startswith("Measured on the gate window: `oos_sharpe`, `policy_psr`, `sortino`, `profit_factor`, `max_drawdown`, "
                           "`brier`, `log_loss`, `min_trades`.")
    assert "`pbo` uses AutoML's trial returns only" in text and "segment 0: 2025-08-01 → 2025-09-01 (2 days)" in text
    assert "segment 0: **0.9167** (4 trials, 20 days); segment 1: **0.0595** (4 trials, 20 days)" in text
    assert "segment 0: **0.9167**" in packs.overfitting_summary(PBO_GATE)
    # no trial returns at hand: the gate's automl_check still dates them; an old report without per_segment still renders
    old = packs.criteria_sources({**PBO_GATE, "pbo": {"pbo": 0.2}, "automl_check": {"last_trial_day": "2025-09-15", "n_trial_days": 30}})
    assert "30 days up to 2025-09-15" in old and "not recorded in this run" in old


def test_prior_row_units_and_what_every_criterion_measures():
    """Review finding: the model table called the class-prior forecast a 'majority-class baseline' (the gate calls it the
    class prior); the decision table showed return_net as a fraction beside percent drawdowns and costs without a rupee
    sign; the gate table left `measures` blank for six criteria."""
    metrics = {"n": 10, "brier": 0.56, "log_loss": 0.9}
    report = {"cv": {"metrics": metrics, "folds": [], "per_regime": {}}, "regimes": {"routes": {}},
              "holdout": {"calibrated": metrics, "raw": metrics, "majority_baseline": metrics}}
    names = packs.cv_tables(report)["summary"].model.tolist()
    assert not any("majority" in n for n in names) and names[2].startswith("class prior")
    gate = {"candidate": {"backtest": {"return_net": 0.0149531782, "total_costs": 90227.5845, "max_drawdown_net": 0.0027141325},
                          "probabilities": {"model": {}}}}
    t = packs.candidate_vs_production(gate, keys=("return_net", "total_costs", "max_drawdown_net")).set_index("metric").candidate
    assert t["return_net (% of account)"] == "1.495 %" and t["total_costs (₹)"] == "₹90,227.58" and t["max_drawdown_net (% of peak)"] == "0.271 %"
    table = packs.gate_table(PBO_GATE)
    assert table.measures.str.len().gt(0).all() and "per-bar" in table.set_index("criterion").measures["sortino"]
    assert "in-sample days" in table.set_index("criterion").measures["pbo"]


# ---------------------------------------------------------------- a signer's restructuring items: what failed first, each number once
NSE_DEMO_GATE = {"decision": "FAIL", "failed": ["policy_psr", "pbo"], "criteria": [   # the demo NSE gate report's criteria
    {"name": "oos_sharpe", "note": "", "passed": True, "rule": "> 0 (no production model)", "threshold": 0.0, "value": 6.3321294598},
    {"name": "deflated_sharpe", "note": "", "passed": True, "rule": ">=", "threshold": 0.95, "value": 0.9626293596},
    {"name": "policy_psr", "note": "net daily Sharpe 0.275 over 12 sessions (normal (the sample moments would have narrowed it)), not deflated",
     "passed": False, "rule": ">=", "threshold": 0.95, "value": 0.8148106883},
    {"name": "sortino", "note": "", "passed": True, "rule": ">=", "threshold": 1.2, "value": 9.1662423307},
    {"name": "profit_factor", "note": "", "passed": True, "rule": ">=", "threshold": 1.15, "value": 1.3932955861},
    {"name": "max_drawdown", "note": "", "passed": True, "rule": "<= 6 %", "threshold": 0.06, "value": 0.0056812578},
    {"name": "brier", "note": "", "passed": True, "rule": "<= class prior", "threshold": 0.563980927, "value": 0.542380899},
    {"name": "log_loss", "note": "", "passed": True, "rule": "<= class prior", "threshold": 0.9010633109, "value": 0.8675995785},
    {"name": "pbo", "note": "", "passed": False, "rule": "<=", "threshold": 0.5, "value": 0.5178571429},
    {"name": "min_trades", "note": "", "passed": True, "rule": ">=", "threshold": 30, "value": 93}]}


def test_decision_summary_names_every_failed_criterion_with_value_threshold_rule_and_meaning():
    """Signer's item: the failing criterion was explained far down the page. The banner at the top names each failed
    criterion with its value, threshold and rule, and one plain sentence of what failing it means."""
    top = packs.decision_banner(NSE_DEMO_GATE)
    assert "GATE FAIL — policy_psr, pbo" in top and "2 of 10 criteria failed" in top
    assert "<b>policy_psr</b>: value <b>0.8148</b>, threshold <b>0.95</b>, rule <code>&gt;=</code>" in top
    assert "<b>pbo</b>: value <b>0.5179</b>, threshold <b>0.5</b>, rule <code>&lt;=</code>" in top
    assert "not reliably above zero" in top and "overfitted" in top                 # what failing each means, in words
    assert "<b>sortino</b>" not in top and "Tightest margin" not in top              # passes are not listed as failures
    drawdown = {**NSE_DEMO_GATE, "failed": ["max_drawdown"], "criteria": [{**NSE_DEMO_GATE["criteria"][5], "value": 0.071, "passed": False}]}
    assert "<b>max_drawdown</b>: value <b>7.100 %</b>, threshold <b>6.000 %</b>, rule <code>&lt;= 6 %</code>" in packs.decision_banner(drawdown)


def test_a_criterion_the_pack_does_not_know_appears_in_the_summary_and_the_table():
    """Someone adds a criterion to the gate (say, on the walk-forward windows): the pack shows it, failed or passed,
    with no code of its own, read from the report's criteria list."""
    new = {"name": "walk_forward_profitable", "value": 0.5, "threshold": 1.0, "rule": ">= (share of walk-forward windows)",
           "passed": False, "note": "1 of 2 walk-forward windows lost money"}
    gate = {**NSE_DEMO_GATE, "failed": ["policy_psr", "pbo", "walk_forward_profitable"], "criteria": NSE_DEMO_GATE["criteria"] + [new]}
    top = packs.decision_banner(gate)
    assert "3 of 11 criteria failed" in top and "GATE FAIL — policy_psr, pbo, walk_forward_profitable" in top
    assert ("<b>walk_forward_profitable</b>: value <b>0.5</b>, threshold <b>1</b>, rule <code>&gt;= (share of walk-forward windows)</code>"
            in top) and "gate note: 1 of 2 walk-forward windows lost money" in top
    row = packs.gate_table(gate).set_index("criterion").loc["walk_forward_profitable"]
    assert (row.candidate, row.threshold, row.result, row.margin) == (0.5, 1.0, "FAIL", "-50.0% of the threshold")
    own = packs.decision_banner({**gate, "criteria": [{**new, "meaning": "the re-fit models lost money in a walk-forward window"}]})
    assert "The re-fit models lost money in a walk-forward window (gate note:" in own   # the report's own words win


def test_a_pass_names_the_tightest_margin():
    """On a PASS the summary names the criterion closest to its threshold, whatever its name: here a new one, 1 % above."""
    passed = [{**c, "passed": True} for c in NSE_DEMO_GATE["criteria"] if c["name"] not in ("policy_psr", "pbo")]
    gate = {"decision": "PASS", "failed": [], "criteria": passed + [
        {"name": "policy_psr", "value": 0.985094388, "threshold": 0.95, "rule": ">=", "passed": True},
        {"name": "new_share", "value": 0.505, "threshold": 0.5, "rule": ">=", "passed": True}]}
    assert packs.tightest_criterion(gate)["name"] == "new_share"
    top = packs.decision_banner(gate)
    assert "All 10 criteria passed. <b>Tightest margin</b>: <b>new_share</b>: value <b>0.505</b>, threshold <b>0.5</b>" in top
    assert "margin +1.0% of the threshold" in top
    assert packs.tightest_criterion({**gate, "criteria": gate["criteria"][:-1]})["name"] == "deflated_sharpe"   # the demo's: 1.3 % above


def test_a_zero_threshold_criterion_is_not_ranked_against_shares_of_a_threshold():
    """Review finding: a criterion with threshold 0 (walk_forward, a pooled return of +3.1 %) had its raw value ranked against
    the others' shares of their thresholds, so it was named the tightest margin, in fraction units beside percent values."""
    crit = [{"name": "policy_psr", "value": 0.99, "threshold": 0.95, "rule": ">=", "passed": True},
            {"name": "walk_forward", "value": 0.031, "threshold": 0.0, "rule": "> 0 %", "passed": True}]
    assert packs.tightest_criterion({"decision": "PASS", "failed": [], "criteria": crit})["name"] == "policy_psr"
    assert packs.margin_text(crit[1]) == "+3.1 percentage points (threshold 0)"
    assert packs.tightest_criterion({"decision": "PASS", "failed": [], "criteria": crit[1:]}) is None


def test_the_holdout_sharpe_is_shown_once_and_referred_to_elsewhere():
    """Signer's item: the holdout net Sharpe appeared in several tables. Without a production model the candidate table
    leaves out what the criteria table shows (keeping the daily Sharpe, with its interval); the per-window tables refer."""
    days = {"2025-10-13": 0.002, "2025-10-14": -0.001, "2025-10-15": 0.0015}
    gate = {**NSE_DEMO_GATE, "production": None,
            "candidate": {"backtest": {"n_trades": 93, "sharpe_net": 6.3321294598, "sortino_net": 9.1662423307, "profit_factor_net": 1.3932955861,
                                       "max_drawdown_net": 0.0056812578, "hit_rate_net": 0.6989, "return_net": 0.0096, "total_costs": 98394.63},
                          "probabilities": {"model": {"brier": 0.542380899, "log_loss": 0.8675995785, "directional_auc": 0.6082}},
                          "daily_returns": days}}
    t = packs.candidate_vs_production(gate, skip_criteria=True, intervals={packs.DAILY_SHARPE_LABEL: "-6.04 … 10.1"})
    assert t.metric.tolist() == [packs.DAILY_SHARPE_LABEL, "hit_rate_net (share of trades)", "return_net (% of account)",
                                 "total_costs (₹)", "directional_auc"]
    assert t.set_index("metric")["candidate 95 % interval"][packs.DAILY_SHARPE_LABEL] == "-6.04 … 10.1"
    ci = pd.DataFrame({"metric": ["Sharpe (net, per-bar, annualised)", "profit factor (net)"], "estimate": [6.3321294598, 1.3932955861],
                       "lower_95": [-4.8463, 0.8854], "upper_95": [18.4073, 2.2884], "method": ["block bootstrap", "iid bootstrap"]})
    assert packs.criterion_intervals(ci, NSE_DEMO_GATE) == {"oos_sharpe": "-4.846 … 18.41", "profit_factor": "0.8854 … 2.288"}
    assert packs.gate_table(NSE_DEMO_GATE, packs.criterion_intervals(ci, NSE_DEMO_GATE)).set_index("criterion")["95 % interval"]["oos_sharpe"] == "-4.846 … 18.41"
    windows = pd.DataFrame({"window": ["in_sample", "out_of_sample"], "strategy": ["ml_signal"] * 2, "sharpe": [31.01, 6.3321294598]})
    referred = packs.refer_cells(windows, "sharpe", 6.3321294598, "→ oos_sharpe", windows.window == "out_of_sample")
    assert referred.sharpe.tolist() == ["31.01", "→ oos_sharpe"]


def test_automl_trial_table_puts_identity_and_results_before_hyper_parameters():
    "Signer's item: the trial table opened with hyper-parameters and run times, alphabetically; who and how it did come first."
    trial = {"cv_directional_auc": 0.63, "duration_s": 7.7, "family": "lightgbm", "folds_run": 3, "last_cv_log_loss": 0.8996, "n_days": 20,
             "number": 0, "params": {"bagging_fraction": 0.76, "learning_rate": 0.076, "num_leaves": 36}, "segment": 1, "sharpe": 1.203,
             "state": "COMPLETE", "trial_key": "s01-lightgbm-t000", "value": 0.8996}
    t = packs.automl_trials_table({"trials": [trial, {**trial, "segment": 0, "number": 3, "trial_key": "s00-lightgbm-t003"}]})
    cols = t.columns.tolist()
    assert cols[:7] == ["segment", "family", "trial", "state", "objective (CV log-loss)", "last_cv_log_loss", "sharpe"]
    assert max(cols.index(c) for c in ("n_days", "cv_directional_auc", "folds_run")) < cols.index("bagging_fraction")
    assert cols[-2:] == ["trial_key", "duration_s"] and t.segment.tolist() == [0, 1]


def test_each_regime_table_names_its_scheme():
    "Signer's item: the pack used the labels' forward regimes and the model's HMM regimes without saying which was which."
    text = packs.label_regime_text({"regime_bars": 30})
    assert "forward market regime" in text and "the next 30 bars" in text and "model does not use it" in text
    report = {"config": {"n_regimes": 3}, "regimes": {"features": ["ret_1", "ret_std_20"], "routes": {"0": "regime_0", "1": "pooled", "2": "regime_2"}}}
    model = packs.model_regime_text(report, {"n_regimes": 3, "feature_columns": ["ret_1", "ret_std_20"], "order_by": "ret_std_20"})
    assert "the 3 states of a Gaussian HMM on `ret_1`, `ret_std_20`" in model and "0 (calmest) to 2 (most stressed)" in model
    assert "1 → pooled" in model and "not the labels' forward market regime" in model
    assert packs.REGIME_BREAKDOWN.startswith("model regime (HMM state")


def test_the_gates_walk_forward_criterion_is_shown_in_percent_and_not_as_a_gate_window_figure():
    "The gate's new `walk_forward` criterion (a pooled net return, a fraction) reads in percent and is not said to be on the gate window."
    wf = {"name": "walk_forward", "value": -0.0042, "threshold": 0.0, "passed": False, "note": "203 trades over 20 sessions",
          "rule": "> 0 %: net return pooled over the walk-forward windows (the procedure re-fit before the holdout)"}
    top = packs.decision_banner({"decision": "FAIL", "failed": ["walk_forward"], "criteria": [NSE_DEMO_GATE["criteria"][0], wf]})
    assert "<b>walk_forward</b>: value <b>-0.420 %</b>, threshold <b>0.000 %</b>" in top and "did not make money in the walk-forward windows" in top
    text = packs.criteria_sources({"criteria": [NSE_DEMO_GATE["criteria"][0], wf]})
    assert text.startswith("Measured on the gate window: `oos_sharpe`.") and "`walk_forward`: measured on the walk-forward windows" in text


# ---------------------------------------------------------------- units and directions read from the gate report
def test_a_criterion_whose_unit_is_fraction_percent_is_shown_in_percent_whatever_its_name():
    """The pack guessed a criterion's unit from its own list of names (`PERCENT_CRITERIA`): a new criterion stored as a
    fraction read -0.0123 beside a rule in percent. The gate report now says `unit`; a unit the pack does not know still
    renders, as the plain number."""
    new = {"name": "holdout_return", "value": -0.0123, "threshold": 0.0, "rule": "> 0 %: net return on the holdout", "passed": False,
           "note": "", "unit": "fraction_percent", "direction": "min"}
    assert new["name"] not in packs.PERCENT_CRITERIA
    gate = {**NSE_DEMO_GATE, "failed": ["policy_psr", "pbo", "holdout_return"], "criteria": NSE_DEMO_GATE["criteria"] + [new]}
    assert "<b>holdout_return</b>: value <b>-1.230 %</b>, threshold <b>0.000 %</b>" in packs.decision_banner(gate)
    row = packs.gate_table(gate).set_index("criterion").loc["holdout_return"]
    assert (row.candidate, row.threshold, row.margin) == ("-1.230 %", "0.000 %", "-1.23 percentage points (threshold 0)")
    odd = {"name": "spread", "value": 12.5, "threshold": 20, "rule": "<= 20 bps", "passed": False, "note": "", "unit": "basis_points",
           "direction": "max"}
    row = packs.gate_table({"criteria": [odd]}).iloc[0]
    assert (row.candidate, row.threshold, row.margin) == (12.5, 20, "+37.5% of the threshold")
    assert "<b>spread</b>: value <b>12.5</b>, threshold <b>20</b>" in packs.decision_banner({"decision": "FAIL", "failed": ["spread"], "criteria": [odd]})


def test_the_passing_side_is_the_reports_direction_not_the_rules_first_character():
    """The pack read which side of a threshold passes from the rule text's first character: a rule worded '> 0.5 fails ...'
    turned a comfortable pass into a negative margin and was named the tightest. The gate report now says `direction`;
    a direction the pack does not know gives no margin rather than the rule text's guess."""
    pbo = {"name": "pbo", "value": 0.3, "threshold": 0.5, "rule": "> 0.5 fails the gate (overfitted search)", "passed": True, "note": "",
           "unit": "probability", "direction": "max"}
    trades = {"name": "min_trades", "value": 45, "threshold": 30, "rule": "< 30 trades fail", "passed": True, "note": "",
              "unit": "count", "direction": "min"}
    psr = {"name": "policy_psr", "value": 0.985, "threshold": 0.95, "rule": ">=", "passed": True, "note": "", "unit": "probability",
           "direction": "min"}
    assert (packs.rule_direction(pbo["rule"]), packs.rule_direction(trades["rule"])) == (1, -1)   # what the wording alone suggests
    assert packs.criterion_margin(pbo) == pytest.approx(0.4) and packs.criterion_margin(trades) == pytest.approx(0.5)
    gate = {"decision": "PASS", "failed": [], "criteria": [pbo, trades, psr]}
    margins = packs.gate_table(gate).set_index("criterion").margin
    assert (margins["pbo"], margins["min_trades"]) == ("+40.0% of the threshold", "+50.0% of the threshold")
    assert packs.tightest_criterion(gate)["name"] == "policy_psr" and "margin +3.7% of the threshold" in packs.decision_banner(gate)
    assert packs.margin_text({**pbo, "direction": "between"}) == "—"


def test_an_old_gate_report_without_units_or_directions_renders_as_before():
    """Reports written before the gate recorded `unit` and `direction` lack both: for them only the pack falls back on
    `PERCENT_CRITERIA` and the rule text, and shows them as it always did; the same criteria with the keys the gate now
    writes (`CRITERION_SCALES`) show exactly the same."""
    wf = {"name": "walk_forward", "value": -0.0042, "threshold": 0.0, "passed": False, "note": "203 trades over 20 sessions",
          "rule": "> 0 %: net return pooled over the walk-forward windows (the procedure re-fit before the holdout)"}
    old = {**NSE_DEMO_GATE, "failed": ["policy_psr", "pbo", "walk_forward"], "criteria": NSE_DEMO_GATE["criteria"] + [wf]}
    assert not any("unit" in c or "direction" in c for c in old["criteria"])
    table = packs.gate_table(old).set_index("criterion")[["candidate", "threshold", "margin"]]
    assert table.loc["max_drawdown"].tolist() == ["0.568 %", "6.000 %", "+90.5% of the threshold"]
    assert table.loc["walk_forward"].tolist() == ["-0.420 %", "0.000 %", "-0.42 percentage points (threshold 0)"]
    assert table.loc["pbo"].tolist() == [0.5178571429, 0.5, "-3.6% of the threshold"]
    assert table.loc["brier", "margin"] == "+3.8% of the threshold" and table.loc["min_trades"].tolist() == [93, 30, "+210.0% of the threshold"]
    top = packs.decision_banner(old)
    assert "<b>walk_forward</b>: value <b>-0.420 %</b>, threshold <b>0.000 %</b>" in top and "<b>pbo</b>: value <b>0.5179</b>" in top
    from oi_ml.gate import CRITERION_SCALES   # the keys the gate writes now
    keyed = {**old, "criteria": [{**c, "unit": CRITERION_SCALES[c["name"]][0], "direction": CRITERION_SCALES[c["name"]][1]}
                                 for c in old["criteria"]]}
    assert packs.gate_table(keyed).equals(packs.gate_table(old)) and packs.decision_banner(keyed) == top


# ---------------------------------------------------------------- model-risk review of the demo packs (profit concentration and more)
def _window(days_pnl, account=1_000_000.0, sides=None, start="2025-10-13"):
    "An equity curve of one bar an hour over IST sessions whose net P&L are `days_pnl`, and one trade a session carrying it."
    days = pd.bdate_range(start, periods=len(days_pnl))
    ts = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in (4, 9)]).tz_localize("UTC")
    close = account + np.cumsum(days_pnl)
    equity = pd.DataFrame({"timestamp": ts, "equity_net": np.repeat(close, 2) - np.tile([1.0, 0.0], len(days))})
    entry = ts[1::2] - pd.Timedelta("30min")
    trades = pd.DataFrame({"entry_time": entry, "exit_time": entry + pd.Timedelta("15min"), "net_pnl": np.asarray(days_pnl, float),
                           "side": sides if sides is not None else [1] * len(days)})
    return equity, trades.assign(gross_pnl=trades.net_pnl + 10.0, costs=10.0, notional=1e6)


def test_profit_concentration_per_window_flags_a_session_carrying_most_of_the_net():
    """Review finding: NSE's holdout net (₹48,123) came 96 % from one session (daily Sharpe 4.37 -> 0.39 without it) and
    walk_forward_0's 102 %; the pack said neither. Every window gets the best session's share and the figures without it."""
    oos_eq, oos_tr = _window([-5_000.0, 2_000.0, 40_000.0, -1_000.0, 3_000.0])         # net 39,000; best 40,000: 102.6 %
    wf_eq, wf_tr = _window([4_000.0, 5_000.0, 3_000.0, -1_000.0], start="2025-09-01")   # best 5,000 of 11,000: 45 %, not flagged
    frame = packs.concentration_frame({"out_of_sample": oos_eq, "walk_forward_0": wf_eq}, {"out_of_sample": oos_tr, "walk_forward_0": wf_tr}, 1e6)
    assert frame.window.tolist() == ["walk_forward_0", "out_of_sample"]
    oos = frame.set_index("window").loc["out_of_sample"]
    assert oos["net P&L (₹)"] == pytest.approx(39_000.0) and str(oos["best session"]) == "2025-10-15"
    assert oos["best session's share of net"] == pytest.approx(40_000 / 39_000)
    closes = 1e6 + np.cumsum([-5_000.0, 2_000.0, 40_000.0, -1_000.0, 3_000.0])
    r = closes / np.r_[1e6, closes[:-1]] - 1
    rest = np.delete(r, 2)
    assert oos["net return without best session"] == pytest.approx(np.prod(1 + rest) - 1, rel=1e-12)
    assert oos["daily Sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-9)
    assert oos["daily Sharpe without best session"] == pytest.approx(rest.mean() / rest.std(ddof=1) * math.sqrt(252), rel=1e-9)
    assert frame.note.tolist() == ["", "one session carries more than half the net P&L"]
    flag = packs.concentration_flags(frame)
    assert "`out_of_sample`: session 2025-10-15 carries **103%** of the net P&L (₹40,000 of ₹39,000)" in flag and "walk_forward_0" not in flag
    sessions = packs.session_pnl(oos_eq, 1e6, oos_tr)
    assert sessions.trades.tolist() == [1] * 5 and sessions["net P&L (₹)"].tolist() == pytest.approx([-5_000, 2_000, 40_000, -1_000, 3_000])


def test_a_one_month_window_has_no_month_table():
    "Review finding: the 'by month' table of a holdout inside one month had a single row repeating the window's total."
    _, one = _window([1_000.0, -500.0, 700.0])
    assert "month" not in packs.performance_breakdowns(one)
    _, two = _window([1_000.0, -500.0, 700.0, 300.0], start="2025-09-29")              # Sep 29, 30, Oct 1, 2
    assert packs.performance_breakdowns(two)["month"].n_trades.tolist() == [2, 2]


def test_trades_by_side_in_every_window():
    "Review finding: BSE walk_forward_1's 67 SELL trades lost ₹96,431 while its 44 BUY made ₹15,417; the pack had no side split."
    _, wf = _window([3_000.0, -4_000.0, -2_000.0, 1_000.0], sides=[1, -1, -1, 1])
    _, oos = _window([500.0, 700.0], sides=[1, 1])
    table = packs.side_breakdown({"out_of_sample": oos, "walk_forward_1": wf})
    assert table[["window", "side", "n_trades"]].values.tolist() == [["walk_forward_1", "BUY (long)", 2], ["walk_forward_1", "SELL (short)", 2],
                                                                     ["out_of_sample", "BUY (long)", 2], ["out_of_sample", "SELL (short)", 0]]
    assert table.total_pnl_net.tolist() == pytest.approx([4_000.0, -6_000.0, 1_200.0, 0.0])
    assert table.hit_rate_net.iloc[:2].tolist() == pytest.approx([1.0, 0.0])


def test_a_psi_level_above_the_ceiling_cannot_alert_and_every_such_used_feature_is_listed():
    """Review finding: 'drift alert at PSI 10.9 … near the PSI ceiling 8.6, so PSI can hardly alert' — a level above the largest
    PSI possible can never alert; and the table's 15 rows hid other used features in that state (iv_skew, vix on BSE)."""
    w = {"rows": 2000, "windows": 380, "side_by_side": 20, "q95": 2.1, "max": 10.9, "max_apart": 10.0}
    dist = {f"f{i}": {"edges": [0.0], "proportions": [0.5, 0.5], "range": [-1.0, 1.0], "window_psi": w} for i in range(20)}
    dist["calm"] = {"edges": [0.0], "proportions": [0.5, 0.5], "window_psi": w | {"max": 0.1, "max_apart": 0.1}}
    m = packs.monitoring_baseline({"metrics_summary": {}, "feature_distribution": dist}, top=2, used=["f3", "f18", "calm"]).set_index("item").value
    row = m["feature f3 (used by the model): 1 of 1 training decile edges; drift level"]
    assert "cannot alert: its level is above the largest PSI possible, 4.6" in row and "only the out-of-range alert is left" in row
    assert "can hardly" not in row
    assert m["PSI alert cannot fire (used features)"].startswith("2 of 3 used features: f3, f18 — ")   # f18 is not among the rows shown


def test_break_even_is_stated_on_the_all_in_cost_basis():
    """Review finding: 'it breaks even near 1.7 bps a leg' beside settings saying 'costs 1.5 bps a leg': the break-even was
    transaction cost alone (0.5 bps slippage on top), the 1.5 all-in."""
    grid = [{"cost_bps": c, "min_confidence": 0.65, "return_net": r} for c, r in [(0.0, 0.0227), (1.0, 0.0096), (2.0, -0.0035), (5.0, -0.04)]]
    text = packs.sensitivity_commentary(grid, {"transaction_cost_bps": 1.0, "slippage_bps": 0.5, "min_confidence": 0.65})
    even = 1.0 + 0.0096 / (0.0096 + 0.0035)
    assert f"it breaks even near **{even + 0.5:.2f} bps a leg all-in** ({even:.2f} bps transaction cost + 0.5 bps slippage" in text
    assert f"against the configured 1.5 bps all-in: headroom +{even - 1.0:.2f} bps a leg" in text


PBO_FAIL = {"decision": "FAIL", "automl_run": "automl-x", "criteria": [
    {"name": "deflated_sharpe", "value": 0.9626, "threshold": 0.95, "rule": ">=", "direction": "min", "passed": True, "note": ""},
    {"name": "pbo", "value": 0.5179, "threshold": 0.5, "rule": "<=", "direction": "max", "passed": False, "note": ""}],
    "pbo": {"pbo": 0.5179, "per_segment": [{"segment": 0, "pbo": 0.8968, "n_trials": 4, "n_days": 20},
                                           {"segment": 1, "pbo": 0.1389, "n_trials": 4, "n_days": 20}]}}


def test_dsr_and_pbo_say_whose_search_they_judge():
    """Review finding: the candidate was trained with the default TrainConfig, not picked from AutoML's trials, yet the pbo
    failure said 'picking the best trial is as likely luck as skill' with no word that the candidate is not a trial; and the
    per-segment text said 'usually not the best out of sample' where PBO means 'ranked below the out-of-sample median'."""
    summary = {"best_per_family": {"lightgbm": {"latest_best_params": {"learning_rate": 0.12, "num_leaves": 7}}}}
    from_search = packs.candidate_from_search({"learning_rate": 0.05, "num_leaves": 31}, "lightgbm", summary)
    assert from_search is False
    banner = packs.decision_banner(PBO_FAIL, from_search)
    assert "the candidate is not one of AutoML&#x27;s trials" in banner and "not a choice of the candidate among them" in banner
    notes = packs.gate_table(PBO_FAIL, from_search=from_search).set_index("criterion").note
    assert "judges the search around the candidate" in notes["pbo"]   # PBO reads trial returns only
    assert "deflated by a search that did not choose it" in notes["deflated_sharpe"]   # the DSR, the candidate's own Sharpe
    text = packs.criteria_sources(PBO_FAIL)
    assert "ranked below the out-of-sample median" in text and "usually not the best out of sample" not in text


def test_an_interval_across_the_threshold_is_flagged_in_the_criteria_table():
    "Review finding: NSE's oos_sharpe interval −4.8…18.4 (threshold 0) and profit factor 0.885…2.29 (1.15) passed unremarked."
    ci = pd.DataFrame({"metric": ["Sharpe (net, per-bar, annualised)", "profit factor (net)"], "estimate": [6.33, 1.39],
                       "lower_95": [-4.85, 0.885], "upper_95": [18.4, 2.29], "method": ["block", "iid"]})
    gate = {"criteria": [{"name": "oos_sharpe", "value": 6.33, "threshold": 0.0, "rule": ">", "direction": "min", "passed": True},
                         {"name": "profit_factor", "value": 1.39, "threshold": 1.15, "rule": ">=", "direction": "min", "passed": True},
                         {"name": "max_drawdown", "value": 0.005, "threshold": 0.06, "rule": "<=", "direction": "max", "passed": True}]}
    table = packs.gate_table(gate, packs.criterion_intervals(ci, gate), crossing=packs.criteria_crossing(ci, gate)).set_index("criterion")
    assert table.note.to_dict() == {"oos_sharpe": "95 % interval crosses the threshold", "profit_factor": "95 % interval crosses the threshold",
                                    "max_drawdown": ""}


def test_holdout_per_regime_and_regimes_without_trades():
    """Review finding: the holdout's per-regime metrics (saved in the training report) were not shown, and a model regime
    that made no out-of-sample trade was left out of 'performance by model regime' instead of shown as 0 trades."""
    report = {"holdout": {"per_regime": {"0": {"n": 79, "brier": 0.59}, "1": {"n": 1377, "brier": 0.48}, "2": {"n": 3032, "brier": 0.53}}},
              "regimes": {"routes": {"0": "regime_0", "1": "regime_1", "2": "regime_2"}}}
    table = packs.holdout_regime_table(report)
    assert table[["regime", "rows", "share of holdout rows"]].values.tolist() == [["0", 79, "1.8%"], ["1", 1377, "30.7%"], ["2", 3032, "67.6%"]]
    _, trades = _window([1_000.0, -500.0, 700.0])
    by = packs.performance_breakdowns(trades.assign(regime=[1, 2, 2]), regimes=list(report["regimes"]["routes"]))[packs.REGIME_BREAKDOWN]
    assert by.index.tolist() == ["0", "1", "2"] and by.n_trades.tolist() == [0, 1, 2]


def test_dsr_note_under_the_plain_trial_variance():
    "Review finding: the DSR's verdict under the plain (unpooled) trial variance was only in a later 'DSR sensitivity' paragraph."
    from oi_ml.metrics import expected_max_sharpe, probabilistic_sharpe_ratio
    trials = pd.DataFrame({"trial_key": np.repeat(["a", "b", "c"], 4), "return": [1.0, 2, 3, 4, 1, 3, 2, 6, 0, 1, 0, 2]})
    gate = {"dsr": {"n_trials": 4, "sr_daily": 1.0, "n_days": 12, "moments": "normal (x)", "reason": "", "sr_variance": 0.05},
            "gate_config": {"dsr_confidence": 0.95},
            "criteria": [{"name": "deflated_sharpe", "value": 0.96, "threshold": 0.95, "rule": ">=", "passed": True, "note": ""}]}
    sr = trials.groupby("trial_key")["return"].agg(lambda r: r.mean() / r.std(ddof=1))
    dsr = probabilistic_sharpe_ratio(1.0, expected_max_sharpe(4, float(sr.var(ddof=1))), 12)
    note = packs.gate_table(gate, notes={"deflated_sharpe": packs.plain_dsr_note(gate, trials)}).note.iloc[0]
    assert f"the DSR would be {dsr:.4f} ({'passes' if dsr >= 0.95 else 'fails'} the 0.95 threshold)" in note


def test_gate_window_identity_walk_forward_window_length_and_unmonitored_hmm_inputs():
    """Review findings: 'so the gate's figures and these can differ' when they were identical; 'rolling automl_window_days
    sessions' without the number; the BSE model reads regime_prob_1, which the monitoring baseline has no distribution for."""
    m = {"n_trades": 95, "return_net": 0.0246142112, "sharpe_net": 15.9668221638}
    same = packs.gate_window_comparison({"candidate": {"backtest": m}}, {"benchmarks": {"ml_signal": m | {"return_net": 0.02461421116576279}}})
    assert "identical figures" in same and "differ" not in same
    assert "differ in n_trades" in packs.gate_window_comparison({"candidate": {"backtest": m}}, {"benchmarks": {"ml_signal": m | {"n_trades": 94}}})
    method = {"method": "re-run on that segment's training sessions only (rolling automl_window_days sessions before the window)"}
    assert "rolling 20 sessions (automl_window_days) before" in packs.walk_forward_method_text(method, {"segmentation": {"window_days": 20}})
    note = packs.unmonitored_inputs_note(["vix", "regime_prob_1"], {"feature_distribution": {"vix": {}}})
    assert "no drift alert watches them: regime_prob_1" in note and "derived by the regime HMM" in note


def test_review_of_the_new_pack_figures_interval_dsr_search_psi_band_and_short_windows():
    """A review of the risk-review fixes found five ways they could mislead; each is pinned here."""
    ci = pd.DataFrame({"metric": ["Sharpe (net, per-bar, annualised)"], "estimate": [6.3321], "lower_95": [-4.8463],
                       "upper_95": [18.4073], "method": ["block"]})
    # the gate judged oos_sharpe on a narrowed comparison window (value 9.5 vs production's 3.0): the whole holdout's interval
    # around 6.33 says nothing about that comparison, so no 'crosses the threshold' flag
    narrowed = {"criteria": [{"name": "oos_sharpe", "value": 9.5, "threshold": 3.0, "rule": ">=", "direction": "min", "passed": True}]}
    assert packs.criteria_crossing(ci, narrowed) == set()
    assert packs.criteria_crossing(ci, {"criteria": [dict(narrowed["criteria"][0], value=6.3321)]}) == {"oos_sharpe"}
    # the DSR deflates the candidate's own holdout Sharpe: not "a judgement of the search" as PBO is
    gate = {"criteria": [{"name": "deflated_sharpe", "value": 0.9, "threshold": 0.95, "rule": ">=", "passed": False},
                         {"name": "pbo", "value": 0.6, "threshold": 0.5, "rule": "<=", "passed": False}]}
    dsr_note, pbo_note = packs.gate_table(gate, from_search=False).note
    assert "the candidate's own holdout Sharpe, deflated by a search that did not choose it" in dsr_note
    assert "judges the search around the candidate" in pbo_note and "judges the search" not in dsr_note
    # nothing recorded on both sides is unknown, not "trained with AutoML's best parameters"
    assert packs.candidate_from_search({"learning_rate": 0.1}, "lightgbm",
                                       {"best_per_family": {"lightgbm": {"latest_best_params": {"max_depth": 4}}}}) is None
    # a training-window PSI level equal to the ceiling is never reached (the monitor judges PSI x (1 - 1e-9))
    ceiling = packs.psi_ceiling({"proportions": [0.5, 0.5]})
    assert packs.psi_reach(ceiling, ceiling) == "cannot"
    # a window of two sessions: the better one always carries most of a profit; no flag
    ts = pd.DatetimeIndex(["2025-10-13 04:00", "2025-10-13 09:00", "2025-10-14 09:00"], tz="UTC")
    equity = pd.DataFrame({"timestamp": ts, "equity_net": [1005.0, 1010.0, 1100.0]})
    trades = pd.DataFrame({"entry_time": ts[[1, 2]] - pd.Timedelta("5min"), "side": [1, 1], "net_pnl": [10.0, 90.0]})
    frame = packs.concentration_frame({"w": equity}, {"w": trades}, 1000.0)
    assert frame["best session's share of net"].iloc[0] == pytest.approx(0.9) and packs.concentration_flags(frame) == ""


# ---------------------------------------------------------------- the HMM's own inputs behind the unmonitored regime_prob_*
_HMM_WINDOW = {"rows": 2000, "windows": 159, "side_by_side": 8, "q95": 3.29, "max": 10.9, "max_apart": 9.0}
_HMM_DIST = {"vix": {"edges": [15.0], "proportions": [0.5, 0.5], "range": [9.0, 21.0], "window_psi": _HMM_WINDOW},
             "ret_std_20": {"edges": [1.0], "proportions": [0.5, 0.5], "window_psi": _HMM_WINDOW | {"max": 4.5, "max_apart": 4.4}},
             "ret_1": {"edges": [0.0], "proportions": [0.5, 0.5], "window_psi": _HMM_WINDOW | {"q95": 0.01, "max": 0.03, "max_apart": 0.02}}}
_HMM_INPUTS = ["ret_1", "ret_std_20", "vix", "log_pcr_oi"]


def test_unmonitored_regime_probs_name_the_hmm_inputs_and_whether_their_alerts_can_fire():
    """Review finding: the note said regime_prob_*'s drift 'shows only through the HMM's own input features' without naming
    them, though on BSE vix's PSI level lies above the largest PSI possible. Two equal deciles: the ceiling is 4.6, so vix's
    raised level 10.9 cannot fire (its range alert is left), ret_std_20's 4.5 can hardly fire, log_pcr_oi has no distribution."""
    manifest = {"metrics_summary": {}, "feature_distribution": _HMM_DIST}
    note = packs.unmonitored_inputs_note(["ret_1", "regime_prob_1"], manifest, hmm_inputs=_HMM_INPUTS,
                                         alert_of=packs.baseline_alert_of(manifest))
    assert note.startswith(packs.unmonitored_inputs_note(["ret_1", "regime_prob_1"], manifest))   # the note as before, then the inputs
    assert note.endswith("The HMM reads 4 feature(s), and the monitor watches them as follows: ret_1: drift alert at PSI 0.25; "
                         "ret_std_20: PSI alert can hardly fire (level 4.5, near the largest PSI possible, 4.6); "
                         "vix: PSI alert cannot fire (level 10.9, above the largest PSI possible, 4.6), so only its out-of-range "
                         "alert is left; log_pcr_oi: not monitored at all (no training distribution in the baseline).")
    # the caller decides the levels: at a fixed 0.25 every distribution can alert
    fixed = packs.unmonitored_inputs_note(["regime_prob_1"], manifest, hmm_inputs=_HMM_INPUTS, alert_of=lambda n, d: (0.25, "fixed"))
    assert "vix: drift alert at PSI 0.25" in fixed and "cannot" not in fixed and "log_pcr_oi: not monitored at all" in fixed
    # no HMM-derived input unmonitored: nothing about the HMM's inputs
    assert "The HMM reads" not in packs.unmonitored_inputs_note(["ret_1", "atr"], manifest, hmm_inputs=_HMM_INPUTS,
                                                                alert_of=packs.baseline_alert_of(manifest))


def test_baseline_alert_of_is_the_monitoring_baselines_levels():
    """The alert levels the note judges are the monitoring baseline's: the training windows' level, × the drift family's
    scale for a used feature (vix here), as in its 'PSI alert cannot fire' row."""
    family = {"rows": 2000, "stride": 100, "psi_alert": 0.25, "columns": ["vix"], "windows": 20, "side_by_side": 4,
              "rate_at_scale_1": 0.5, "ratios": [0.5] * 10 + [1.2] * 8 + [1.5, 2.0]}
    manifest = {"metrics_summary": {}, "drift_family": family, "feature_distribution": _HMM_DIST}
    scale = packs.drift_family_of(manifest)["scale"]
    assert scale > 1
    alert_of = packs.baseline_alert_of(manifest)
    assert alert_of("vix", _HMM_DIST["vix"]) == (pytest.approx(10.9 * scale), "training windows")
    assert alert_of("ret_std_20", _HMM_DIST["ret_std_20"]) == (pytest.approx(4.5), "training windows")   # not in the family
    rows = packs.monitoring_baseline(manifest).set_index("item").value
    assert rows["PSI alert cannot fire (features)"].startswith("1 of 3 features: vix")
    assert rows["PSI alert can hardly fire (features)"].startswith("1 of 3 features: ret_std_20")


@pytest.mark.slow
def test_candidate_pack_names_the_hmm_inputs_behind_regime_probs(retrained, tmp_path):
    "The template passes the run's regime_hmm.json feature columns and the baseline's levels to the note."
    src_cfg, out = retrained
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    for sub in ("datasets", "models"): shutil.copytree(Path(src_cfg.data_dir) / sub, Path(cfg.data_dir) / sub)
    run = out["candidate_run"]
    run_dir = Path(cfg.models_dir) / "NSE" / run
    selected_path = run_dir / "model_features.json"
    meta = json.loads(selected_path.read_text())
    import hashlib
    if not any(c.startswith("regime_prob_") for c in meta["selected"]):   # make the model read an HMM-derived input
        meta["selected"] = meta["selected"] + ["regime_prob_1"]
        selected_path.write_text(json.dumps(meta))
    manifest = json.loads((run_dir / "manifest.json").read_text())   # re-listed, so the run still verifies
    sha, entry = hashlib.sha256(selected_path.read_bytes()).hexdigest(), manifest["files"]["model_features.json"]
    manifest["files"]["model_features.json"] = entry | {"sha256": sha} if isinstance(entry, dict) else sha
    # a run trained before the manifest held the regime_prob_* distributions (a new run has them: no note, see below)
    manifest["feature_distribution"] = {k: v for k, v in manifest["feature_distribution"].items() if not k.startswith("regime_prob_")}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    hmm_inputs = json.loads((run_dir / "regime_hmm.json").read_text())["config"]["feature_columns"]
    html = packs.render_pack("NSE", run, dict(dataset_version=out["dataset_version"], candidate_run=run), cfg)
    text = _outputs(html.with_suffix(".ipynb"))
    assert f"The HMM reads {len(hmm_inputs)} feature(s), and the monitor watches them as follows: {hmm_inputs[0]}: " in text
    for c in hmm_inputs: assert f"; {c}: " in text or f"follows: {c}: " in text, c


def test_a_run_whose_manifest_holds_the_regime_probabilities_has_no_unmonitored_note(tmp_path):
    """A model that reads regime_prob_1 (forced in place of its last-ranked pick) and was trained with the probabilities'
    training distributions: the pack's note names no unmonitored input, and the monitoring baseline lists the
    probability as a feature the model uses, with its training-window drift level."""
    from conftest import deploy_tiny_model
    from oi_ml.monitor import model_columns
    from oi_ml.registry import version_dir
    cfg, _, manifest = deploy_tiny_model(tmp_path, "pack regime probabilities", live_rows=500, force_selected="regime_prob_1")
    folder = version_dir("NSE", run_cfg=cfg)
    selected = json.loads((folder / "model_features.json").read_text())["selected"]
    hmm_inputs = json.loads((folder / "regime_hmm.json").read_text())["config"]["feature_columns"]
    assert "regime_prob_1" in selected
    alert_of = packs.baseline_alert_of(manifest, cfg.monitoring)
    assert packs.unmonitored_inputs_note(selected, manifest, hmm_inputs=hmm_inputs, alert_of=alert_of) == ""
    used = model_columns(folder, manifest)[1]
    assert "regime_prob_1" in used
    items = packs.monitoring_baseline(manifest, top=len(used), monitoring=cfg.monitoring, used=used).set_index("item").value
    row = next(v for k, v in items.items() if k.startswith("feature regime_prob_1 (used by the model): "))
    assert "500-row training windows" in row and "family scale" in row, row
    # the same run as one trained before the distributions: the note names the probability and the HMM's inputs
    old = {**manifest, "feature_distribution": {k: v for k, v in manifest["feature_distribution"].items() if not k.startswith("regime_prob_")}}
    note = packs.unmonitored_inputs_note(selected, old, hmm_inputs=hmm_inputs, alert_of=packs.baseline_alert_of(old, cfg.monitoring))
    assert "regime_prob_1 is derived by the regime HMM" in note and "is not caught" in note
    assert f"The HMM reads {len(hmm_inputs)} feature(s)" in note


# ---------------------------------------------------------------- provenance review: mixed data, imported files, fold routes, searched parameters
MIXED_MANIFEST = {"exchange": "NSE", "version": "2025-08-07", "source": "imported+simulated", "simulated": True, "data_origin": "mixed",
                  "row_count": 750, "row_origin": {"imported": 375, "simulated": 0, "mixed": 375},
                  "inputs": {"underlying_bars": {"table": "underlying_bars", "rows": 750, "sources": {"imported": 750}},
                             "option_chain": {"table": "option_chain_snapshots", "rows": 373, "sources": {"simulated": 373}},
                             "fii_flow": {"table": "macro_signals", "rows": 375, "sources": {"simulated": 375}}},
                  "batches": [{"batch_id": "sim-NSE-1", "kind": "simulate", "source": "simulated", "config": {"signal_strength": 0.3}}]}


def test_a_mixed_dataset_is_labelled_mixed_with_its_shares_and_simulated_inputs():
    "Review finding: imported bars with the simulator's chain and flows were labelled entirely simulated (or, by the bars, imported)."
    banner = packs.source_banner(MIXED_MANIFEST)
    assert "MIXED DATA" in banner and "every number in this pack comes from oi_ml&#x27;s built-in market simulator" not in banner
    assert "375 of 750 rows (50.0%) take every value from imported files" in banner and "375 of 750 rows (50.0%) combine both" in banner
    assert "option chain (373 rows)" in banner and "FII flows (375 rows)" in banner
    assert "signal_strength 0.3" in banner and "In the simulated inputs listed above (not the imported ones), the simulator plants" in banner   # the planted signal: simulated part only
    # an older manifest (bars' sources only): mixed from its source, with the bars' shares from the dataset
    old = {"source": "imported+simulated", "simulated": True, "row_count": 4, "batches": []}
    frame = pd.DataFrame({"source": ["imported", "imported", "imported", "simulated"]})
    old_banner = packs.source_banner(old, frame)
    assert "MIXED DATA" in old_banner and "3 of 4 bars (75.0%) imported" in old_banner and "does not record the sources" in old_banner
    assert packs.dataset_summary({**MIXED_MANIFEST, "window_start": "2025-08-06T03:45:00+00:00", "window_end": "2025-08-07T09:59:00+00:00",
                                  "symbols": ["NIFTY"], "columns": {}, "content_sha256": "x", "git_commit": "g", "created_at": "2025",
                                  "files": {}}).set_index("item").loc["data origin", "value"] == "mixed"


def test_the_index_marks_a_mixed_pack_with_its_shares(tmp_path):
    "Review finding: the index called a pack of mixed data SIMULATED (the gate report's bool); it reads the dataset's origin now."
    out = tmp_path / "reports" / "NSE" / "run-m"; out.mkdir(parents=True)
    (out / "approval_pack.html").write_text("<html></html>")
    nb = nbformat.v4.new_notebook(); nb.metadata["papermill"] = {"parameters": {"candidate_run": "run-m", "data_dir": str(tmp_path / "data")}}
    nbformat.write(nb, out / "approval_pack.ipynb")
    gate_dir = tmp_path / "data" / "models" / "NSE" / "run-m" / "reports"; gate_dir.mkdir(parents=True)
    (gate_dir / "gate_report.json").write_text(json.dumps({"decision": "PASS", "simulated_data": True, "window": {"dataset_version": "2025-08-07"}}))
    ds = tmp_path / "data" / "datasets" / "NSE" / "2025-08-07"; ds.mkdir(parents=True)
    (ds / "manifest.json").write_text(json.dumps(MIXED_MANIFEST))
    page = packs.render_index(RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))).read_text()
    assert "MIXED DATA" in page and "PASS (on mixed data)" in page and ">SIMULATED DATA<" not in page
    assert "375 of 750 rows (50.0%) take every value from imported files" in page and "1 of 1 packs come from MIXED DATA" in page
    assert packs.pack_entries(tmp_path / "reports").origin.tolist() == ["mixed"]


def test_the_validation_table_names_each_imported_file_and_its_sha256():
    "Review finding: the pack said 'imported files listed under Data lineage' but named no file."
    imp = {"batch_id": "ohlcv-NSE-NIFTY-5d65b865bec9", "kind": "bars", "source": "imported", "file": "/data/in/nifty_aug6_7_1m.csv",
           "status": "stored", "rows_in": 750, "rows_stored": 750, "rows_quarantined": 0, "validation_report": {"ok": True, "counts": {}}}
    recorded = {**imp, "batch_id": "bhav-NSE-1", "file": "/data/in/bhav.csv", "sha256": "ab" * 32}
    t = packs.validation_summary({"batches": [imp, recorded]})
    assert t.file.tolist() == ["/data/in/nifty_aug6_7_1m.csv", "/data/in/bhav.csv"]
    assert t["file sha256"].tolist() == ["5d65b865bec9… (from the batch id)", "ab" * 32]


def test_the_cv_regime_table_shows_the_folds_routes_not_only_the_final_models():
    "Review finding: per-regime CV metrics sat beside the final model's routes, though every fold routed that regime to the pooled model."
    report = {"cv": {"metrics": {"brier": 0.2}, "per_regime": {"1": {"brier": 0.21, "n": 600}},
                     "folds": [{"fold": i, "rounds": 50, "metrics": {"brier": 0.2}, "routes": {"1": "pooled"}} for i in range(3)]},
              "regimes": {"routes": {"1": "regime_1"}}, "holdout": {"calibrated": {}, "raw": {}, "majority_baseline": {}}}
    row = packs.cv_tables(report)["regimes"].iloc[0]
    assert row["model in the CV folds"] == "pooled in folds 0–2" and row["final model"] == "regime_1"


def test_an_xgboost_candidate_cannot_carry_automls_searched_depth_and_rounds():
    "Review finding: the pack said an XGBoost candidate was trained with AutoML's best parameters; training fixes max_depth 4 and early-stops."
    from oi_ml.config import config_to_dict
    from oi_ml.train import TrainConfig
    best = {"bagging_fraction": 0.97, "feature_fraction": 0.83, "lambda_l2": 0.48, "learning_rate": 0.03, "max_depth": 3, "min_data_in_leaf": 86, "rounds": 19}
    summary = {"best_per_family": {"xgboost": {"latest_best_params": best}}}
    cfg = config_to_dict(TrainConfig(family="xgboost", **{k: best[k] for k in ("learning_rate", "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2")}))
    assert packs.candidate_from_search(cfg, "xgboost", summary) is False
    text = packs.candidate_params_text(cfg, "xgboost", summary)
    assert "**not AutoML's best parameters**" in text and "max_depth: searched 3; training fixes max_depth 4" in text
    assert "rounds: searched 19; training early-stops" in text and "num_leaves" not in text   # only the family's own parameters
    assert "not one of AutoML's trials" in packs.search_note(packs.candidate_from_search(cfg, "xgboost", summary))


def test_a_lightgbm_candidate_refit_with_early_stopping_is_still_automls_choice():
    """The demo's candidate (AutoML's best LightGBM parameters, rounds by early stopping on the whole in-sample window) was
    said to be 'not one of AutoML's trials' and its configuration 'the developers' choice' after the round count was
    counted as a mismatch; the round count is the refit's, said in the text, and DSR/PBO judge choosing it from the trials."""
    from oi_ml.config import config_to_dict
    from oi_ml.train import TrainConfig
    best = {"bagging_fraction": 0.9, "feature_fraction": 0.8, "lambda_l2": 0.5, "learning_rate": 0.05, "min_data_in_leaf": 80, "num_leaves": 23, "rounds": 140}
    summary = {"best_per_family": {"lightgbm": {"latest_best_params": best}}}
    cfg = config_to_dict(TrainConfig(**{k: v for k, v in best.items() if k != "rounds"}))
    assert packs.candidate_from_search(cfg, "lightgbm", summary) is True
    text = packs.candidate_params_text(cfg, "lightgbm", summary)
    assert "was trained with AutoML's best parameters for lightgbm" in text and "rounds: searched 140; training early-stops" in text
    assert "judges choosing it from AutoML's trials" in packs.search_note(True)
    assert packs.candidate_from_search(cfg | {"num_leaves": 31}, "lightgbm", summary) is False   # another configuration still is not


@pytest.mark.slow
def test_a_data_pack_of_imported_bars_on_simulated_chain_says_mixed_and_names_the_file(tmp_path):
    "End to end: simulate two sessions, import a third session's bars, export it: the pack and the index say MIXED and name the file."
    from test_datasets import _ohlcv_csv
    from oi_ml.datasets import export_training_window
    from oi_ml.ingest import import_ohlcv
    from oi_ml.simulate import simulate_market
    from oi_ml.store import connect
    cfg = RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=2, run_cfg=cfg)
        import_ohlcv(con, _ohlcv_csv(tmp_path / "nifty_aug5.csv"), "NIFTY", run_cfg=cfg)
        manifest = export_training_window(con, "NSE", start="2025-08-05", run_cfg=cfg)
    html = packs.render_pack("NSE", manifest["version"], {"dataset_version": manifest["version"]}, cfg)
    text = html.read_text()
    assert "MIXED DATA" in text and "SIMULATED DATA — every number" not in text and "nifty_aug5.csv" in text
    assert "MIXED DATA" in packs.render_index(cfg).read_text()


def test_the_index_does_not_show_a_decision_the_pack_did_not_render(tmp_path):
    """The index read each run's current gate report: after a later `oi-ml gate` the index could show PASS beside a pack
    that says FAIL. render_pack passes the report's sha256; the index flags a pack whose report has changed since."""
    out = tmp_path / "reports" / "NSE" / "run-s"; out.mkdir(parents=True)
    (out / "approval_pack.html").write_text("<html></html>")
    gate_dir = tmp_path / "data" / "models" / "NSE" / "run-s" / "reports"; gate_dir.mkdir(parents=True)
    rendered = json.dumps({"decision": "FAIL", "simulated_data": True}).encode()
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"candidate_run": "run-s", "data_dir": str(tmp_path / "data"),
                                               "gate_report_sha256": hashlib.sha256(rendered).hexdigest()}}
    nbformat.write(nb, out / "approval_pack.ipynb")
    (gate_dir / "gate_report.json").write_bytes(rendered)
    assert packs.pack_entries(tmp_path / "reports").decision.tolist() == ["FAIL"]                       # the report it rendered
    (gate_dir / "gate_report.json").write_text(json.dumps({"decision": "PASS", "simulated_data": True}))   # gated again since
    assert packs.pack_entries(tmp_path / "reports").decision.tolist() == [f"{packs.STALE_DECISION} (now PASS)"]
    page = packs.render_index(RunConfig(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"))).read_text()
    assert "re-render: the gate report changed after this pack (now PASS)" in page and ">PASS" not in page

"""Integration, property, statistical and fault tests of `oi_ml.simulate`: determinism per seed, the dated exchange
config visible in the data (calendar, expiry weekdays, lot sizes), internal consistency (the ingest gate accepts the
bars; chain and book invariants), all-or-nothing writes, and the planted signal: with `signal_strength=0` no stored
feature predicts forward returns, with `signal_strength=1` PCR-by-volume and book imbalance do."""
import dataclasses
import datetime as dt
import functools

import numpy as np
import pandas as pd
import pytest

from oi_ml import simulate
from oi_ml.config import (
    IST,
    QualityConfig,
    RunConfig,
    SimulationConfig,
    get_exchange_config,
    trading_days,
)
from oi_ml.ingest import ValidationReport, check_ohlc, check_temporal, import_ohlcv
from oi_ml.simulate import RAW_TABLES, simulate_market
from oi_ml.store import build_ml_features, connect, load_historical_data_for_ml

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

RAW_ONLY = tuple(t for t in RAW_TABLES if t != "ml_features")
DATA_AND_BATCHES = RAW_TABLES + ("training_batches",)
SMALL = SimulationConfig(strikes_each_side=4)  # a narrow chain: enough for the calendar/lot-size tests, 5x fewer rows


def fresh(tmp_path, name, simulation=None):
    run_cfg = RunConfig(data_dir=str(tmp_path / name), **({"simulation": simulation} if simulation else {}))
    return run_cfg, connect(run_cfg)


def features_without_gex(con):
    "ml_features ordered, without `gex` (its SQL sum is only reproducible to rounding: see test_store)."
    return con.execute("SELECT * EXCLUDE (gex) FROM ml_features ORDER BY exchange, symbol, timestamp").df()


def local_dates(series):
    return series.dt.tz_convert(IST).dt.date


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_identical_tables_in_fresh_warehouses(tmp_path, sim_con, fingerprint):
    run_cfg, c = fresh(tmp_path, "again")
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=run_cfg)
    assert fingerprint(c, RAW_ONLY) == fingerprint(sim_con, RAW_ONLY)
    assert features_without_gex(c).equals(features_without_gex(sim_con))
    gex = lambda k: k.execute("SELECT gex FROM ml_features ORDER BY timestamp").df().gex
    np.testing.assert_allclose(gex(c), gex(sim_con), rtol=1e-12)


def test_other_seed_and_other_exchange_differ_in_every_table(tmp_path, sim_con, fingerprint):
    base = fingerprint(sim_con, RAW_ONLY)
    for exchange, seed in (("NSE", 1), ("BSE", 0)):
        run_cfg, c = fresh(tmp_path, f"{exchange}{seed}")
        simulate_market(c, exchange, "2025-08-01", n_days=2, seed=seed, run_cfg=run_cfg)
        other = fingerprint(c, RAW_ONLY)
        assert all(other[t] != base[t] for t in RAW_ONLY), (exchange, seed)
        closes = c.execute("SELECT close FROM underlying_bars ORDER BY timestamp").df().close.to_numpy()
        base_closes = sim_con.execute("SELECT close FROM underlying_bars ORDER BY timestamp").df().close.to_numpy()
        assert not np.allclose(np.diff(np.log(closes)), np.diff(np.log(base_closes)))   # different paths, not a rescale


def test_resimulating_the_same_window_reproduces_it(sim_con, cfg, fingerprint):
    before = fingerprint(sim_con, RAW_ONLY)
    simulate_market(sim_con, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=cfg)
    assert fingerprint(sim_con, RAW_ONLY) == before
    assert sim_con.execute("SELECT count(*) FROM training_batches WHERE kind = 'simulate'").fetchall()[0][0] == 1


def test_resimulating_with_another_seed_replaces_the_window_completely(sim_con, cfg):
    simulate_market(sim_con, "NSE", "2025-08-01", n_days=2, seed=3, run_cfg=cfg)
    for table in RAW_ONLY:
        batches = sim_con.execute(f"SELECT DISTINCT batch_id FROM {table}").fetchall()
        assert batches == [("sim-NSE-2025-08-01-2025-08-04-seed3-s1",)], table


def test_chunk_days_does_not_change_the_data(tmp_path, sim_con, fingerprint):
    run_cfg, c = fresh(tmp_path, "chunked", dataclasses.replace(SimulationConfig(), chunk_days=1))
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=run_cfg)
    assert fingerprint(c, RAW_ONLY) == fingerprint(sim_con, RAW_ONLY)


# ---------------------------------------------------------------- the dated exchange config, visible in the data
EXPECTED_NEAREST_TWO = {  # hand-written from the NSE/BSE circulars in DOMAIN.md (holiday: Wed 27 Aug 2025)
    "NSE": {dt.date(2025, 8, 25): [dt.date(2025, 8, 28), dt.date(2025, 9, 2)],   # Thursdays, then Tuesdays from Sep
            dt.date(2025, 8, 28): [dt.date(2025, 8, 28), dt.date(2025, 9, 2)],
            dt.date(2025, 8, 29): [dt.date(2025, 9, 2), dt.date(2025, 9, 9)],
            dt.date(2025, 9, 3): [dt.date(2025, 9, 9), dt.date(2025, 9, 16)]},
    "BSE": {dt.date(2025, 8, 25): [dt.date(2025, 8, 26), dt.date(2025, 9, 4)],   # Tuesdays, then Thursdays from Sep
            dt.date(2025, 8, 26): [dt.date(2025, 8, 26), dt.date(2025, 9, 4)],
            dt.date(2025, 8, 29): [dt.date(2025, 9, 4), dt.date(2025, 9, 11)],
            dt.date(2025, 9, 3): [dt.date(2025, 9, 4), dt.date(2025, 9, 11)]},
}


@pytest.mark.parametrize("exchange", ["NSE", "BSE"])
def test_expiry_weekdays_switch_in_september_2025_and_holidays_are_skipped(tmp_path, exchange):
    run_cfg, c = fresh(tmp_path, exchange, SMALL)
    simulate_market(c, exchange, "2025-08-25", n_days=7, seed=0, run_cfg=run_cfg)
    bars = c.execute("SELECT timestamp FROM underlying_bars").df()
    days = sorted(set(local_dates(bars.timestamp)))
    assert days == [dt.date(2025, 8, d) for d in (25, 26, 28, 29)] + [dt.date(2025, 9, d) for d in (1, 2, 3)]
    chain = c.execute("SELECT timestamp, expiry FROM option_chain_snapshots").df()
    chain["expiry"] = pd.to_datetime(chain.expiry).dt.date
    chain["day"] = local_dates(chain.timestamp)
    nearest = chain.groupby("day").expiry.unique().map(sorted)
    for day, expected in EXPECTED_NEAREST_TWO[exchange].items():
        assert nearest[day] == expected, (day, nearest[day])
    old_weekday, new_weekday = (3, 1) if exchange == "NSE" else (1, 3)
    for expiry in set(chain.expiry):
        assert expiry.weekday() == (old_weekday if expiry < dt.date(2025, 9, 1) else new_weekday), expiry


def test_independence_day_and_weekends_have_no_bars(tmp_path):
    run_cfg, c = fresh(tmp_path, "aug", SMALL)
    simulate_market(c, "NSE", "2025-08-13", n_days=3, seed=0, run_cfg=run_cfg)
    for table in ("underlying_bars", "option_chain_snapshots", "order_book_depth_snapshots", "vix_term_structure", "ml_features"):
        ts = c.execute(f"SELECT DISTINCT timestamp FROM {table}").df().timestamp
        assert sorted(set(local_dates(ts))) == [dt.date(2025, 8, 13), dt.date(2025, 8, 14), dt.date(2025, 8, 18)], table


@pytest.mark.parametrize("exchange, start, expected, by_contract", [
    # NIFTY 75 -> 65 for contracts after the 30 Dec 2025 expiry: on 30 Dec the 6 Jan weekly already trades in lots of 65
    ("NSE", "2025-12-30", {dt.date(2025, 12, 30): 75, dt.date(2025, 12, 31): 65},
     {(dt.date(2025, 12, 30), dt.date(2025, 12, 30)): 75, (dt.date(2025, 12, 30), dt.date(2026, 1, 6)): 65,
      (dt.date(2025, 12, 31), dt.date(2026, 1, 6)): 65, (dt.date(2025, 12, 31), dt.date(2026, 1, 13)): 65}),
    ("BSE", "2024-11-19", {dt.date(2024, 11, 19): 10, dt.date(2024, 11, 21): 20}, None),   # SENSEX 10 -> 20 from 20 Nov 2024 (a holiday)
])
def test_lot_sizes_follow_the_dated_schedule(tmp_path, exchange, start, expected, by_contract):
    run_cfg, c = fresh(tmp_path, exchange, SMALL)
    simulate_market(c, exchange, start, n_days=2, seed=0, run_cfg=run_cfg)
    chain = c.execute("SELECT timestamp, expiry, lot_size FROM option_chain_snapshots").df()
    if by_contract:
        per_contract = chain.groupby([local_dates(chain.timestamp), pd.to_datetime(chain.expiry).dt.date]).lot_size.unique().map(list)
        assert per_contract.to_dict() == {k: [v] for k, v in by_contract.items()}
    else:
        assert chain.groupby(local_dates(chain.timestamp)).lot_size.unique().map(list).to_dict() == {d: [v] for d, v in expected.items()}
    feats = load_historical_data_for_ml(c, exchange)                  # the largest lot listed in the snapshot
    assert feats.groupby(local_dates(feats.timestamp)).lot_size.unique().map(list).to_dict() == {d: [v] for d, v in expected.items()}
    book = c.execute("SELECT timestamp, bid_qty, ask_qty FROM order_book_depth_snapshots").df()
    lot = local_dates(book.timestamp).map(expected).to_numpy()
    assert (book.bid_qty % lot == 0).all() and (book.ask_qty % lot == 0).all()      # book quantities are whole lots


# ---------------------------------------------------------------- internal consistency
def test_simulated_bars_pass_the_ingest_quality_gate(sim_con):
    bars = sim_con.execute("SELECT * FROM underlying_bars ORDER BY timestamp").df()
    report = ValidationReport("simulated")
    check_ohlc(bars, report, QualityConfig())
    check_temporal(bars.timestamp, report, QualityConfig())
    assert report.problems.empty, report.summary_lines()
    assert (bars.source == "simulated").all() and bars.notna().all().all()


def test_session_grid_and_snapshot_cadence(sim_con):
    bars = sim_con.execute("SELECT timestamp FROM underlying_bars ORDER BY timestamp").df().timestamp.dt.tz_convert(IST)
    minutes = bars.dt.hour * 60 + bars.dt.minute
    assert len(bars) == 750 and minutes.min() == 9 * 60 + 15 and minutes.max() == 15 * 60 + 29
    assert (bars.groupby(bars.dt.date).size() == 375).all()
    snaps = sim_con.execute("SELECT DISTINCT timestamp FROM option_chain_snapshots ORDER BY 1").df().timestamp.dt.tz_convert(IST)
    assert len(snaps) == 2 * 125 and ((snaps.dt.minute - 15) % 3 == 0).all()
    for table in RAW_TABLES:
        assert sim_con.execute(f"SELECT DISTINCT source FROM {table}").fetchall() == [("simulated",)], table


def test_option_chain_invariants(sim_con):
    chain = sim_con.execute("SELECT * FROM option_chain_snapshots").df()
    bars = sim_con.execute("SELECT timestamp, close FROM underlying_bars").df().set_index("timestamp").close
    assert (chain.bid <= chain.ltp).all() and (chain.ltp <= chain.ask).all() and (chain.oi >= 0).all()
    assert (chain.iv > 0).all() and (chain.volume >= 0).all() and (chain.strike % 50 == 0).all()
    np.testing.assert_allclose(chain.underlying_price, bars.reindex(chain.timestamp).to_numpy())
    per_snapshot = chain.groupby(["timestamp", "expiry", "option_type"]).strike.agg(["size", "min", "max"])
    assert (per_snapshot["size"] == 21).all() and ((per_snapshot["max"] - per_snapshot["min"]) == 20 * 50).all()
    atm = chain.groupby("timestamp").apply(lambda g: g.strike.iloc[np.argmin(np.abs(g.strike - g.underlying_price))],
                                           include_groups=False)
    assert (np.abs(atm - bars.reindex(atm.index)) <= 25).all()                    # the chain is centred on spot


# ---------------------------------------------------------------- static arbitrage of the simulated chain
TICK = 0.05   # option price tick; rounding three prices to it can leave a butterfly of -1 tick, never -2


def reference_ladders(chain: pd.DataFrame, strikes: int, step: float) -> np.ndarray:
    "ltp of `chain_frame` output as (ladder, CE/PE, strike) with the strike steps checked: rows come in (snapshot, expiry, type, strike) order."
    k = chain.strike.to_numpy().reshape(-1, 2, strikes)
    assert (np.diff(k, axis=2) == step).all() and (chain.option_type.to_numpy().reshape(-1, 2, strikes)[:, 0] == "CE").all()
    return chain.ltp.to_numpy().reshape(-1, 2, strikes)


def reference_arbitrage(chain: pd.DataFrame, strikes: int, step: float, tol: float) -> dict:
    "Ladders with a butterfly C(K-) - 2C(K) + C(K+) below -tol, a call rising or a put falling with the strike, or a step above `step`."
    p = reference_ladders(chain, strikes, step)
    fly, vertical = np.diff(p, 2, axis=2), np.diff(p, axis=2) * np.array([-1.0, 1.0])[None, :, None]   # calls fall, puts rise
    return {"butterfly": int((fly < -tol - 1e-9).any(axis=(1, 2)).sum()),
            "vertical": int(((vertical < -1e-9) | (vertical > step + 1e-9)).any(axis=(1, 2)).sum()),
            "worst": round(float(fly.min()), 2)}


def discounted_intrinsic(chain: pd.DataFrame, rate: float = 0.065, dividend_yield: float = 0.012) -> np.ndarray:
    "e^{-r tau} (F - K)+ for calls and (K - F)+ for puts, F the simulator's forward, tau to 15:30 IST on expiry day."
    close = pd.DatetimeIndex(pd.to_datetime(chain.expiry)).tz_localize(IST) + pd.Timedelta(hours=15.5)
    tau = (close - pd.DatetimeIndex(chain.timestamp)).total_seconds().to_numpy() / (365 * 86400)
    fwd = chain.underlying_price.to_numpy() * np.exp((rate - dividend_yield) * tau)
    k, call = chain.strike.to_numpy(), (chain.option_type == "CE").to_numpy()
    return np.exp(-rate * tau) * np.where(call, np.maximum(fwd - k, 0), np.maximum(k - fwd, 0))


@functools.lru_cache(maxsize=1)   # ~120 MB a chain: keep only the last (the agreement test reuses it)
def long_chain(exchange: str, stressed: bool) -> pd.DataFrame:
    "Chain snapshots of 60 trading days from 1 Aug 2025 (13 weekly expiry days, the Sep-2025 switch), seed 0; `stressed`: all days stressed, VIX doubled."
    cfg, sim = get_exchange_config(exchange), SimulationConfig()
    lp = simulate.simulate_latent(cfg, trading_days(cfg, dt.date(2025, 8, 1), 60), 1, 0, 1.0)
    state = simulate.market_state(lp, simulate.underlying_frames(cfg, lp, 0, 0.065))
    if stressed:
        lp = dataclasses.replace(lp, regime=np.full_like(lp.regime, 2))
        state = dataclasses.replace(state, vix=2 * state.vix)
    return pd.concat([simulate.chain_frame(cfg, lp, state, slice(d * 375, (d + 20) * 375), 0, sim, 0.065, 3) for d in range(0, 60, 20)],
                     ignore_index=True)


@pytest.mark.parametrize("exchange, stressed", [("NSE", False), ("BSE", False), ("NSE", True)])
def test_long_simulated_chains_are_free_of_static_arbitrage(exchange, stressed):
    chain, step = long_chain(exchange, stressed), get_exchange_config(exchange).strike_step
    assert chain.timestamp.nunique() * 2 == 15_000 and chain.expiry[chain.expiry == local_dates(chain.timestamp)].nunique() == 13
    found = reference_arbitrage(chain, 21, step, tol=TICK)
    assert (found["butterfly"], found["vertical"]) == (0, 0) and found["worst"] >= -TICK, found
    below = chain.ltp.to_numpy() < discounted_intrinsic(chain) - 1e-9
    assert not below.any(), chain.loc[below, ["timestamp", "expiry", "option_type", "strike", "ltp"]].head()


def test_butterfly_violations_agrees_with_the_reference_on_a_long_chain():
    from oi_ml.simulate import butterfly_violations
    chain = long_chain("NSE", True)
    for tol in (0.0, TICK):
        found = butterfly_violations(chain, tol)
        assert len(found) == 15_000 and found.verticals.sum() == 0
        ref = reference_arbitrage(chain, 21, 50.0, tol)
        assert ((found.call_butterflies + found.put_butterflies) > 0).sum() == ref["butterfly"]
        assert found.worst_butterfly.min().round(2) == ref["worst"]
    # on a ladder made concave by hand it finds the strike, by type
    broken = chain.iloc[:84].copy()
    broken.loc[10, "ltp"] += 5.0   # the ATM call of the first ladder (rows 0-20 calls, 21-41 puts) above its neighbours' average
    found = butterfly_violations(broken, TICK).iloc[0]
    assert (found.call_butterflies, found.put_butterflies, found.verticals) == (1, 0, 0)


def test_an_expiry_day_chain_stored_by_simulate_market_is_free_of_static_arbitrage(tmp_path):
    run_cfg, c = fresh(tmp_path, "expiry")
    simulate_market(c, "NSE", "2025-08-01", n_days=5, seed=0, run_cfg=run_cfg)   # to Thursday 7 Aug, a weekly expiry
    chain = c.execute("SELECT * FROM option_chain_snapshots ORDER BY timestamp, expiry, option_type, strike").df()
    chain["expiry"] = pd.to_datetime(chain.expiry).dt.date
    assert (chain.expiry == dt.date(2025, 8, 7)).any()
    found = reference_arbitrage(chain, 21, 50.0, tol=TICK)
    assert (found["butterfly"], found["vertical"]) == (0, 0), found
    below = chain.ltp.to_numpy() < discounted_intrinsic(chain) - 1e-9
    assert not below.any(), chain.loc[below, ["timestamp", "expiry", "option_type", "strike", "ltp"]].head()


def _oi_pairs(chain):
    chain = chain.sort_values(["expiry", "option_type", "strike", "timestamp"])
    g = chain.groupby(["expiry", "option_type", "strike"])
    return chain.assign(diff=g.oi.diff(), gap=g.timestamp.diff())


def test_oi_change_is_the_snapshot_difference_within_a_session_across_chunks(tmp_path):
    run_cfg, c = fresh(tmp_path, "chunks", dataclasses.replace(SMALL, chunk_days=1))
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=run_cfg)
    pairs = _oi_pairs(c.execute("SELECT * FROM option_chain_snapshots").df())
    within = pairs[pairs.gap == pd.Timedelta(minutes=3)]
    assert len(within) > 1000
    np.testing.assert_allclose(within.oi_change, within["diff"])


def test_oi_change_at_the_open_is_the_change_since_the_previous_close(sim_con):
    pairs = _oi_pairs(sim_con.execute("SELECT * FROM option_chain_snapshots").df())
    session = pairs.groupby(pairs.timestamp.dt.tz_convert(IST).dt.date).timestamp
    first_of_session, last_of_session = session.transform("min"), session.transform("max")
    previous_time = pairs.timestamp - pairs.gap
    # the open's first snapshot of a contract that was also listed at the previous session's last snapshot
    overnight = pairs[(pairs.timestamp == first_of_session) & previous_time.isin(set(last_of_session))]
    assert len(overnight) > 50
    np.testing.assert_allclose(overnight.oi_change, overnight["diff"])


def test_features_are_as_of_the_bar(sim_con):
    f = load_historical_data_for_ml(sim_con, "NSE")
    assert f.chain_age_minutes.between(0, 2).all() and (pd.to_datetime(f.chain_snapshot_time, utc=True) <= f.timestamp).all()
    macro = sim_con.execute("SELECT timestamp, name, value, available_from FROM macro_signals").df()
    assert (macro.available_from.dt.tz_convert(IST).dt.time == dt.time(18, 0)).all()     # published after the close
    day = local_dates(f.timestamp)
    first, second = sorted(set(day))
    assert f.fii_flow[day == first].isna().all()                                          # nothing published yet
    published = macro[(macro.name == "fii_net_flow") & (local_dates(macro.timestamp) == first)].value.iloc[0]
    assert (f.fii_flow[day == second] == published).all()


def test_a_year_without_a_holiday_list_is_refused_and_nothing_is_stored(sim_con, cfg, fingerprint):
    "15 Aug 2023 was a holiday the config does not know: simulating 2023 would trade on it, so it is refused up front."
    before = fingerprint(sim_con)
    with pytest.raises(ValueError, match=r"holidays for \[2024, 2025, 2026\] only.*\[2023\]"):
        simulate_market(sim_con, "NSE", start="2023-08-14", n_days=5, run_cfg=cfg)
    with pytest.raises(ValueError, match=r"\[2027\]"):                   # a window running into an unlisted year
        simulate_market(sim_con, "BSE", start="2026-12-28", end="2027-01-05", run_cfg=cfg)
    assert fingerprint(sim_con) == before


# ---------------------------------------------------------------- all or nothing
@pytest.mark.parametrize("fail_on", ["option_chain_snapshots", "order_book_depth_snapshots", "ml_features"])
def test_a_failing_resimulation_leaves_the_previous_one_intact(sim_con, cfg, fingerprint, monkeypatch, fail_on):
    before = fingerprint(sim_con, DATA_AND_BATCHES)
    real_insert, real_rebuild = simulate.insert_rows, simulate.rebuild_ml_features_in_transaction

    def insert(c, table, frame, batch_id=None):
        if table == fail_on: raise OSError(f"injected failure writing {table}")
        return real_insert(c, table, frame, batch_id)

    def rebuild(c, params, *rate):
        if fail_on == "ml_features": raise OSError("injected failure rebuilding ml_features")
        return real_rebuild(c, params, *rate)
    monkeypatch.setattr(simulate, "insert_rows", insert)
    monkeypatch.setattr(simulate, "rebuild_ml_features_in_transaction", rebuild)
    with pytest.raises(OSError, match="injected"):
        simulate_market(sim_con, "NSE", "2025-08-01", n_days=3, seed=7, run_cfg=cfg)   # overlaps the stored window
    assert fingerprint(sim_con, DATA_AND_BATCHES) == before


def test_simulating_keeps_imported_rows_of_other_symbols(tmp_path, cfg, con):
    path = tmp_path / "reliance.csv"
    pd.DataFrame({"Date": ["2025-08-04 09:15", "2025-08-04 09:16"], "Open": 100.0, "High": 102.0, "Low": 99.0, "Close": 101.0,
                  "Volume": 1000}).to_csv(path, index=False)
    import_ohlcv(con, path, "RELIANCE", run_cfg=cfg)
    simulate_market(con, "NSE", "2025-08-01", n_days=3, seed=0, run_cfg=dataclasses.replace(cfg, simulation=SMALL))
    assert con.execute("SELECT count(*) FROM underlying_bars WHERE symbol = 'RELIANCE'").fetchall()[0][0] == 2


def test_ml_features_agree_with_a_rebuild_after_overlapping_simulations(sim_con, cfg):
    simulate_market(sim_con, "NSE", "2025-08-01", n_days=1, seed=5, run_cfg=cfg)
    stored = features_without_gex(sim_con)
    build_ml_features(sim_con, "NSE")
    rebuilt = features_without_gex(sim_con)
    pd.testing.assert_frame_equal(stored, rebuilt)


def test_bad_arguments_fail_clearly(con):
    with pytest.raises(ValueError, match="unknown exchange 'MCX'"):
        simulate_market(con, "MCX", n_days=1)
    with pytest.raises(ValueError, match="no trading days for NSE"):
        simulate_market(con, "NSE", start="2025-08-15", end="2025-08-15")          # a holiday
    assert con.execute("SELECT count(*) FROM training_batches").fetchall()[0][0] == 0


# ---------------------------------------------------------------- the planted signal, statistically
STAT_DAYS, STAT_SEED, HORIZON = 30, 0, 15
NON_FEATURES = {"timestamp", "exchange", "symbol", "source", "chain_snapshot_time"}


@pytest.fixture(scope="module")
def signal_frames(tmp_path_factory):
    "ml_features of 30 NSE days with the same seed, signal_strength 0 and 1."
    out = {}
    for strength in (0.0, 1.0):
        run_cfg = RunConfig(data_dir=str(tmp_path_factory.mktemp(f"signal{strength:g}")))
        c = connect(run_cfg)
        simulate_market(c, "NSE", "2025-08-01", n_days=STAT_DAYS, seed=STAT_SEED, signal_strength=strength, run_cfg=run_cfg)
        out[strength] = load_historical_data_for_ml(c, "NSE")
        c.close()
    return out


def candidate_features(f: pd.DataFrame) -> dict[str, pd.Series]:
    "Every numeric stored feature, its one-bar change within the session, logs of ratios, and book imbalance."
    day = local_dates(f.timestamp)
    cols = [c for c in f.columns if c not in NON_FEATURES and pd.api.types.is_numeric_dtype(f[c])]
    out = {c: f[c].astype(float) for c in cols}
    out.update({f"diff_{c}": f[c].astype(float).groupby(day).diff() for c in cols})
    for c in ("pcr_oi", "pcr_volume", "pcr_oi_atm", "oi_concentration_atm"):
        out[f"log_{c}"] = np.log(f[c])
    out["log_put_call_oi_change"] = np.sign(f.put_oi_change - f.call_oi_change) * np.log1p(np.abs(f.put_oi_change - f.call_oi_change))
    out["book_imbalance"] = (f.book_bid_qty - f.book_ask_qty) / (f.book_bid_qty + f.book_ask_qty)
    out["log_vix_term"] = np.log(f.vix_far / f.vix_near)
    out["atm_iv_term"] = f.atm_iv - f.next_atm_iv
    return out


def forward_log_return(f: pd.DataFrame, horizon: int = HORIZON) -> pd.Series:
    "log(close[t+h] / close[t]) within the session (NaN when t+h is in the next session)."
    log_close = np.log(f.close)
    return log_close.groupby(local_dates(f.timestamp)).shift(-horizon) - log_close


def correlations(f: pd.DataFrame) -> tuple[dict, float]:
    "Correlation of each candidate feature with the forward return, and the noise bound 4/sqrt(n/horizon)."
    fwd = forward_log_return(f)
    out = {}
    for name, x in candidate_features(f).items():
        ok = x.notna().to_numpy() & fwd.notna().to_numpy() & np.isfinite(x.to_numpy())
        if ok.sum() < 1000 or np.std(x[ok]) == 0: continue            # constants (lot size) carry no information
        out[name] = float(np.corrcoef(x[ok], fwd[ok])[0, 1])
    n = int(fwd.notna().sum())
    return out, 4.0 / np.sqrt(n / HORIZON)


def test_null_signal_no_feature_predicts_forward_returns(signal_frames):
    corr, bound = correlations(signal_frames[0.0])
    assert len(corr) > 60                                                  # the test really covers the feature set
    offenders = {k: round(v, 3) for k, v in corr.items() if abs(v) >= bound}
    assert not offenders, f"features correlated with forward returns beyond {bound:.3f} under the null: {offenders}"


def test_null_signal_test_detects_a_leak(signal_frames):
    "The same statistic flags a feature that peeks 5 bars ahead: the null test above can fail."
    f = signal_frames[0.0]
    fwd = forward_log_return(f)
    leak = np.log(f.close).groupby(local_dates(f.timestamp)).shift(-5) - np.log(f.close)
    ok = leak.notna() & fwd.notna()
    _, bound = correlations(f)
    assert np.corrcoef(leak[ok], fwd[ok])[0, 1] > 2 * bound


def test_planted_signal_shows_in_pcr_volume_and_book_imbalance(signal_frames):
    corr, bound = correlations(signal_frames[1.0])
    for name in ("pcr_volume", "log_pcr_volume", "book_imbalance"):
        assert corr[name] > bound, (name, corr[name], bound)
    null, _ = correlations(signal_frames[0.0])
    assert all(abs(null[k]) < bound for k in ("pcr_volume", "log_pcr_volume", "book_imbalance"))


def test_null_and_planted_paths_differ_only_by_the_drift(signal_frames):
    "Same seed: the chain's PCR (driven by the latent flow) is identical; only prices moved."
    a, b = signal_frames[0.0], signal_frames[1.0]
    assert a.timestamp.equals(b.timestamp)
    np.testing.assert_allclose(a.book_bid_qty, b.book_bid_qty)
    np.testing.assert_allclose(a.pcr_volume, b.pcr_volume)
    assert not np.allclose(a.close, b.close)


def test_the_simulators_feature_rebuild_uses_the_run_staleness_limits(tmp_path):
    "A limit shorter than the simulated chain's 3-minute spacing blanks bars between snapshots: the run's limits reach the rebuild."
    from oi_ml.config import StalenessConfig
    from oi_ml.store import StaleFeatureWarning, connect
    cfg = RunConfig(data_dir=str(tmp_path / "data"), staleness=StalenessConfig(chain_max_sessions=1 / 375))   # one trading minute
    with connect(cfg) as c, pytest.warns(StaleFeatureWarning, match="chain"):
        simulate_market(c, "NSE", "2025-08-01", n_days=1, seed=0, run_cfg=cfg)


# ---------------------------------------------------------------- the simulator's output passes the import gate's checks
def test_a_simulated_batch_records_the_import_gates_report(tmp_path, cfg, con):
    "The batch's validation report holds the bar and chain checks the import gate makes, all passed (the pack says so)."
    simulate_market(con, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=dataclasses.replace(cfg, simulation=SMALL))
    import json
    report = json.loads(con.execute("SELECT validation_report FROM training_batches WHERE kind = 'simulate'").fetchall()[0][0])
    assert report["ok"] is True and report["rows_in"] == 750 and report["file"].startswith("simulated:NSE/NIFTY 2025-08-01..2025-08-04")
    assert {"ohlc_logic", "temporal", "non_negative"} <= set(report["counts"]) and sum(report["counts"].values()) == 0


@pytest.mark.parametrize("broken", ["bars", "chain"])
def test_a_simulation_that_fails_the_checks_stores_nothing(tmp_path, cfg, con, monkeypatch, broken):
    "A simulator bug (a bar whose high is below its low, a negative open interest) is refused naming the row; nothing is stored."
    from oi_ml.ingest import IngestError
    run_cfg = dataclasses.replace(cfg, simulation=SMALL)
    if broken == "bars":
        real = simulate.underlying_frames
        def bad_bars(*args, **kwargs):
            frames = real(*args, **kwargs); bars = frames["underlying_bars"]
            bars.loc[bars.index[5], "high"] = bars.loc[bars.index[5], "low"] - 1.0
            return frames
        monkeypatch.setattr(simulate, "underlying_frames", bad_bars)
        message = r"row 6, column 'high'"
    else:
        real = simulate.chain_frame
        monkeypatch.setattr(simulate, "chain_frame", lambda *a, **k: real(*a, **k).assign(oi=lambda f: np.where(np.arange(len(f)) == 3, -1.0, f.oi)))
        message = r"row 4, column 'oi'"
    with pytest.raises(IngestError, match=message):
        simulate_market(con, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=run_cfg)
    for table in (*RAW_TABLES, "training_batches"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == 0, table

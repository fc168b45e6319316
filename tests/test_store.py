"""Integration, property and fault tests of `oi_ml.store`: schemas and primary keys, UTC timestamps, idempotent
writes that refuse conflicting values, atomic batches (fault injection), and `build_ml_features` against a slow pandas reference
built straight from the documented definitions (PCR, ATM, max pain, skew, GEX, as-of joins)."""
import dataclasses
import datetime as dt
import functools
import itertools
import math
import re
import subprocess
import sys
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oi_ml import store
from oi_ml.config import IST, NSE, RunConfig, is_trading_day
from oi_ml.store import (
    ML_FEATURE_COLUMNS,
    SCHEMAS,
    TABLES,
    build_ml_features,
    connect,
    insert_rows,
    load_historical_data_for_ml,
    record_training_batch,
    save_macro_signals,
    save_option_chain_snapshot,
    save_order_book_depth,
    save_underlying_bars,
    save_vix_term_structure,
    schema_columns,
    to_utc,
    transaction,
    window_params,
    write_batch,
)

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

T0 = pd.Timestamp("2025-08-04 03:45", tz="UTC")  # 09:15 IST, a Monday


def vix_rows(times, values, tenor=30, exchange="NSE"):
    return pd.DataFrame({"timestamp": pd.DatetimeIndex(times), "exchange": exchange, "tenor_days": tenor,
                         "value": values, "source": "test"})


def bar_rows(times, close, symbol="NIFTY", exchange="NSE"):
    close = np.asarray(close, dtype=float)
    return pd.DataFrame({"timestamp": pd.DatetimeIndex(times), "exchange": exchange, "symbol": symbol, "open": close, "high": close + 1,
                             "low": close - 1, "close": close, "volume": 1e3, "futures_price": close * 1.002, "futures_oi": 1e5,
                             "advances": 30, "declines": 18, "source": "test"})


# ---------------------------------------------------------------- schemas, keys, time zone
def test_connect_creates_every_table_with_schema_types_and_primary_key(con):
    for table in TABLES:
        info = con.execute(f"PRAGMA table_info('{table}')").df()
        assert list(info.name) == schema_columns(table)
        aliases = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
        assert list(info.type) == [aliases.get(t, t) for _, t in SCHEMAS[table]["columns"]]
        pk = con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                         "AND constraint_type = 'PRIMARY KEY'", [table]).fetchall()
        assert len(pk) == 1 and list(pk[0][0]) == SCHEMAS[table]["key"], table
    assert schema_columns("ml_features")[3:3 + len(ML_FEATURE_COLUMNS)] == ML_FEATURE_COLUMNS


def test_connect_is_reentrant_and_keeps_data(cfg):
    c = connect(cfg)
    save_vix_term_structure(c, vix_rows([T0], [12.0]), "b")
    c.close()
    c = connect(cfg)                                      # CREATE TABLE IF NOT EXISTS: nothing dropped
    assert c.execute("SELECT count(*) FROM vix_term_structure").fetchall()[0][0] == 1
    c.close()
    ro = connect(cfg.db_path, read_only=True)
    assert ro.execute("SELECT value FROM vix_term_structure").fetchall() == [(12.0,)]
    ro.close()


def test_connect_read_only_without_warehouse_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "warehouse.duckdb"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        connect(path, read_only=True)
    assert not path.exists()


def _flip_bytes(path) -> None:
    "Damage a closed warehouse file the way a bad disk does: one flipped byte every 4 KiB from byte 20,000 on."
    data = bytearray(path.read_bytes())
    for i in range(20_000, len(data), 4096): data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["not_a_database", "checksum"])
def test_a_damaged_warehouse_file_is_an_error_naming_it(cfg, damage, capsys):
    "Review 16 (9): DuckDB's 'Corrupt database file ... block at location 12288' reached the user as a traceback without the path."
    cfg.db_path.parent.mkdir(parents=True)
    if damage == "not_a_database": cfg.db_path.write_text("this is not a database")
    else:
        connect(cfg).close(); _flip_bytes(cfg.db_path)
    for read_only in (False, True):
        with pytest.raises(ValueError, match=rf"{re.escape(str(cfg.db_path))}: cannot open the warehouse, the file is damaged") as err:
            connect(cfg, read_only=read_only)
        assert isinstance(err.value, duckdb.Error) and isinstance(err.value, store.WarehouseError)   # still a DuckDB error to retry loops
    from oi_ml.cli import main
    assert main(["--data-dir", str(cfg.data_dir), "validate", "--exchange", "NSE"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(cfg.db_path) in lines[0] and "Traceback" not in lines[0], lines


def test_a_warehouse_locked_past_the_timeout_is_an_error_naming_it_and_the_lock(cfg):
    "Another process holds the write lock: after `lock_timeout` a WarehouseError naming the file (a one-line CLI error)."
    connect(cfg).close()
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(cfg.db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"{re.escape(str(cfg.db_path))}: cannot open the warehouse: another process still held its lock after 0.5 s"):
            connect(cfg, lock_timeout=0.5)
    finally:
        holder.kill(); holder.wait()


def test_a_rebuild_limited_to_some_symbols_leaves_the_others_rows(con):
    "Review 16 (8a): an import rebuilds only the symbols it wrote; the others keep the rows an earlier config built."
    m = random_market(0)
    write_batch(con, {**m, "underlying_bars": pd.concat([m["underlying_bars"], m["underlying_bars"].assign(symbol="OTHER")])},
                {"batch_id": "m", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    query = "SELECT * FROM ml_features WHERE symbol = 'NIFTY' ORDER BY timestamp"
    nifty = con.execute(query).df()
    assert build_ml_features(con, "NSE", run_cfg=RunConfig(risk_free_rate=0.12), symbols=("OTHER",)) == 10
    pd.testing.assert_frame_equal(con.execute(query).df(), nifty)
    assert build_ml_features(con, "NSE", run_cfg=RunConfig(risk_free_rate=0.12)) == 20                  # all symbols: NIFTY changes
    assert not np.allclose(con.execute(query).df().gex, nifty.gex)


def test_timestamps_are_stored_as_utc_instants(con):
    assert con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0] == "UTC"
    ist = pd.DatetimeIndex([pd.Timestamp("2025-08-04 09:15", tz="Asia/Kolkata")])
    save_vix_term_structure(con, vix_rows(ist, [12.0]), "b")
    got = con.execute("SELECT timestamp FROM vix_term_structure").df().timestamp
    assert str(got.dt.tz) == "UTC" and got.iloc[0] == pd.Timestamp("2025-08-04 03:45", tz="UTC")
    # the same instant written in UTC is the same key: nothing added (and another value there is a conflict)
    assert save_vix_term_structure(con, vix_rows([T0], [12.0]), "b2") == 0
    with pytest.raises(store.StoreConflictError, match="2025-08-04 03:45:00"):
        save_vix_term_structure(con, vix_rows([T0], [99.0]), "b2")


@pytest.mark.parametrize("value, end_of_day, expected", [
    ("2025-08-04", False, "2025-08-03 18:30:00+00:00"),                       # IST midnight
    ("2025-08-04", True, "2025-08-04 18:29:59.999999+00:00"),                 # the whole IST day
    (dt.date(2025, 8, 4), True, "2025-08-04 18:29:59.999999+00:00"),
    ("2025-08-04 09:15", True, "2025-08-04 03:45:00+00:00"),                  # naive means IST; not a bare date
    (pd.Timestamp("2025-08-04 09:15", tz="Asia/Kolkata"), False, "2025-08-04 03:45:00+00:00"),
])
def test_to_utc(value, end_of_day, expected):
    assert to_utc(value, end_of_day) == pd.Timestamp(expected)


def test_window_params_open_ends_cover_everything():
    p = window_params("NSE")
    assert p["exchange"] == "NSE" and p["start"].year == 1900 and p["end"].year == 2200
    # a date-only end is the whole IST day: to 23:59:59.999999 IST
    assert window_params("NSE", end="2025-08-04")["end"] == pd.Timestamp("2025-08-04 18:29:59.999999", tz="UTC")


def test_naive_window_bounds_are_ist():
    # `oi-ml export --start "2025-08-05 09:15" --end "2025-08-05 15:29"`: the session's first and last bar, IST
    p = window_params("NSE", "2025-08-05 09:15", "2025-08-05 15:29")
    assert (p["start"], p["end"]) == (pd.Timestamp("2025-08-05 03:45", tz="UTC"), pd.Timestamp("2025-08-05 09:59", tz="UTC"))
    assert to_utc(dt.datetime(2025, 8, 5, 9, 15)) == pd.Timestamp("2025-08-05 03:45", tz="UTC")
    assert to_utc("2025-08-05 09:15+00:00") == pd.Timestamp("2025-08-05 09:15", tz="UTC")             # aware: converted
    assert to_utc("2025-08-05") == pd.Timestamp("2025-08-04 18:30", tz="UTC")                          # IST midnight


# ---------------------------------------------------------------- idempotent writes
def test_insert_rows_names_missing_and_unknown_columns_and_stores_nothing(con, fingerprint):
    before = fingerprint(con)
    with pytest.raises(ValueError, match=r"missing columns \['value'\]"):
        insert_rows(con, "vix_term_structure", vix_rows([T0], [1.0]).drop(columns="value"))
    with pytest.raises(ValueError, match=r"unknown columns \['colour'\]"):
        insert_rows(con, "vix_term_structure", vix_rows([T0], [1.0]).assign(colour="red"))
    assert fingerprint(con) == before


def test_insert_rows_is_idempotent_and_first_write_wins_when_ignoring(con):
    times = T0 + pd.to_timedelta(np.arange(4), unit="min")
    assert insert_rows(con, "vix_term_structure", vix_rows(times[:3], [1.0, 2.0, 3.0]), "b1") == 3
    assert insert_rows(con, "vix_term_structure", vix_rows(times[:3], [1.0, 2.0, 3.0]), "b1") == 0
    # on_conflict="ignore": same keys with other values are ignored, new keys are added
    assert insert_rows(con, "vix_term_structure", vix_rows(times[1:], [20.0, 30.0, 40.0]), "b2", on_conflict="ignore") == 1
    got = con.execute("SELECT value, batch_id FROM vix_term_structure ORDER BY timestamp").fetchall()
    assert got == [(1.0, "b1"), (2.0, "b1"), (3.0, "b1"), (40.0, "b2")]
    assert insert_rows(con, "vix_term_structure", vix_rows(times[:0], []), "b3") == 0       # empty frame


def test_identical_rows_under_another_batch_id_are_a_no_op(con, fingerprint):
    times = T0 + pd.to_timedelta(np.arange(3), unit="min")
    assert insert_rows(con, "underlying_bars", bar_rows(times, [1.0, 2.0, np.nan]), "b1") == 3
    before = fingerprint(con)
    assert insert_rows(con, "underlying_bars", bar_rows(times, [1.0, 2.0, np.nan]), "b2") == 0   # NaN equals NaN here
    assert fingerprint(con) == before


def test_a_key_stored_with_other_values_is_an_error_naming_table_key_and_column(con, fingerprint):
    times = T0 + pd.to_timedelta(np.arange(4), unit="min")
    insert_rows(con, "vix_term_structure", vix_rows(times[:3], [1.0, 2.0, 3.0]), "b1")
    before = fingerprint(con)
    revised = vix_rows(times[1:], [2.0, 30.0, 40.0])          # row 2 identical, row 3 revised, row 4 new
    with pytest.raises(store.StoreConflictError, match=r"vix_term_structure: 1 row\(s\) already stored with different values") as err:
        insert_rows(con, "vix_term_structure", revised, "b2")
    assert "2025-08-04 03:47:00+00" in str(err.value) and "value (stored 3.0, new 30.0)" in str(err.value)
    assert err.value.conflicts[0]["tenor_days"] == "30" and err.value.conflicts[0]["differing_columns"] == ["value"]
    assert fingerprint(con) == before                          # the new key (40.0) was not stored either
    with pytest.raises(ValueError, match="given twice with different values") as twice:
        insert_rows(con, "vix_term_structure", vix_rows([times[3], times[3]], [5.0, 6.0]), "b3")
    assert twice.value.conflicts[0]["differing_columns"] == []
    assert fingerprint(con) == before


def test_a_conflict_on_the_second_table_of_a_batch_stores_nothing(con, fingerprint):
    write_batch(con, {"underlying_bars": bar_rows([T0], [100.0])}, {"batch_id": "b0", "exchange": "NSE", "kind": "test", "source": "t"})
    before, batches_before = fingerprint(con), fingerprint(con, ("training_batches",))
    with pytest.raises(store.StoreConflictError, match="underlying_bars.*close") as err:
        write_batch(con, {"vix_term_structure": vix_rows([T0], [1.0]), "underlying_bars": bar_rows([T0], [101.0])},
                    {"batch_id": "b1", "exchange": "NSE", "kind": "test", "source": "t"})
    assert err.value.conflicts[0]["differing_columns"] == ["open", "high", "low", "close", "futures_price"]   # schema order
    assert fingerprint(con) == before and fingerprint(con, ("training_batches",)) == batches_before


def test_insert_rows_keeps_a_batch_id_column_given_in_the_frame(con):
    insert_rows(con, "vix_term_structure", vix_rows([T0], [1.0]).assign(batch_id="inside"), "argument")
    assert con.execute("SELECT batch_id FROM vix_term_structure").fetchall() == [("inside",)]


@settings(max_examples=25, deadline=None, database=None)
@given(frames=st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.floats(-1e6, 1e6)), max_size=8),
                       min_size=1, max_size=5))
def test_insert_rows_property_matches_a_first_write_wins_dict(tmp_path_factory, frames):
    "Any sequence of batches (with repeated keys inside and across them) stores exactly one row per key, the first seen."
    c = connect(tmp_path_factory.mktemp("prop") / "w.duckdb")
    reference, total = {}, 0
    for i, rows in enumerate(frames):
        frame = pd.DataFrame({"timestamp": [T0 + pd.Timedelta(minutes=m) for m, _, _ in rows], "exchange": "NSE",
                              "tenor_days": [7 * (k + 1) for _, k, _ in rows], "value": [v for _, _, v in rows],
                              "source": "p"}, columns=["timestamp", "exchange", "tenor_days", "value", "source"])
        new_keys = {(m, 7 * (k + 1)) for m, k, _ in rows} - set(reference)
        for m, k, v in rows:
            reference.setdefault((m, 7 * (k + 1)), (v, i))
        added = insert_rows(c, "vix_term_structure", frame, f"b{i}", on_conflict="ignore")
        assert added == len(new_keys)
        total += added
    got = c.execute("SELECT timestamp, tenor_days, value, batch_id FROM vix_term_structure").df()
    assert len(got) == total == len(reference)
    for ts, tenor, value, batch in got.itertuples(index=False):
        first_batch = reference[(int((ts - T0) / pd.Timedelta(minutes=1)), tenor)][1]
        assert batch == f"b{first_batch}"
        # inside one frame DuckDB keeps one of the duplicates; across frames the first batch wins
        in_batch = [v for m, k, v in frames[first_batch] if (m, 7 * (k + 1)) == (int((ts - T0) / pd.Timedelta(minutes=1)), tenor)]
        assert value in in_batch
    c.close()


@pytest.mark.parametrize("save, table, frame", [
    (save_vix_term_structure, "vix_term_structure", lambda: vix_rows([T0, T0 + pd.Timedelta(minutes=1)], [1.0, 2.0])),
    (save_underlying_bars, "underlying_bars", lambda: bar_rows([T0, T0 + pd.Timedelta(minutes=1)], [100.0, 101.0])),
    (save_macro_signals, "macro_signals", lambda: pd.DataFrame({"timestamp": [T0], "exchange": "NSE", "name": "fii_net_flow",
                                                                    "value": [1.0], "available_from": [T0], "source": "t"})),
    (save_order_book_depth, "order_book_depth_snapshots", lambda: pd.DataFrame({
        "timestamp": T0, "exchange": "NSE", "symbol": "NIFTY", "level": [1, 2], "bid_price": 1.0, "bid_qty": 2.0, "ask_price": 1.1, "ask_qty": 3.0, "source": "t"})),
    (save_option_chain_snapshot, "option_chain_snapshots", lambda: pd.DataFrame([chain_row(T0, "2025-08-07", 24000.0, "CE", 10.0)])),
])
def test_save_wrappers_are_idempotent(con, save, table, frame):
    n = len(frame())
    assert save(con, frame(), "b") == n and save(con, frame(), "b") == 0
    assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == n


def test_a_value_that_does_not_cast_rolls_the_insert_back(con, fingerprint):
    save_vix_term_structure(con, vix_rows([T0], [1.0]), "ok")
    before = fingerprint(con)
    bad = vix_rows([T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(minutes=2)], ["2.0", "not a number"])
    with pytest.raises(duckdb.Error):
        save_vix_term_structure(con, bad, "bad")
    assert fingerprint(con) == before
    assert save_vix_term_structure(con, vix_rows([T0 + pd.Timedelta(minutes=1)], [2.0]), "next") == 1   # connection usable


def test_a_cast_error_outside_a_transaction_names_the_value_and_column(con):
    bad = vix_rows([T0], ["not a number"])
    with pytest.raises(Exception, match=r"'not a number'.*column value"):
        insert_rows(con, "vix_term_structure", bad)


def test_a_cast_error_inside_a_transaction_names_the_value_and_column(con):
    bad = vix_rows([T0], ["not a number"])
    with pytest.raises(Exception, match=r"'not a number'.*column value"):
        save_vix_term_structure(con, bad, "bad")


# ---------------------------------------------------------------- transactions and batches
def test_transaction_rolls_back_every_statement_on_any_exception(con, fingerprint):
    before = fingerprint(con)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), transaction(con):
            insert_rows(con, "vix_term_structure", vix_rows([T0], [1.0]))
            insert_rows(con, "underlying_bars", bar_rows([T0], [100.0]))
            raise exc
        assert fingerprint(con) == before
    with transaction(con):
        insert_rows(con, "vix_term_structure", vix_rows([T0], [1.0]))
    assert fingerprint(con)["vix_term_structure"][0] == 1


def test_write_batch_records_the_batch_with_rows_stored(con):
    added = write_batch(con, {"vix_term_structure": vix_rows([T0], [1.0]), "underlying_bars": bar_rows([T0, T0 + pd.Timedelta(minutes=1)], [1.0, 2.0])},
                        {"batch_id": "b1", "exchange": "NSE", "kind": "test", "source": "t", "rows_in": 3})
    assert added == {"vix_term_structure": 1, "underlying_bars": 2}
    row = con.execute("SELECT status, rows_in, rows_stored FROM training_batches WHERE batch_id = 'b1'").fetchall()
    assert row == [("stored", 3, 3)]
    assert con.execute("SELECT DISTINCT batch_id FROM underlying_bars").fetchall() == [("b1",)]


def test_write_batch_failing_on_its_second_table_stores_nothing(con, fingerprint, fail_second_insert):
    write_batch(con, {"vix_term_structure": vix_rows([T0], [1.0])}, {"batch_id": "b0", "exchange": "NSE", "kind": "test", "source": "t"})
    before, batches_before = fingerprint(con), fingerprint(con, ("training_batches",))
    calls = fail_second_insert(store)
    frames = {"vix_term_structure": vix_rows([T0 + pd.Timedelta(minutes=1)], [2.0]),
              "underlying_bars": bar_rows([T0], [100.0])}
    with pytest.raises(OSError, match="injected"):
        write_batch(con, frames, {"batch_id": "b1", "exchange": "NSE", "kind": "test", "source": "t"})
    assert calls == ["vix_term_structure", "underlying_bars"]
    assert fingerprint(con) == before and fingerprint(con, ("training_batches",)) == batches_before
    assert con.execute("SELECT count(*) FROM training_batches WHERE batch_id = 'b1'").fetchall()[0][0] == 0


def test_record_training_batch_replaces_a_row_with_the_same_id(con):
    record_training_batch(con, "b", "NSE", "ingest", "imported", status="rejected", validation_report={"ok": False})
    record_training_batch(con, "b", "NSE", "ingest", "imported", status="stored", rows_stored=5)
    assert con.execute("SELECT status, rows_stored FROM training_batches").fetchall() == [("stored", 5)]


# ---------------------------------------------------------------- ml_features against a pandas reference
def chain_row(ts, expiry, strike, option_type, oi, iv=0.15, spot=24010.0, volume=None, oi_change=0.0, lot=75):
    return {"timestamp": ts, "exchange": "NSE", "symbol": "NIFTY", "expiry": pd.Timestamp(expiry).date(), "strike": float(strike),
                "option_type": option_type, "ltp": 10.0, "iv": iv, "oi": float(oi), "oi_change": float(oi_change),
                "volume": float(oi / 10 if volume is None else volume), "bid": 9.9, "ask": 10.1, "bid_qty": 100.0, "ask_qty": 90.0,
                "underlying_price": spot, "lot_size": lot, "source": "test"}


def random_market(seed: int):
    "Three chain snapshots (two expiries, 15 strikes), bars around them, VIX, a 6-level book and macro prints."
    rng = np.random.default_rng(seed)
    snaps = [T0, T0 + pd.Timedelta(minutes=3), T0 + pd.Timedelta(minutes=6)]
    chain = []
    for ts in snaps:
        spot = 24000 + rng.uniform(-120, 120)
        if abs((spot % 50) - 25) < 1: spot += 5                      # keep the ATM strike unambiguous
        atm = round(spot / 50) * 50
        for expiry in ("2025-08-07", "2025-08-14"):
            for k in range(-7, 8):
                for typ in ("CE", "PE"):
                    oi = float(rng.integers(0, 5000)) if rng.uniform() > 0.1 else 0.0
                    chain.append(chain_row(ts, expiry, atm + 50 * k, typ, oi, iv=rng.uniform(0.08, 0.3), spot=spot,
                                           volume=float(rng.integers(0, 900)), oi_change=float(rng.integers(-50, 50))))
    chain = pd.DataFrame(chain)
    prices = np.random.default_rng([seed, 1])                         # its own stream: the other draws stay as they were
    chain["ltp"] = prices.uniform(1, 200, len(chain)).round(2)         # arbitrary prices: parity picks one strike per expiry
    no_pair = (chain.timestamp == snaps[2]) & (chain.expiry == pd.Timestamp("2025-08-14").date()) & (chain.option_type == "PE")
    chain.loc[no_pair, "ltp"] = 0.0                                    # no strike with both prices: the S·e^{rτ} fallback
    bars = bar_rows(T0 + pd.to_timedelta(np.arange(-1, 9), unit="min"), 24000 + rng.normal(0, 20, 10))
    vix = pd.concat([vix_rows([T0 - pd.Timedelta(minutes=2), T0 + pd.Timedelta(minutes=4)], rng.uniform(10, 20, 2), tenor)
                     for tenor in (7, 30, 60)], ignore_index=True)
    book = pd.DataFrame([{"timestamp": ts, "exchange": "NSE", "symbol": "NIFTY", "level": level, "bid_price": 1.0,
                              "bid_qty": float(rng.integers(1, 100)), "ask_price": 1.05, "ask_qty": float(rng.integers(1, 100)), "source": "t"}
                         for ts in (T0 + pd.Timedelta(seconds=30), T0 + pd.Timedelta(minutes=2)) for level in range(1, 7)])
    macro = pd.DataFrame([{"timestamp": T0 - pd.Timedelta(hours=10), "exchange": "NSE", "name": name, "value": rng.normal(0, 1000),
                               "available_from": T0 + pd.Timedelta(minutes=5 + lag), "source": "t"}
                          for name, lag in (("fii_net_flow", 0), ("dii_net_flow", 1))])   # published a minute apart
    return {"option_chain_snapshots": chain, "underlying_bars": bars, "vix_term_structure": vix, "order_book_depth_snapshots": book,
                "macro_signals": macro}


RISK_FREE_RATE = 0.065   # RunConfig.risk_free_rate


def expiry_close(expiry) -> pd.Timestamp:
    "15:30 IST on expiry day, in UTC."
    return pd.Timestamp(expiry).tz_localize("UTC") + pd.Timedelta(hours=10)


def parity_forward(frame: pd.DataFrame, spot: float, tau: float) -> float:
    "F = K + e^{rτ}(C − P) at the strike where |C − P| is smallest (ties: nearest spot, then lowest strike); else S·e^{rτ}."
    calls = frame[frame.option_type == "CE"].groupby("strike").ltp.max()
    puts = frame[frame.option_type == "PE"].groupby("strike").ltp.max()
    pairs = [(abs(calls[k] - puts[k]), abs(k - spot), k) for k in calls.index.intersection(puts.index) if calls[k] > 0 and puts[k] > 0]
    if not pairs: return spot * math.exp(RISK_FREE_RATE * tau)
    k = min(pairs)[2]
    return k + math.exp(RISK_FREE_RATE * tau) * (calls[k] - puts[k])


def black76_spot_gamma(spot: float, forward: float, strike: float, iv: float, tau: float) -> float:
    "∂²V/∂S² of a Black-76 option on F ∝ S: e^{−rτ}(F/S)φ(d1)/(Sσ√τ)."
    d1 = (math.log(forward / strike) + 0.5 * iv * iv * tau) / (iv * math.sqrt(tau))
    return math.exp(-RISK_FREE_RATE * tau) * forward / spot * math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) / (spot * iv * math.sqrt(tau))


def reference_snapshot_features(snap: pd.DataFrame) -> dict:
    "Chain aggregates of one snapshot, from the definitions in the store notebook / DOMAIN.md, one strike at a time."
    ts = snap.timestamp.iloc[0]
    expiries = sorted(snap.expiry.unique())
    near, nxt = snap[snap.expiry == expiries[0]], snap[snap.expiry == (expiries[1] if len(expiries) > 1 else None)]
    spot = float(snap.underlying_price.iloc[0])
    strikes = sorted(near.strike.unique())
    atm = min(strikes, key=lambda k: abs(k - spot))
    step = min(b - a for a, b in itertools.pairwise(strikes))
    off = lambda frame: (frame.strike - atm) / step
    calls, puts = near[near.option_type == "CE"], near[near.option_type == "PE"]
    pain = {k: sum(r.oi * max(k - r.strike, 0) for r in calls.itertuples()) + sum(r.oi * max(r.strike - k, 0) for r in puts.itertuples())
            for k in strikes}
    gex = 0.0   # over all listed expiries
    for expiry, frame in snap.groupby("expiry"):
        tau = (expiry_close(expiry) - ts).total_seconds() / (365 * 86400)
        forward = parity_forward(frame, spot, tau)
        for r in frame.itertuples():
            if r.iv > 0 and tau > 0:
                gamma = black76_spot_gamma(spot, forward, r.strike, r.iv, tau)
                gex += (1 if r.option_type == "CE" else -1) * gamma * r.oi * r.lot_size * spot * spot * 0.01
    within = lambda frame, n: frame[off(frame).abs() <= n]
    iv_at = lambda frame, k: frame[np.isclose(off(frame), k)].iv.mean()
    return {
        "atm_strike": atm, "call_oi": calls.oi.sum(), "put_oi": puts.oi.sum(), "call_oi_change": calls.oi_change.sum(),
        "put_oi_change": puts.oi_change.sum(), "call_volume": calls.volume.sum(), "put_volume": puts.volume.sum(),
        "pcr_oi": puts.oi.sum() / calls.oi.sum(), "pcr_volume": puts.volume.sum() / calls.volume.sum(),
        "pcr_oi_atm": within(puts, 5).oi.sum() / within(calls, 5).oi.sum(),
        "oi_concentration_atm": within(near, 2).oi.sum() / near.oi.sum(), "atm_iv": iv_at(near, 0), "next_atm_iv": iv_at(nxt, 0),
        "iv_skew": iv_at(puts, -4) - iv_at(calls, 4), "gex": gex,
        "max_pain_strike": min(strikes, key=lambda k: (pain[k], k)) if near.oi.sum() > 0 else np.nan,   # no OI: undefined
        "expiry_closes": [expiry_close(e) for e in expiries[:2]], "lot_size": float(near.lot_size.max()), "chain_snapshot_time": ts,
        "strike_step": step}   # the snapshot's own step, which the ATM shift of `10_features` counts in


def latest_at_or_before(frame: pd.DataFrame, ts, column="timestamp") -> pd.DataFrame:
    eligible = frame[frame[column] <= ts]
    return eligible[eligible[column] == eligible[column].max()] if len(eligible) else eligible


@functools.cache
def _sessions_before(day: dt.date) -> int:
    "Trading sessions of NSE from 1 Jan 2024 to the day before `day`, one day at a time."
    return sum(is_trading_day(NSE, d) for d in pd.date_range("2024-01-01", day - dt.timedelta(days=1)).date)


def reference_trading_minute(ts: pd.Timestamp) -> float:
    """The store's trading clock, slowly: each NSE session counts its 375 minutes plus one for the break after it; an instant
    before the open sits at the open, after the close at the close, on a holiday or weekend at the previous close."""
    local, length = ts.tz_convert(IST), NSE.session_minutes()
    sessions = _sessions_before(local.date())
    if not is_trading_day(NSE, local.date()): return sessions * (length + 1) - 1.0
    into = (local - local.normalize()).total_seconds() / 60 - (NSE.session_open.hour * 60 + NSE.session_open.minute)
    return sessions * (length + 1) + min(max(into, 0.0), length)


def reference_limits() -> dict:
    "The default maximum ages in trading minutes (RunConfig.staleness; a session is 375 + 1 minutes)."
    limits, session = RunConfig().staleness, NSE.session_minutes() + 1
    return dict(chain=limits.chain_max_sessions * session, vix=limits.vix_max_minutes, book=limits.book_max_minutes,
                flows=limits.flows_max_sessions * session)


def fresh_at(frame: pd.DataFrame, ts, limit: float, column="timestamp") -> pd.DataFrame:
    "The latest rows at or before `ts`, or none when they are more than `limit` trading minutes old."
    latest = latest_at_or_before(frame, ts, column)
    if len(latest) and reference_trading_minute(ts) - reference_trading_minute(latest[column].iloc[0]) > limit: return latest.iloc[:0]
    return latest


def reference_ml_features(m: dict) -> pd.DataFrame:
    """One row per bar: the bar, and the latest chain / VIX / book / macro print at or before it (no look-ahead), unless
    that print is older than its default staleness limit."""
    rows, limits = [], reference_limits()
    for bar in m["underlying_bars"].itertuples():
        row = {"timestamp": bar.timestamp, "close": bar.close, "futures_basis": (bar.futures_price - bar.close) / bar.close}
        snap = fresh_at(m["option_chain_snapshots"], bar.timestamp, limits["chain"])
        snap = snap[snap.expiry.map(expiry_close) >= bar.timestamp]    # only the expiries still trading at the bar's time
        if len(snap):
            row.update(reference_snapshot_features(snap))
            # from the bar's own time to the nearest expiry that has not closed yet
            row["days_to_expiry"] = (row.pop("expiry_closes")[0] - bar.timestamp).total_seconds() / 86400
            row["max_pain_distance"] = (row["max_pain_strike"] - bar.close) / bar.close
            row["chain_age_minutes"] = (bar.timestamp - row["chain_snapshot_time"]) // pd.Timedelta(minutes=1)
        vix = m["vix_term_structure"]
        row.update({name: fresh_at(vix[vix.tenor_days == t], bar.timestamp, limits["vix"]).value.max()   # each tenor on its own
                    for name, t in (("vix", 30), ("vix_near", 7), ("vix_far", 60))})
        book = fresh_at(m["order_book_depth_snapshots"], bar.timestamp, limits["book"])
        top = book[book.level <= 5]
        row.update(book_bid_qty=top.bid_qty.sum() if len(top) else np.nan, book_ask_qty=top.ask_qty.sum() if len(top) else np.nan)
        for name, col in (("fii_net_flow", "fii_flow"), ("dii_net_flow", "dii_flow")):   # each flow on its own
            macro = fresh_at(m["macro_signals"][m["macro_signals"].name == name], bar.timestamp, limits["flows"], "available_from")
            row[col] = macro.sort_values("timestamp").value.iloc[-1] if len(macro) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
def test_build_ml_features_matches_pandas_reference(con, seed):
    market = random_market(seed)
    write_batch(con, market, {"batch_id": "m", "exchange": "NSE", "kind": "test", "source": "t"})
    assert build_ml_features(con, "NSE") == len(market["underlying_bars"])
    got = load_historical_data_for_ml(con, "NSE").set_index("timestamp")
    ref = reference_ml_features(market).set_index("timestamp")
    assert got.index.equals(ref.index)
    assert got.chain_snapshot_time.isna().iloc[0] and got.atm_strike.isna().iloc[0]   # bar before the first snapshot
    for col in ref.columns:
        if col == "chain_snapshot_time":
            assert (pd.to_datetime(got[col].dropna(), utc=True) == ref[col].dropna()).all()
            continue
        np.testing.assert_allclose(got[col].astype(float), ref[col].astype(float), rtol=1e-9, atol=1e-9, err_msg=col)
    # macro prints only count from available_from, never from their (earlier) timestamp; the later DII print hides no FII
    assert got.fii_flow[got.index < T0 + pd.Timedelta(minutes=5)].isna().all()
    assert got.fii_flow[got.index >= T0 + pd.Timedelta(minutes=5)].notna().all()


def test_build_ml_features_only_touches_its_exchange_and_window(con):
    m = random_market(0)
    write_batch(con, m, {"batch_id": "m", "exchange": "NSE", "kind": "test", "source": "t"})
    bse = bar_rows(m["underlying_bars"].timestamp, 80000.0, symbol="SENSEX", exchange="BSE")
    insert_rows(con, "underlying_bars", bse, "bse")
    build_ml_features(con, "BSE")
    assert con.execute("SELECT exchange, count(*) FROM ml_features GROUP BY ALL").fetchall() == [("BSE", 10)]
    assert build_ml_features(con, "NSE", start=T0, end=T0 + pd.Timedelta(minutes=2)) == 3
    assert sorted(con.execute("SELECT exchange, count(*) FROM ml_features GROUP BY ALL").fetchall()) == [("BSE", 10), ("NSE", 3)]


def test_build_ml_features_is_bit_reproducible(sim_con):
    "Same raw tables, any thread count (the machine decides it): the same bits."
    hashes = set()
    for threads in (1, 4, 4, 4):
        sim_con.execute(f"SET threads = {threads}")
        build_ml_features(sim_con, "NSE")
        hashes.add(sim_con.execute("SELECT sum(hash(t)) FROM ml_features t").fetchall()[0][0])
    assert len(hashes) == 1


def test_rebuilt_features_agree_with_the_stored_ones_to_rounding(sim_con):
    before = sim_con.execute("SELECT * FROM ml_features ORDER BY timestamp").df()
    build_ml_features(sim_con, "NSE")
    after = sim_con.execute("SELECT * FROM ml_features ORDER BY timestamp").df()
    assert before.drop(columns="gex").equals(after.drop(columns="gex"))
    np.testing.assert_allclose(after.gex, before.gex, rtol=1e-12)


# ---------------------------------------------------------------- as-of values from stale, end-of-day sources
def end_of_day_market() -> dict:
    """An end-of-day chain (15:30 IST on Fri 1, Wed 6 and Thu 7 Aug 2025, expiries 7 and 14 Aug) with VIX and a book at the
    same instants, and intraday bars on Mon 4, Thu 7 (expiry day) and Fri 8 Aug, 09:15-09:19 IST."""
    closes = [expiry_close(d) for d in ("2025-08-01", "2025-08-06", "2025-08-07")]
    chain = pd.DataFrame([chain_row(ts, expiry, 24000 + 50 * k, typ, 1000 + 10 * k, spot=24010.0)
                          for ts in closes for expiry in ("2025-08-07", "2025-08-14") for k in range(-3, 4) for typ in ("CE", "PE")])
    bars = bar_rows([pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=3, minutes=45 + i)
                     for day in ("2025-08-04", "2025-08-07", "2025-08-08") for i in range(5)], np.full(15, 24000.0))
    book = pd.DataFrame([{"timestamp": ts, "exchange": "NSE", "symbol": "NIFTY", "level": 1, "bid_price": 1.0, "bid_qty": 10.0,
                          "ask_price": 1.05, "ask_qty": 20.0, "source": "t"} for ts in closes])
    return {"option_chain_snapshots": chain, "underlying_bars": bars, "vix_term_structure": vix_rows(closes, [12.0, 13.0, 14.0]),
            "order_book_depth_snapshots": book}


def test_days_to_expiry_counts_from_the_bar_not_from_an_end_of_day_snapshot(con):
    from oi_ml.features import time_features
    write_batch(con, end_of_day_market(), {"batch_id": "eod", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    got = load_historical_data_for_ml(con, "NSE")
    minutes_to_close = 6.25 * 60 - np.arange(5)                      # 09:15.. IST to 15:30 IST, one bar a minute
    expected = np.concatenate([3 * 1440 + minutes_to_close,           # Mon, as of Friday's snapshot: to Thu 7 Aug
                               minutes_to_close,                      # Thu (expiry day), as of Wednesday's: hours, not a day
                               7 * 1440 - 1440 + minutes_to_close]) / 1440   # Fri, as of Thursday's (still lists 7 Aug): to 14 Aug
    np.testing.assert_allclose(got.days_to_expiry, expected, rtol=1e-12)
    is_expiry_day = time_features(got, session_open_minute=9 * 60 + 15, session_minutes=375).is_expiry_day
    assert list(is_expiry_day) == [0.0] * 5 + [1.0] * 5 + [0.0] * 5
    assert (got.chain_age_minutes[5:10] == 17 * 60 + 45 + np.arange(5)).all()   # the age of the as-of snapshot is exposed


@pytest.mark.parametrize("start", ["2025-08-04", "2025-08-04 09:17", "2025-08-07", "2025-08-08 09:16"])   # naive: IST
def test_window_rebuild_gives_the_rows_of_a_full_rebuild(con, start):
    "A window starting on a Monday, mid-session or after an end-of-day snapshot still sees the latest chain, VIX and book."
    write_batch(con, end_of_day_market(), {"batch_id": "eod", "exchange": "NSE", "kind": "test", "source": "t"})
    since = "SELECT * FROM ml_features WHERE timestamp >= $start ORDER BY timestamp"
    build_ml_features(con, "NSE")
    full = con.execute(since, {"start": to_utc(start).to_pydatetime()}).df()
    assert full[["pcr_oi", "gex", "days_to_expiry", "vix", "book_bid_qty"]].notna().all().all()
    assert build_ml_features(con, "NSE", start, "2025-08-08") == len(full)
    window = con.execute(since, {"start": to_utc(start).to_pydatetime()}).df()
    pd.testing.assert_frame_equal(window, full)


# ---------------------------------------------------------------- the nearest expiry is the nearest live one at the bar
def expiry_day_market() -> dict:
    """Thu 7 Aug 2025 (a weekly expiry): chain snapshots at 14:00 and 15:30 IST (the end-of-day bhavcopy, which still lists
    the expiring series) of the expiring 7 Aug and the live 14 Aug series, strikes 23850-24150. 7 Aug: call OI 100 a strike,
    put OI 1000 (14:00) or 2000 (15:30), IV 0.30; 14 Aug: call OI 1000, put OI 100, IV 0.12. Bars 14:00, 15:29, 15:30 IST
    on Thu and 09:15, 09:16 IST on Fri 8 Aug."""
    def snapshot(ts, expiring_put_oi):
        return [chain_row(ist(ts), expiry, 24000 + 50 * k, typ, oi, iv=iv) for k in range(-3, 4)
                for expiry, iv, oi_ce, oi_pe in (("2025-08-07", 0.30, 100, expiring_put_oi), ("2025-08-14", 0.12, 1000, 100))
                for typ, oi in (("CE", oi_ce), ("PE", oi_pe))]
    chain = pd.DataFrame(snapshot("2025-08-07 14:00", 1000) + snapshot("2025-08-07 15:30", 2000))
    times = [ist(t) for t in ("2025-08-07 14:00", "2025-08-07 15:29", "2025-08-07 15:30", "2025-08-08 09:15", "2025-08-08 09:16")]
    return {"option_chain_snapshots": chain, "underlying_bars": bar_rows(times, np.full(5, 24010.0))}


def test_bars_after_an_expiry_read_the_next_series_of_an_end_of_day_chain(con):
    """By hand: the expiring series' puts outweigh its calls, so its max pain is the top strike 24150 (calls pay
    100·(300+250+…+50) = 105 000 there, 125 000 at 24100); the 14 Aug series' calls outweigh its puts: max pain 23850, PCR
    0.1. Expiry-day bars up to the 15:30 close read the expiring series; the next session reads 14 Aug, not the closed 7 Aug."""
    write_batch(con, expiry_day_market(), {"batch_id": "x", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    got = load_historical_data_for_ml(con, "NSE")
    np.testing.assert_allclose(got.pcr_oi, [10.0, 10.0, 20.0, 0.1, 0.1])
    np.testing.assert_allclose(got.call_oi, [700.0, 700.0, 700.0, 7000.0, 7000.0])
    np.testing.assert_allclose(got.max_pain_strike, [24150.0, 24150.0, 24150.0, 23850.0, 23850.0])
    np.testing.assert_allclose(got.max_pain_distance, (got.max_pain_strike - 24010.0) / 24010.0)
    np.testing.assert_allclose(got.atm_iv, [0.30, 0.30, 0.30, 0.12, 0.12])
    np.testing.assert_allclose(got.next_atm_iv, [0.12, 0.12, 0.12, np.nan, np.nan])   # nothing listed after 14 Aug
    np.testing.assert_allclose(got.pcr_oi_atm, [10.0, 10.0, 20.0, 0.1, 0.1])
    np.testing.assert_allclose(got.days_to_expiry * 1440, [90, 1, 0, 7 * 1440 - 1440 + 375, 7 * 1440 - 1440 + 374])
    assert (pd.to_datetime(got.chain_snapshot_time[2:], utc=True) == ist("2025-08-07 15:30")).all()   # the bhavcopy still serves
    since = "SELECT * FROM ml_features WHERE timestamp >= $start ORDER BY timestamp"
    full = con.execute(since, {"start": ist("2025-08-08 09:16").to_pydatetime()}).df()
    build_ml_features(con, "NSE", "2025-08-08 09:16", "2025-08-08")   # a window after the expiry: the same rows
    pd.testing.assert_frame_equal(con.execute(since, {"start": ist("2025-08-08 09:16").to_pydatetime()}).df(), full)


def test_each_bar_carries_its_own_chains_strike_step(con):
    """Chains of other indices have other strike steps (BANKNIFTY 100, MIDCPNIFTY 25): ml_features stores each snapshot's
    own, per symbol, so `10_features` counts the ATM shift in that chain's strikes; a bar without a chain has none."""
    times = [T0 + pd.Timedelta(minutes=m) for m in (0, 1)]
    chain = pd.DataFrame([chain_row(T0, "2025-08-07", spot // step * step + step * k, typ, 100.0, spot=spot) | {"symbol": symbol}
                          for symbol, spot, step in (("NIFTY", 24010.0, 50.0), ("BANKNIFTY", 52010.0, 100.0), ("MIDCPNIFTY", 12010.0, 25.0))
                          for k in range(-4, 5) for typ in ("CE", "PE")])
    bars = pd.concat([bar_rows(times, [spot] * 2, symbol=symbol) for symbol, spot in (("NIFTY", 24010.0), ("BANKNIFTY", 52010.0),
                                                                                     ("MIDCPNIFTY", 12010.0), ("ALT", 500.0))])
    write_batch(con, {"option_chain_snapshots": chain, "underlying_bars": bars}, {"batch_id": "s", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    got = load_historical_data_for_ml(con, "NSE").groupby("symbol").strike_step.agg(list).to_dict()
    assert got == {"BANKNIFTY": [100.0] * 2, "MIDCPNIFTY": [25.0] * 2, "NIFTY": [50.0] * 2} | {"ALT": got["ALT"]}
    assert np.isnan(got["ALT"]).all()


def test_a_chain_listing_only_closed_expiries_informs_no_later_bar(con):
    "An end-of-day chain holding only the expiring series: the next session knows no live series, so no chain values."
    market = expiry_day_market()
    market["option_chain_snapshots"] = market["option_chain_snapshots"].query("expiry == @dt.date(2025, 8, 7)")
    write_batch(con, market, {"batch_id": "x", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    got = load_historical_data_for_ml(con, "NSE")
    assert got.pcr_oi[:3].notna().all() and got[["pcr_oi", "max_pain_strike", "atm_iv", "days_to_expiry"]][3:].isna().all().all()


def test_max_pain_is_missing_when_the_nearest_expiry_has_no_open_interest(con):
    "Every OI 0 (a freshly listed series): max pain is undefined, like PCR, and the feature takes its neutral default."
    from oi_ml.features import FEATURE_DEFAULTS, prepare_training_features
    chain = pd.DataFrame([chain_row(T0, "2025-08-07", 24000 + 50 * k, typ, 0.0) for k in range(-3, 4) for typ in ("CE", "PE")]
                         + [chain_row(T0, "2025-08-14", 24000 + 50 * k, typ, 500.0) for k in range(-3, 4) for typ in ("CE", "PE")])
    write_batch(con, {"option_chain_snapshots": chain, "underlying_bars": bar_rows([T0], [24010.0])},
                {"batch_id": "z", "exchange": "NSE", "kind": "test", "source": "t"})
    build_ml_features(con, "NSE")
    got = load_historical_data_for_ml(con, "NSE")
    assert got.pcr_oi.isna().all() and got.max_pain_strike.isna().all() and got.max_pain_distance.isna().all()
    assert got.atm_strike.notna().all()                                   # the snapshot itself is used
    feats = prepare_training_features(got, ["max_pain_distance", "log_pcr_oi"])
    assert (feats.max_pain_distance == FEATURE_DEFAULTS["max_pain_distance"]).all()


# ---------------------------------------------------------------- stale as-of values are missing values
def ist(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=IST).tz_convert("UTC")


def minutes_from(start: str, n: int) -> list:
    return [ist(start) + pd.Timedelta(minutes=i) for i in range(n)]


GAP_BARS = minutes_from("2025-08-18 09:15", 36) + minutes_from("2025-08-18 15:25", 5) + minutes_from("2025-08-19 09:15", 5)


def feed_gap_market() -> dict:
    """Feeds that stop around the Independence Day weekend (Fri 15 Aug 2025 a holiday): the bhavcopy chain of Thu 14 Aug
    15:30 and no file for Mon 18; VIX printing 09:15-09:30 on Mon 18, then an outage; the book at 09:15 and 09:20 only;
    FII and DII flows published Thu 14 18:00, and on Mon 18 18:00 the DII flow only. Bars: Mon 18 09:15-09:50 and
    15:25-15:29, Tue 19 09:15-09:19 IST."""
    chain = pd.DataFrame([chain_row(ist("2025-08-14 15:30"), expiry, 24000 + 50 * k, typ, 1000 + 10 * k, spot=24010.0)
                          for expiry in ("2025-08-21", "2025-08-28") for k in range(-3, 4) for typ in ("CE", "PE")])
    book = pd.DataFrame([{"timestamp": ts, "exchange": "NSE", "symbol": "NIFTY", "level": 1, "bid_price": 1.0, "bid_qty": 10.0,
                          "ask_price": 1.05, "ask_qty": 20.0, "source": "t"} for ts in (ist("2025-08-18 09:15"), ist("2025-08-18 09:20"))])
    flows = pd.DataFrame([{"timestamp": ist(day), "exchange": "NSE", "name": name, "value": value, "available_from": ist(day), "source": "t"}
                          for day, name, value in (("2025-08-14 18:00", "fii_net_flow", -800.0), ("2025-08-14 18:00", "dii_net_flow", 650.0),
                                                   ("2025-08-18 18:00", "dii_net_flow", 700.0))])
    return {"option_chain_snapshots": chain, "underlying_bars": bar_rows(GAP_BARS, np.full(len(GAP_BARS), 24000.0)),
            "vix_term_structure": vix_rows(minutes_from("2025-08-18 09:15", 16), np.linspace(12, 13.5, 16)),
            "order_book_depth_snapshots": book, "macro_signals": flows}


def build_recording_warnings(con, *args, **kwargs) -> tuple[int, list]:
    "build_ml_features, and the warnings it raised."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = build_ml_features(con, "NSE", *args, **kwargs)
    return n, [w.message for w in caught]


def test_values_older_than_their_limit_are_missing_and_counted(con):
    """Trading time, not wall-clock time: Thursday's chain serves Monday (four calendar days later, over the holiday and the
    weekend) to 15:29, one session old, and is missing from Tuesday's open, when Monday's file should have replaced it."""
    write_batch(con, feed_gap_market(), {"batch_id": "gap", "exchange": "NSE", "kind": "test", "source": "t"})
    n, caught = build_recording_warnings(con)
    got = load_historical_data_for_ml(con, "NSE").set_index("timestamp")
    assert n == len(GAP_BARS) == len(got)
    monday, tuesday = got.index < ist("2025-08-19"), got.index >= ist("2025-08-19")
    chain_columns = ["atm_strike", "pcr_oi", "gex", "max_pain_strike", "days_to_expiry", "lot_size", "max_pain_distance", "chain_age_minutes"]
    assert got.loc[monday, chain_columns].notna().all().all() and got.loc[ist("2025-08-18 15:29"), "chain_age_minutes"] == 4 * 1440 - 1
    assert got.loc[tuesday, chain_columns].isna().all().all() and got.chain_snapshot_time[tuesday].isna().all()
    vix_until = got.index <= ist("2025-08-18 09:45")            # the last print (09:30) is 15 minutes old at 09:45: kept
    assert got.vix[vix_until].notna().all() and got.vix[~vix_until].isna().all()
    assert got.vix_near.isna().all() and got.vix_far.isna().all()  # never printed: missing, but not stale
    book_until = got.index <= ist("2025-08-18 09:25")
    assert got.book_bid_qty[book_until].eq(10.0).all() and got.book_bid_qty[~book_until].isna().all()
    assert got.fii_flow[monday].eq(-800.0).all() and got.fii_flow[tuesday].isna().all()   # Monday's FII print is missing
    assert got.dii_flow[monday].eq(650.0).all() and got.dii_flow[tuesday].eq(700.0).all()
    stale = [w for w in caught if type(w).__name__ == "StaleFeatureWarning"]
    assert len(stale) == 1 and stale[0].counts == {"chain": 5, "vix": 15, "book": 35, "fii": 5}, caught
    assert "chain 5 (limit 376)" in str(stale[0]) and "2025-08-19 03:49:00" in str(stale[0])   # the last stale bar, UTC


def test_unlimited_staleness_keeps_every_as_of_value(con):
    "`inf` switches the limits off: the last value carries on, as before the limits, and nothing is reported."
    write_batch(con, feed_gap_market(), {"batch_id": "gap", "exchange": "NSE", "kind": "test", "source": "t"})
    limits = RunConfig().staleness
    off = RunConfig(staleness=dataclasses.replace(limits, **dict.fromkeys([f.name for f in dataclasses.fields(limits)], math.inf)))
    _, caught = build_recording_warnings(con, run_cfg=off)
    got = load_historical_data_for_ml(con, "NSE")
    assert got[["pcr_oi", "vix", "book_bid_qty", "fii_flow", "dii_flow"]].notna().all().all() and not caught


@pytest.mark.parametrize("start", ["2025-08-18", "2025-08-18 09:46", "2025-08-18 15:25", "2025-08-19 09:16"])   # naive: IST
def test_window_rebuild_with_stale_values_gives_the_rows_of_a_full_rebuild(con, start):
    "A window starting inside an outage or after a missed file blanks the same bars as a full rebuild."
    write_batch(con, feed_gap_market(), {"batch_id": "gap", "exchange": "NSE", "kind": "test", "source": "t"})
    since = "SELECT * FROM ml_features WHERE timestamp >= $start ORDER BY timestamp"
    build_recording_warnings(con)
    full = con.execute(since, {"start": to_utc(start).to_pydatetime()}).df()
    assert build_recording_warnings(con, start, "2025-08-19")[0] == len(full)
    pd.testing.assert_frame_equal(con.execute(since, {"start": to_utc(start).to_pydatetime()}).df(), full)


def test_a_simulated_month_has_no_stale_values(tmp_path):
    """No false staleness on demo data: a simulated August 2025 (weekends, Independence Day on Fri 15 and Ganesh Chaturthi
    on Wed 27) keeps every as-of value under the default limits; only the first session has no FII/DII print yet."""
    from oi_ml.config import SimulationConfig
    from oi_ml.simulate import simulate_market
    cfg = RunConfig(data_dir=str(tmp_path / "data"), simulation=SimulationConfig(strikes_each_side=4))
    with connect(cfg) as c:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            simulate_market(c, "NSE", "2025-08-01", end="2025-08-31", run_cfg=cfg)
        n, rebuilt = build_recording_warnings(c, run_cfg=cfg)
        got = load_historical_data_for_ml(c, "NSE")
    stale = [w for w in [x.message for x in caught] + rebuilt if type(w).__name__ == "StaleFeatureWarning"]
    assert not stale, stale
    days = got.timestamp.dt.tz_convert(IST).dt.date
    assert n == len(got) == 19 * 375 and dt.date(2025, 8, 15) not in set(days) and dt.date(2025, 8, 27) not in set(days)
    assert got[["pcr_oi", "gex", "days_to_expiry", "vix", "vix_near", "vix_far", "book_bid_qty"]].notna().all().all()
    later = (days > days.min()).to_numpy()
    assert got.loc[later, ["fii_flow", "dii_flow"]].notna().all().all() and got.loc[~later, "fii_flow"].isna().all()


def test_gex_matches_the_simulators_black76_pricing(sim_con):
    """The simulator prices every expiry with Black-76 on F = S·e^{(r−q)τ}, q = 1.2 %: GEX from its chain is
    Σ ±e^{−qτ}φ(d1)/(Sσ√τ)·OI·lot·S²·0.01 over all expiries, up to the tick rounding of the prices behind the parity forward."""
    chain = sim_con.execute("SELECT * FROM option_chain_snapshots").df()
    gex = sim_con.execute("SELECT timestamp, gex FROM ml_features").df().set_index("timestamp").gex
    q = 0.012
    for ts, snap in list(chain.groupby("timestamp"))[::5]:
        spot, iv = snap.underlying_price.iloc[0], snap.iv.to_numpy()
        tau = (pd.to_datetime(snap.expiry).dt.tz_localize("UTC") + pd.Timedelta(hours=10) - ts).dt.total_seconds().to_numpy() / (365 * 86400)
        forward = spot * np.exp((RISK_FREE_RATE - q) * tau)
        d1 = (np.log(forward / snap.strike.to_numpy()) + 0.5 * iv ** 2 * tau) / (iv * np.sqrt(tau))
        gamma = np.exp(-q * tau) * np.exp(-0.5 * d1 ** 2) / np.sqrt(2 * np.pi) / (spot * iv * np.sqrt(tau))
        terms = np.where(snap.option_type == "CE", 1, -1) * gamma * snap.oi * snap.lot_size * spot ** 2 * 0.01
        assert abs(gex[ts] - terms.sum()) <= 2e-4 * np.abs(terms).sum(), ts


# ---------------------------------------------------------------- reading back
def test_load_historical_data_for_ml_window_sort_and_payload(sim_con):
    everything = load_historical_data_for_ml(sim_con, "NSE")
    assert len(everything) == 750 and everything.timestamp.is_monotonic_increasing
    assert str(everything.timestamp.dt.tz) == "UTC" and "feature_payload" not in everything
    assert everything.max_pain_distance.dtype == "float64" and everything.chain_age_minutes.between(0, 2).all()
    np.testing.assert_allclose(everything.max_pain_distance, (everything.max_pain_strike - everything.close) / everything.close)
    first_day = load_historical_data_for_ml(sim_con, "NSE", "2025-08-01", "2025-08-01")   # a date-only end includes the day
    assert len(first_day) == 375 and first_day.timestamp.dt.tz_convert("Asia/Kolkata").dt.date.nunique() == 1
    assert load_historical_data_for_ml(sim_con, "BSE").empty

"""Integration and fault tests of `oi_ml.ingest`: every check of the data-quality gate with a bad file (the error
names file, row and column; the store is unchanged; the rejection is quarantined and recorded), warnings that drop
and quarantine rows but store the rest, idempotent re-ingest, all-or-nothing writes, both bhavcopy layouts (plain and
zipped), and corrupt or missing files."""
import dataclasses
import hashlib
import json
import re
import zipfile

import numpy as np
import pandas as pd
import pytest

from oi_ml import ingest
from oi_ml.config import IST, RunConfig
from oi_ml.ingest import (
    IngestError,
    import_bhavcopy,
    import_ohlcv,
    write_example_bhavcopy,
)
from oi_ml.simulate import black76
from oi_ml.store import connect

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

N_ROWS = 30
DAILY_MINUTES = 375   # bar_minutes of one bar a session (09:15-15:30 IST): the config daily files are imported under


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    "Most files here are Yahoo-style daily bars: a daily run configuration (bar_minutes = the session) under tmp_path."
    return RunConfig(data_dir=str(tmp_path / "data"), bar_minutes=DAILY_MINUTES)


@pytest.fixture
def minute_cfg(cfg) -> RunConfig:
    "The same data directory under 1-minute bars, for the intraday files."
    return dataclasses.replace(cfg, bar_minutes=1)


# ---------------------------------------------------------------- tiny files
def yahoo_frame(n: int = N_ROWS, seed: int = 0, start: str = "2025-01-01") -> pd.DataFrame:
    "A valid Yahoo-style daily file: Date, Open, High, Low, Close, Adj Close, Volume (text cells, as on disk)."
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    frame = pd.DataFrame({"Date": pd.bdate_range(start, periods=n).strftime("%Y-%m-%d"), "Open": open_.round(4),
                          "High": high.round(4), "Low": low.round(4), "Close": close.round(4),
                          "Adj Close": (close * 0.99).round(4), "Volume": rng.integers(1_000, 5_000, n)})
    return frame.astype(str)


def intraday_frame(n: int = 40, gap_after: int | None = None) -> pd.DataFrame:
    "Valid 1-minute bars from 09:15 IST (naive wall-clock timestamps), optionally with a 10-minute hole."
    minutes = np.arange(n) + (np.where(np.arange(n) > gap_after, 10, 0) if gap_after is not None else 0)
    ts = pd.Timestamp("2025-01-02 09:15") + pd.to_timedelta(minutes, unit="min")
    return pd.DataFrame({"Datetime": ts.strftime("%Y-%m-%d %H:%M:%S"), "Open": "100", "High": "101", "Low": "99",
                         "Close": "100.5", "Volume": "10"})


def write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def ohlcv_batch_id(path, symbol, exchange="NSE"):
    "The batch id the importer should use: content-addressed by the file's sha256."
    return f"ohlcv-{exchange}-{symbol}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


@pytest.fixture
def seeded(con, cfg, tmp_path):
    "A warehouse that already holds a good import (symbol GOOD), so 'store unchanged' has something to lose."
    import_ohlcv(con, write(yahoo_frame(seed=1), tmp_path / "good.csv"), "GOOD", run_cfg=cfg)
    return con


def stored_bars(con, symbol):
    return con.execute("SELECT * FROM underlying_bars WHERE symbol = ? ORDER BY timestamp", [symbol]).df()


# ---------------------------------------------------------------- good files
def test_yahoo_daily_csv_is_stored_exactly(con, cfg, tmp_path):
    frame = yahoo_frame()
    result = import_ohlcv(con, write(frame, tmp_path / "yahoo.csv"), "ACME", run_cfg=cfg)
    assert result["rows_added"] == {"underlying_bars": N_ROWS} and result["warnings"] == []
    got = stored_bars(con, "ACME")
    for canonical, column in (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"), ("volume", "Volume")):
        np.testing.assert_array_equal(got[canonical].to_numpy(), frame[column].astype(float).to_numpy())
    # a date-only row is a daily bar stamped at the 09:15 IST session open, stored in UTC
    expected = pd.DatetimeIndex(pd.to_datetime(frame.Date) + pd.Timedelta(hours=9, minutes=15)).tz_localize(IST).tz_convert("UTC")
    assert list(got.timestamp) == list(expected) and str(got.timestamp.dt.tz) == "UTC"
    assert set(got.source) == {"imported"} and set(got.exchange) == {"NSE"} and set(got.batch_id) == {result["batch_id"]}
    features = con.execute("SELECT close FROM ml_features WHERE symbol = 'ACME' ORDER BY timestamp").df()
    np.testing.assert_array_equal(features.close.to_numpy(), got.close.to_numpy())
    batch = con.execute("SELECT status, rows_in, rows_stored, rows_quarantined, file FROM training_batches WHERE batch_id = ?",
                        [result["batch_id"]]).fetchall()
    assert batch == [("stored", N_ROWS, N_ROWS, 0, str(tmp_path / "yahoo.csv"))]


def _variants(tmp_path, frame):
    "The same rows as lower-case CSV, Parquet (typed columns), zipped CSV and 'Datetime'/'Stock Splits' Yahoo CSV."
    lower = frame.drop(columns="Adj Close").rename(columns=str.lower)
    write(lower, tmp_path / "lower.csv")
    typed = frame.drop(columns="Adj Close").assign(Date=pd.to_datetime(frame.Date), **{c: frame[c].astype(float) for c in ("Open", "High", "Low", "Close", "Volume")})
    typed.to_parquet(tmp_path / "typed.parquet")
    with zipfile.ZipFile(tmp_path / "zipped.zip", "w") as zf:
        zf.writestr("inner.csv", frame.to_csv(index=False))
    write(frame.assign(**{"Stock Splits": "0", "Dividends": "0"}), tmp_path / "splits.csv")
    return [tmp_path / n for n in ("lower.csv", "typed.parquet", "zipped.zip", "splits.csv")]


def test_file_variants_store_identical_rows(con, cfg, tmp_path):
    frame = yahoo_frame()
    import_ohlcv(con, write(frame, tmp_path / "yahoo.csv"), "REF", run_cfg=cfg)
    ref = stored_bars(con, "REF")[["timestamp", "open", "high", "low", "close", "volume"]]
    for i, path in enumerate(_variants(tmp_path, frame)):
        assert import_ohlcv(con, path, f"V{i}", run_cfg=cfg)["rows_added"] == {"underlying_bars": N_ROWS}, path
        pd.testing.assert_frame_equal(stored_bars(con, f"V{i}")[ref.columns], ref, obj=str(path))
        # the same rows under the reference symbol are already stored: nothing added, whatever the file format
        assert import_ohlcv(con, path, "REF", run_cfg=cfg)["rows_added"] == {"underlying_bars": 0}, path


def test_intraday_naive_and_offset_timestamps_are_the_same_instants(con, minute_cfg, tmp_path):
    frame = intraday_frame(n=10)
    import_ohlcv(con, write(frame, tmp_path / "naive.csv"), "INTRA", run_cfg=minute_cfg)
    got = stored_bars(con, "INTRA").timestamp
    assert got.iloc[0] == pd.Timestamp("2025-01-02 03:45", tz="UTC") and (got.diff().dropna() == pd.Timedelta(minutes=1)).all()
    offset = frame.assign(Datetime=frame.Datetime + "+05:30")
    assert import_ohlcv(con, write(offset, tmp_path / "offset.csv"), "INTRA", run_cfg=minute_cfg)["rows_added"] == {"underlying_bars": 0}
    utc = frame.assign(Datetime=(pd.to_datetime(frame.Datetime) - pd.Timedelta(hours=5, minutes=30)).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert import_ohlcv(con, write(utc, tmp_path / "utc.csv"), "INTRA", run_cfg=minute_cfg)["rows_added"] == {"underlying_bars": 0}


def test_reingesting_the_same_file_adds_nothing(seeded, cfg, tmp_path, fingerprint):
    before = fingerprint(seeded)
    result = import_ohlcv(seeded, tmp_path / "good.csv", "GOOD", run_cfg=cfg)
    assert result["rows_added"] == {"underlying_bars": 0} and fingerprint(seeded) == before
    assert seeded.execute("SELECT count(*) FROM training_batches WHERE batch_id = ?", [result["batch_id"]]).fetchall()[0][0] == 1


def test_importing_another_symbol_leaves_simulated_features_alone(sim_con, cfg, tmp_path):
    query = "SELECT * EXCLUDE (gex) FROM ml_features WHERE symbol = 'NIFTY' ORDER BY timestamp"
    before = sim_con.execute(query).df()
    frame = yahoo_frame(n=3, start="2025-08-01")
    import_ohlcv(sim_con, write(frame, tmp_path / "reliance.csv"), "RELIANCE", run_cfg=cfg)
    pd.testing.assert_frame_equal(sim_con.execute(query).df(), before)
    assert len(stored_bars(sim_con, "RELIANCE")) == 3


def test_importing_a_symbol_under_another_config_leaves_other_symbols_features_alone(sim_con, minute_cfg, tmp_path):
    "Review 16 (8a): 20 bars of OTHER imported with risk_free_rate 0.12 used to rewrite the gex of the stored NIFTY rows."
    import dataclasses
    query = "SELECT * FROM ml_features WHERE symbol = 'NIFTY' ORDER BY timestamp"
    before = sim_con.execute(query).df()
    bars = intraday_frame(n=20).assign(Datetime=lambda f: f.Datetime.str.replace("2025-01-02 09", "2025-08-01 10"))   # 10:15 IST on
    other_cfg = dataclasses.replace(minute_cfg, risk_free_rate=0.12)
    assert import_ohlcv(sim_con, write(bars, tmp_path / "other.csv"), "OTHER", run_cfg=other_cfg)["rows_added"] == {"underlying_bars": 20}
    pd.testing.assert_frame_equal(sim_con.execute(query).df(), before)
    assert sim_con.execute("SELECT count(*) FROM ml_features WHERE symbol = 'OTHER'").fetchall()[0][0] == 20


def test_bars_that_change_an_unlisted_years_calendar_rebuild_every_symbol(con, cfg, tmp_path):
    """2023's holidays are not listed, so the stored days of any symbol are the calendar: a bar of OTHER on Thu 26 Jan
    makes it a session, which ages Wednesday's NIFTY chain past its limit at Friday's bar. The import must rebuild NIFTY
    too (its rows then equal a full rebuild's), though it wrote only OTHER."""
    from oi_ml.store import build_ml_features
    nifty = pd.DataFrame({"Date": ["2023-01-24", "2023-01-27"], "Open": ["18100", "18000"], "High": ["18200", "18100"],
                          "Low": ["18000", "17900"], "Close": ["18150", "18050"], "Volume": ["1", "1"]})
    import_ohlcv(con, write(nifty, tmp_path / "n.csv"), "NIFTY", run_cfg=cfg)
    import_bhavcopy(con, write_example_bhavcopy(tmp_path / "b.csv", trade_date="2023-01-25", spot=18100.0, lot=50), run_cfg=cfg)
    other = nifty.iloc[:1].assign(Date="2023-01-26")
    with pytest.warns(Warning):   # Friday's chain is now stale
        import_ohlcv(con, write(other, tmp_path / "o.csv"), "OTHER", run_cfg=cfg)
    query = "SELECT * FROM ml_features ORDER BY symbol, timestamp"
    after_import = con.execute(query).df()
    assert np.isnan(after_import[after_import.symbol == "NIFTY"].pcr_oi.iloc[-1])
    with pytest.warns(Warning):
        build_ml_features(con, "NSE", run_cfg=cfg)
    pd.testing.assert_frame_equal(after_import, con.execute(query).df())


@pytest.mark.parametrize("given, stored", [("nifty", "NIFTY"), (" NIFTY ", "NIFTY"), ("m&m", "M&M"), ("bajaj-auto", "BAJAJ-AUTO")])
def test_ohlcv_symbols_are_stripped_and_upper_cased(con, cfg, tmp_path, given, stored):
    "Review 16 (6): 'nifty', ' NIFTY ' and 'NIFTY' were stored as three symbols."
    result = import_ohlcv(con, write(yahoo_frame(), tmp_path / "y.csv"), given, run_cfg=cfg)
    assert result["batch_id"].startswith(f"ohlcv-NSE-{stored}-")
    assert con.execute("SELECT DISTINCT symbol FROM underlying_bars").fetchall() == [(stored,)]


@pytest.mark.parametrize("symbol", ["A/B", "../../escaped", "", "  ", "NIFTY 50", "-X"])
@pytest.mark.parametrize("bad_file", [False, True])
def test_a_symbol_that_cannot_name_a_file_is_refused_before_anything_is_written(seeded, cfg, tmp_path, fingerprint, symbol, bad_file):
    "Review 16 (6): 'A/B' raised an OSError about a missing quarantine directory (hiding the file's real errors)."
    frame = yahoo_frame()
    if bad_file: frame.loc[4, "Close"] = "-1"
    path = write(frame, tmp_path / "f.csv")
    before = fingerprint(seeded)
    batches = seeded.execute("SELECT count(*) FROM training_batches").fetchall()
    with pytest.raises(ValueError, match=rf"symbol {re.escape(repr(symbol))}: expected letters, digits"):
        import_ohlcv(seeded, path, symbol, run_cfg=cfg)
    assert fingerprint(seeded) == before and seeded.execute("SELECT count(*) FROM training_batches").fetchall() == batches
    assert sorted(p.name for p in tmp_path.rglob("*.csv")) == ["f.csv", "good.csv"]   # no quarantine file anywhere


@pytest.mark.parametrize("kind", ["bool", "datetime"])
def test_parquet_price_or_volume_columns_that_are_not_numbers_are_rejected_naming_them(seeded, cfg, tmp_path, fingerprint, kind):
    "Review 16 (7): a Parquet bool price column was stored as 1.0, a datetime volume as nanoseconds."
    frame = yahoo_frame().drop(columns="Adj Close")
    typed = frame.assign(Date=pd.to_datetime(frame.Date), **{c: frame[c].astype(float) for c in ("Open", "High", "Low", "Close", "Volume")})
    column = "close" if kind == "bool" else "volume"
    typed = typed.assign(Close=True) if kind == "bool" else typed.assign(Volume=pd.to_datetime(typed.Volume, unit="s"))
    typed.to_parquet(path := tmp_path / "typed.parquet")
    before = fingerprint(seeded)
    with pytest.raises(IngestError, match=rf"schema: 1 row\(s\); first at row 0, column '{column}': the column holds {kind}"):
        import_ohlcv(seeded, path, "TYPED", run_cfg=cfg)
    assert fingerprint(seeded) == before


def test_a_huge_one_bar_move_is_reported_as_a_factor_not_300_digits(seeded, cfg, tmp_path):
    "Review 16 (7): a single 1e300 spike printed 'close moved 99367920656702730157...%' (300 digits)."
    frame = yahoo_frame(); frame.loc[3, ["High", "Close"]] = "1e300"
    with pytest.raises(IngestError) as err:
        import_ohlcv(seeded, write(frame, tmp_path / "spike.csv"), "SPIKE", run_cfg=cfg)
    moved = [l for l in str(err.value).splitlines() if "close moved" in l]
    assert moved and "over 1000% (close × " in moved[0] and max(map(len, str(err.value).splitlines())) < 300, str(err.value)


def _quarantine_files(cfg) -> list:
    "Every file (temporary ones included) under the quarantine directory."
    return sorted(p.name for p in cfg.quarantine_dir.glob("*")) if cfg.quarantine_dir.exists() else []


@pytest.mark.parametrize("outcome", ["stored", "rejected"])
def test_a_failure_recording_the_batch_leaves_no_quarantine_file_or_rows(seeded, cfg, tmp_path, monkeypatch, outcome):
    """Review 16 (12): the quarantine CSV was written inside the import's transaction and stayed when the transaction
    failed after it (here: recording the batch), beside no recorded batch; a rejection also committed its quarantine
    rows in a transaction of their own before the batch record failed."""
    frame = yahoo_frame(start="2025-03-03")
    if outcome == "stored": frame.loc[3, "Volume"] = ""      # a warning: the row is quarantined, the rest stored
    else: frame.loc[3, "Close"] = "-1"                       # an error: rejected
    path = write(frame, tmp_path / "f.csv")
    files = _quarantine_files(cfg)
    before = {t: seeded.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("underlying_bars", "ml_features", "quarantine", "training_batches")}
    def disk_full(*args, **kwargs): raise OSError("injected: disk full while recording the batch")
    monkeypatch.setattr(ingest, "record_training_batch", disk_full)
    with pytest.raises(OSError, match="injected"):
        import_ohlcv(seeded, path, "FAIL", run_cfg=cfg)
    assert {t: seeded.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in before} == before
    assert _quarantine_files(cfg) == files


def test_a_quarantine_file_is_written_when_the_import_commits(con, cfg, tmp_path):
    frame = yahoo_frame(); frame.loc[3, "Volume"] = ""
    result = import_ohlcv(con, write(frame, tmp_path / "f.csv"), "OK", run_cfg=cfg)
    assert _quarantine_files(cfg) == [f"{result['batch_id']}.csv"]


# ---------------------------------------------------------------- one bad file per check
def _set(row, column, value):
    "Mutation: data row `row` (1-based) of `column` becomes `value`."
    def mutate(frame):
        frame = frame.copy(); frame.loc[row - 1, column] = value; return frame
    return mutate


def _high_below_close(frame):
    frame = frame.copy(); frame.loc[4, "High"] = str(float(frame.loc[4, "Close"]) - 1); return frame


def _low_above_open(frame):
    frame = frame.copy(); frame.loc[6, "Low"] = str(max(float(frame.loc[6, "Open"]), float(frame.loc[6, "Close"])) + 0.5)
    frame.loc[6, "High"] = str(float(frame.loc[6, "Low"]) + 1); return frame


def _jump(frame):
    "Row 10 onwards at 1/3 of the price: a 67 % one-bar move."
    frame = frame.copy()
    for c in ("Open", "High", "Low", "Close"):
        frame.loc[9:, c] = (frame.loc[9:, c].astype(float) / 3).round(4).astype(str)
    frame.loc[9, "Open"] = frame.loc[9, "Close"]; frame.loc[9, "High"] = str(float(frame.loc[9, "Close"]) * 1.001)
    frame.loc[9, "Low"] = str(float(frame.loc[9, "Close"]) * 0.999)
    return frame


def _duplicate(frame):
    frame = frame.copy(); frame.loc[11, "Date"] = frame.loc[10, "Date"]; return frame


def _out_of_order(frame):
    frame = frame.copy(); frame.loc[[13, 14], "Date"] = frame.loc[[14, 13], "Date"].to_numpy(); return frame


def _too_many_missing(frame):
    frame = frame.copy(); frame.loc[[2, 3], "Volume"] = np.nan; return frame     # 2/30 = 6.7 % > 5 %


BAD_OHLCV = [  # (case, mutation, row, column, check) with row the 1-based data row named in the error
    ("missing_column", lambda f: f.drop(columns="Volume"), 0, "volume", "schema"),
    ("unparseable_number", _set(5, "Close", "12,5x"), 5, "close", "schema"),
    ("unparseable_date", _set(7, "Date", "2025-13-45"), 7, "timestamp", "schema"),
    ("ambiguous_dd_mm_yyyy_date", _set(7, "Date", "10/01/2025"), 7, "timestamp", "schema"),   # 10 Jan or 1 Oct?
    ("dashed_dd_mm_yyyy_date", _set(7, "Date", "10-01-2025"), 7, "timestamp", "schema"),
    ("infinite_high", _set(4, "High", "inf"), 4, "high", "schema"),
    ("infinite_volume", _set(4, "Volume", "Infinity"), 4, "volume", "schema"),
    ("too_many_missing", _too_many_missing, 3, "volume", "completeness"),
    ("too_many_missing_markers", lambda f: _set(4, "Volume", "N/A")(_set(3, "Volume", "NaN")(f)), 3, "volume", "completeness"),
    ("high_below_close", _high_below_close, 5, "high", "ohlc_logic"),
    ("low_above_open_close", _low_above_open, 7, "low", "ohlc_logic"),
    ("non_positive_price", _set(6, "Low", "0"), 6, "low", "price_sanity"),
    ("one_bar_jump", _jump, 10, "close", "price_sanity"),
    ("spike_high", _set(4, "High", "1e6"), 4, "high", "price_sanity"),      # inside OHLC logic, impossible for the bar
    ("spike_low", _set(6, "Low", "1"), 6, "low", "price_sanity"),
    ("negative_volume", _set(8, "Volume", "-5"), 8, "volume", "volume_sanity"),
    ("duplicate_timestamp", _duplicate, 12, "timestamp", "temporal"),
    ("out_of_order", _out_of_order, 15, "timestamp", "temporal"),
    ("date_past_2262", _set(7, "Date", "2300-01-01"), 7, "timestamp", "schema"),     # beyond pandas' nanosecond range
    ("date_in_year_one", _set(7, "Date", "0001-01-01"), 7, "timestamp", "schema"),
    ("header_names_a_column_twice", lambda f: f.assign(volume=f["Volume"]), 0, "Volume", "schema"),  # Volume and volume
    ("header_lower_case_first", lambda f: f.rename(columns={"Volume": "volume"}).assign(Volume=f["Volume"]), 0, "volume", "schema"),
    ("header_repeats_a_name_exactly", lambda f: f.assign(**{"Close.1": "999999"}), 0, "Close", "schema"),  # what read_csv makes of it
    # review 16: magnitudes no NSE/BSE row can have; two aliases of one column and not the column itself
    ("all_prices_1e300", lambda f: f.assign(**{c: (f[c].astype(float) * 1e300).astype(str) for c in ("Open", "High", "Low", "Close")}),
     1, "open", "price_sanity"),
    ("all_prices_1e-298", lambda f: f.assign(**{c: (f[c].astype(float) * 1e-300).astype(str) for c in ("Open", "High", "Low", "Close")}),
     1, "open", "price_sanity"),
    ("volume_1e300", lambda f: f.assign(Volume="1e300"), 1, "volume", "volume_sanity"),
    ("two_volume_aliases", lambda f: f.rename(columns={"Volume": "qty"}).assign(vol="999"), 0, "qty,vol", "schema"),
    ("two_close_aliases", lambda f: f.rename(columns={"Close": "Last"}).drop(columns="Adj Close").assign(Price="999999"), 0, "Last,Price", "schema"),
    ("separate_date_and_time", lambda f: f.assign(Time="09:15"), 0, "Date,Time", "schema"),
]


@pytest.mark.parametrize("case, mutate, row, column, check", BAD_OHLCV, ids=[c[0] for c in BAD_OHLCV])
def test_bad_ohlcv_file_is_rejected_naming_file_row_column(seeded, cfg, tmp_path, fingerprint, case, mutate, row, column, check):
    path = write(mutate(yahoo_frame()), tmp_path / f"{case}.csv")
    before = fingerprint(seeded)
    with pytest.raises(IngestError) as err:
        import_ohlcv(seeded, path, "BAD", run_cfg=cfg)
    line = next((l for l in str(err.value).splitlines() if f": {check}:" in l), None)
    assert line is not None, str(err.value)
    assert str(path) in line and f"first at row {row}," in line and f"column '{column}'" in line, line
    assert not err.value.report.ok
    # nothing stored, nothing lost
    assert fingerprint(seeded) == before and stored_bars(seeded, "BAD").empty
    # the rejection is recorded: quarantine table, quarantine CSV, training_batches
    batch_id = ohlcv_batch_id(path, "BAD")
    q = seeded.execute("SELECT * FROM quarantine WHERE batch_id = ?", [batch_id]).df()
    hit = q[(q.row_number == row) & (q.column_name == column) & (q.check_name == check)]
    assert len(hit) == 1 and set(q.file) == {str(path)}, q
    on_disk = pd.read_csv(cfg.quarantine_dir / f"{batch_id}.csv")
    assert {"file", "row_number", "column_name", "check_name"} <= set(on_disk.columns)
    assert ((on_disk.row_number == row) & (on_disk.column_name == column) & (on_disk.check_name == check)).sum() == 1
    status, report = seeded.execute("SELECT status, validation_report FROM training_batches WHERE batch_id = ?", [batch_id]).fetchall()[0]
    assert status == "rejected" and json.loads(report)["ok"] is False and json.loads(report)["counts"][check] >= 1
    if row > 0:                                                   # the raw text of the offending row is kept
        text = lambda d: {k: None if pd.isna(v) else str(v) for k, v in d.items()}
        assert text(json.loads(hit.raw.iloc[0])) == text(mutate(yahoo_frame()).iloc[row - 1].to_dict())


def test_a_flagged_split_is_not_a_price_error(con, cfg, tmp_path):
    frame = _jump(yahoo_frame()).assign(**{"Stock Splits": "0"})
    frame.loc[9, "Stock Splits"] = "3"
    result = import_ohlcv(con, write(frame, tmp_path / "split.csv"), "SPLIT", run_cfg=cfg)
    assert result["rows_added"] == {"underlying_bars": N_ROWS} and result["warnings"] == []
    frame.loc[9, "Stock Splits"] = "0"                            # the same file unflagged is rejected
    with pytest.raises(IngestError, match="row 10, column 'close'"):
        import_ohlcv(con, write(frame, tmp_path / "unflagged.csv"), "SPLIT2", run_cfg=cfg)


def test_every_problem_row_is_reported_not_only_the_first(con, cfg, tmp_path):
    frame = yahoo_frame()
    for r in (3, 9, 21):
        frame.loc[r - 1, "Volume"] = "-1"
    with pytest.raises(IngestError) as err:
        import_ohlcv(con, write(frame, tmp_path / "many.csv"), "MANY", run_cfg=cfg)
    problems = err.value.report.problems
    assert sorted(problems[problems.check_name == "volume_sanity"].row_number) == [3, 9, 21]
    assert "3 row(s)" in str(err.value)


# ---------------------------------------------------------------- bars of another length than bar_minutes
def nifty_minutes(stamps) -> pd.DataFrame:
    "NIFTY-like bars at the given IST wall-clock `stamps` (text cells, as on disk)."
    n = len(stamps)
    close = 24000 + np.arange(n) * 0.5
    return pd.DataFrame({"Date": list(stamps), "Open": close - 0.5, "High": close + 2, "Low": close - 2, "Close": close,
                         "Volume": 1000}).astype(str)


FIVE_MINUTE = pd.date_range("2025-09-01 09:15", periods=75, freq="5min").strftime("%Y-%m-%d %H:%M")
OFF_GRID = pd.date_range("2025-09-01 09:15:30", periods=30, freq="1min").strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize("case, stamps, n_rows, first_row, reason", [
    ("five_minute", FIVE_MINUTE, 74, 2, "bar 5 minute(s) after the previous one; the file's bars are 5 minute(s) apart (its most "
                                        "common step within a session) but the config's bar_minutes is 1: import the file under a "
                                        "--config with bar_minutes = 5"),
    ("daily", pd.bdate_range("2025-09-01", periods=20).strftime("%Y-%m-%d"), 20, 1,
     "a date without a time is a daily bar, but the config's bar_minutes is 1: it would join a 1-minute series; import daily "
     "bars under a --config with bar_minutes = 375"),
    ("off_grid", OFF_GRID, 30, 1, "bar starts at 09:15:30 IST, off the 1-minute grid of the session"),
    ("five_minute_stray", FIVE_MINUTE.insert(1, "2025-09-01 09:16"), 74, 3, "bar 4 minute(s) after the previous one; the file's "
                                                                            "bars are 5 minute(s) apart")])
def test_bars_of_another_length_than_bar_minutes_are_refused(sim_con, minute_cfg, tmp_path, fingerprint, case, stamps, n_rows,
                                                             first_row, reason):
    """Reviewer: with 1-minute NIFTY bars stored and bar_minutes = 1, a 5-minute file, a daily file (date-only rows, stamped
    09:15) and a file of bars at hh:mm:30 were all stored (rc 0, no warning), mixing bar lengths in one series."""
    path = write(nifty_minutes(stamps), tmp_path / f"{case}.csv")
    before = fingerprint(sim_con)
    with pytest.raises(IngestError) as err:
        import_ohlcv(sim_con, path, "NIFTY", run_cfg=minute_cfg)
    assert str(err.value).startswith(f"{path}: error: temporal: {n_rows} row(s); first at row {first_row}, column 'timestamp': {reason}"), str(err.value)
    assert fingerprint(sim_con) == before                                          # nothing stored
    batch_id = ohlcv_batch_id(path, "NIFTY")
    assert sim_con.execute("SELECT status, rows_stored FROM training_batches WHERE batch_id = ?", [batch_id]).fetchall() == [("rejected", 0)]
    quarantined = sim_con.execute("SELECT count(DISTINCT row_number), min(row_number) FROM quarantine WHERE batch_id = ? AND "
                                  "column_name = 'timestamp' AND check_name = 'temporal'", [batch_id]).fetchall()
    assert quarantined == [(n_rows, first_row)]
    assert (minute_cfg.quarantine_dir / f"{batch_id}.csv").exists()


def test_each_file_is_stored_under_a_config_of_its_own_bar_length(tmp_path):
    "The same files import under a config whose bar_minutes is their bar length (5 minutes; daily = one bar a session)."
    for minutes, stamps in ((5, FIVE_MINUTE), (DAILY_MINUTES, pd.bdate_range("2025-09-01", periods=20).strftime("%Y-%m-%d"))):
        run_cfg = RunConfig(data_dir=str(tmp_path / f"m{minutes}"), bar_minutes=minutes)
        with connect(run_cfg) as con:
            result = import_ohlcv(con, write(nifty_minutes(stamps), tmp_path / f"m{minutes}.csv"), "NIFTY", run_cfg=run_cfg)
        assert result["rows_added"] == {"underlying_bars": len(stamps)} and result["warnings"] == [], result["warnings"]


def test_missing_minutes_are_gaps_not_another_bar_length(con, minute_cfg, tmp_path):
    """An illiquid 1-minute file missing most minutes (steps of 1, 2, 3 and 4 minutes, median 2) is stored: its most common
    step is still 1 minute. Its longer holes are gap warnings, as before."""
    minutes = np.cumsum([0, 1, 1, 2, 1, 3, 1, 2, 4, 1, 2, 3, 1, 2, 1, 6])
    stamps = (pd.Timestamp("2025-09-01 09:15") + pd.to_timedelta(minutes, unit="min")).strftime("%Y-%m-%d %H:%M")
    assert np.median(np.diff(minutes)) == 2
    result = import_ohlcv(con, write(nifty_minutes(stamps), tmp_path / "gappy.csv"), "ILLIQ", run_cfg=minute_cfg)
    assert result["rows_added"] == {"underlying_bars": len(stamps)}
    assert [w.split(": ")[2] for w in result["warnings"]] == ["gaps"]              # the 6-minute hole only


# ---------------------------------------------------------------- warnings: drop and quarantine, store the rest
def test_few_missing_values_drop_and_quarantine_the_rows_and_store_the_rest(seeded, cfg, tmp_path):
    frame = yahoo_frame(); frame.loc[4, "Volume"] = np.nan                      # 1/30 = 3.3 % < 5 %
    path = write(frame, tmp_path / "gappy.csv")
    result = import_ohlcv(seeded, path, "PART", run_cfg=cfg)
    assert result["rows_added"] == {"underlying_bars": N_ROWS - 1}
    assert len(result["warnings"]) == 1 and str(path) in result["warnings"][0] and "row 5, column 'volume'" in result["warnings"][0]
    stored_days = set(stored_bars(seeded, "PART").timestamp.dt.tz_convert(IST).dt.strftime("%Y-%m-%d"))
    assert stored_days == set(frame.Date) - {frame.Date[4]}
    q = seeded.execute("SELECT row_number, column_name, check_name FROM quarantine WHERE batch_id = ?", [result["batch_id"]]).fetchall()
    assert q == [(5, "volume", "completeness")]
    assert (cfg.quarantine_dir / f"{result['batch_id']}.csv").exists()
    assert seeded.execute("SELECT status, rows_stored, rows_quarantined FROM training_batches WHERE batch_id = ?",
                          [result["batch_id"]]).fetchall() == [("stored", N_ROWS - 1, 1)]


@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "N/A", "null", "None", "-", " NaN "])
def test_a_missing_value_marker_is_a_missing_cell_like_an_empty_one(con, cfg, tmp_path, marker):
    "Exporters write gaps as NaN, NA, null, '-'...: each is dropped and quarantined like an empty cell, not a schema error."
    empty, marked = yahoo_frame(), yahoo_frame()
    empty.loc[4, "Volume"] = np.nan; empty.loc[9, "Date"] = np.nan          # 1/30 each: under the 5 % rule
    marked.loc[4, "Volume"] = marker; marked.loc[9, "Date"] = marker
    results = [import_ohlcv(con, write(frame, tmp_path / f"{name}.csv"), name.upper(), run_cfg=cfg)
               for name, frame in (("empty", empty), ("marked", marked))]
    for result in results:
        assert result["rows_added"] == {"underlying_bars": N_ROWS - 2}
        assert [w.split(": ", 1)[1] for w in result["warnings"]] == [
            "warning: completeness: 2 row(s); first at row 5, column 'volume': missing value (3.3% of 'volume' missing)"]
        q = con.execute("SELECT row_number, column_name, check_name FROM quarantine WHERE batch_id = ? ORDER BY 1",
                        [result["batch_id"]]).fetchall()
        assert q == [(5, "volume", "completeness"), (10, "timestamp", "completeness")]
    bars = [stored_bars(con, s).drop(columns=["symbol", "batch_id"]) for s in ("EMPTY", "MARKED")]
    pd.testing.assert_frame_equal(bars[0], bars[1])


def test_rows_are_numbered_in_the_file_even_after_dropped_rows(con, cfg, tmp_path):
    frame = _high_below_close(yahoo_frame())                 # data row 5 is bad ...
    frame.loc[2, "Volume"] = np.nan                           # ... after row 3 was dropped as incomplete (a warning)
    with pytest.raises(IngestError, match=r"ohlc_logic: 1 row\(s\); first at row 5, column 'high'"):
        import_ohlcv(con, write(frame, tmp_path / "numbering.csv"), "NUM", run_cfg=cfg)


def test_intraday_gap_is_a_warning_and_the_bars_are_stored(con, minute_cfg, tmp_path):
    path = write(intraday_frame(n=30, gap_after=9), tmp_path / "gap.csv")
    result = import_ohlcv(con, path, "GAP", run_cfg=minute_cfg)
    assert result["rows_added"] == {"underlying_bars": 30}
    assert len(result["warnings"]) == 1 and "gaps" in result["warnings"][0] and "row 11, column 'timestamp'" in result["warnings"][0]
    assert con.execute("SELECT row_number, check_name FROM quarantine WHERE batch_id = ?", [result["batch_id"]]).fetchall() == [(11, "gaps")]
    # a gap between sessions (overnight) is not a gap
    two_days = pd.concat([intraday_frame(n=5), intraday_frame(n=5).assign(Datetime=lambda f: f.Datetime.str.replace("2025-01-02", "2025-01-03"))])
    assert import_ohlcv(con, write(two_days, tmp_path / "two.csv"), "TWO", run_cfg=minute_cfg)["warnings"] == []


def test_bars_on_a_weekend_or_holiday_are_kept_with_a_calendar_warning_naming_the_day(con, minute_cfg, tmp_path):
    days = ["2025-03-13", "2025-03-14", "2025-03-15", "2025-03-17"]          # Thu, Holi (NSE holiday), Sat, Mon
    frame = pd.concat([intraday_frame(n=3).assign(Datetime=lambda f, d=d: f.Datetime.str.replace("2025-01-02", d)) for d in days])
    result = import_ohlcv(con, write(frame, tmp_path / "calendar.csv"), "CAL", run_cfg=minute_cfg)
    assert result["rows_added"] == {"underlying_bars": 12}                   # kept: special sessions exist
    assert len(result["warnings"]) == 1 and "warning: calendar: 6 row(s); first at row 4, column 'timestamp'" in result["warnings"][0]
    assert "bar on 2025-03-14 IST, an exchange holiday in the config" in result["warnings"][0]
    assert result["report"]["counts"]["calendar"] == 6
    stored = con.execute("SELECT row_number, reason FROM quarantine WHERE batch_id = ? AND check_name = 'calendar' ORDER BY row_number",
                         [result["batch_id"]]).fetchall()
    assert [r for r, _ in stored] == [4, 5, 6, 7, 8, 9] and "2025-03-15 IST, a Saturday" in stored[3][1]


def test_complete_15_minute_bars_have_no_gap_warnings(con, cfg, tmp_path):
    ts = pd.date_range("2025-01-02 09:15", periods=25, freq="15min")
    frame = pd.DataFrame({"Datetime": ts.strftime("%Y-%m-%d %H:%M"), "Open": 100, "High": 101, "Low": 99, "Close": 100.5, "Volume": 10})
    result = import_ohlcv(con, write(frame, tmp_path / "m15.csv"), "M15", run_cfg=dataclasses.replace(cfg, bar_minutes=15))
    assert result["rows_added"] == {"underlying_bars": 25}
    assert result["warnings"] == []


def test_intraday_duplicates_are_errors(con, minute_cfg, tmp_path, fingerprint):
    frame = intraday_frame(n=10); frame.loc[6, "Datetime"] = frame.loc[5, "Datetime"]
    before = fingerprint(con)
    with pytest.raises(IngestError, match=r"temporal: 1 row\(s\); first at row 7, column 'timestamp'"):
        import_ohlcv(con, write(frame, tmp_path / "dup.csv"), "DUP", run_cfg=minute_cfg)
    assert fingerprint(con) == before


# ---------------------------------------------------------------- corrupt and missing files
def _corrupt_zip(p): p.write_bytes(b"PK\x03\x04 this is not really a zip archive"); return p
def _empty(p): p.write_bytes(b""); return p
def _ragged(p): p.write_text("Date,Open,High,Low,Close,Volume\n2025-01-02,1,2,0.5,1.5,10\n2025-01-03,1,2,0.5,1.5,10,7,8\n"); return p
def _corrupt_parquet(p): p.write_bytes(b"PAR1 truncated parquet"); return p
def _truncated_parquet(p):
    yahoo_frame().to_parquet(p.with_suffix(".full")); p.write_bytes(p.with_suffix(".full").read_bytes()[:1500]); return p
def _empty_parquet(p): p.write_bytes(b""); return p
def _bad_pandas_metadata(p):   # a readable Parquet file whose pandas metadata lacks a column's name (pandas: KeyError)
    import pyarrow as pa, pyarrow.parquet as pq
    table = pa.Table.from_pandas(yahoo_frame())
    meta = json.loads(table.schema.metadata[b"pandas"]); del meta["columns"][0]["name"]
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta)}), p); return p
def _two_csvs(p):
    with zipfile.ZipFile(p, "w") as zf: zf.writestr("a.csv", "x\n1\n"); zf.writestr("b.csv", "x\n2\n")
    return p


CORRUPT = [
    pytest.param("corrupt.zip", _corrupt_zip, id="corrupt_zip"),
    pytest.param("empty.csv", _empty, id="empty_csv"),
    pytest.param("ragged.csv", _ragged, id="ragged_csv"),
    pytest.param("corrupt.parquet", _corrupt_parquet, id="corrupt_parquet"),
    pytest.param("two.zip", _two_csvs, id="zip_with_two_csvs"),
    pytest.param("truncated.parquet", _truncated_parquet, id="truncated_parquet"),
    pytest.param("empty.parquet", _empty_parquet, id="empty_parquet"),
    pytest.param("metadata.parquet", _bad_pandas_metadata, id="parquet_with_broken_pandas_metadata"),
]


@pytest.mark.parametrize("name, make", CORRUPT)
@pytest.mark.parametrize("importer", ["ohlcv", "bhavcopy"])
def test_corrupt_file_fails_naming_the_file_and_changes_nothing(seeded, cfg, tmp_path, fingerprint, name, make, importer):
    path = make(tmp_path / name)
    before = fingerprint(seeded)
    call = (lambda: import_ohlcv(seeded, path, "BAD", run_cfg=cfg)) if importer == "ohlcv" else (lambda: import_bhavcopy(seeded, path, run_cfg=cfg))
    with pytest.raises(ValueError) as err:        # IngestError or read_table's ValueError, never a reader's own type
        call()
    assert name in str(err.value), f"{type(err.value).__name__}: {err.value}"
    if importer == "ohlcv" and name.endswith(".parquet"):   # the reader's own error (pyarrow's ArrowInvalid) is wrapped too
        assert "cannot read the file" in str(err.value), str(err.value)
    assert fingerprint(seeded) == before


@pytest.mark.parametrize("importer", [import_ohlcv, import_bhavcopy])
def test_missing_file_names_it(con, cfg, tmp_path, importer):
    args = (con, tmp_path / "nowhere.csv") + (("X",) if importer is import_ohlcv else ())
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        importer(*args, run_cfg=cfg)


def test_mixed_timezone_column_is_a_schema_error_naming_the_row(con, cfg, tmp_path):
    frame = intraday_frame(n=5); frame.loc[2, "Datetime"] = "2025-01-02T03:47:00Z"
    with pytest.raises(IngestError, match=r"row 3, column 'timestamp'"):
        import_ohlcv(con, write(frame, tmp_path / "mixed.csv"), "MIX", run_cfg=cfg)


@pytest.mark.filterwarnings("error::RuntimeWarning")                      # no numpy warning on an empty column either
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_header_only_file_is_rejected_and_changes_nothing(sim_con, cfg, tmp_path, fingerprint, suffix):
    query = "SELECT * EXCLUDE (gex) FROM ml_features ORDER BY timestamp"
    before, raw_before = sim_con.execute(query).df(), fingerprint(sim_con, ("underlying_bars", "option_chain_snapshots"))
    path = tmp_path / f"header{suffix}"
    if suffix == ".csv": path.write_text("Date,Open,High,Low,Close,Volume\n")
    else: yahoo_frame().iloc[:0].to_parquet(path)
    with pytest.raises(IngestError, match=r"header.* first at row 0.*no data rows"):
        import_ohlcv(sim_con, path, "EMPTY", run_cfg=cfg)
    assert sim_con.execute("SELECT status FROM training_batches WHERE file = ?", [str(path)]).fetchall() == [("rejected",)]
    assert fingerprint(sim_con, ("underlying_bars", "option_chain_snapshots")) == raw_before
    pd.testing.assert_frame_equal(sim_con.execute(query).df(), before)


# ---------------------------------------------------------------- all or nothing when the write itself fails
def test_a_failure_writing_the_second_table_of_a_bhavcopy_stores_nothing(seeded, cfg, tmp_path, fingerprint, monkeypatch,
                                                                           fail_second_insert):
    path = write_example_bhavcopy(tmp_path / "bhav.csv", "udiff")
    before, batches_before = fingerprint(seeded), fingerprint(seeded, ("training_batches",))
    calls = fail_second_insert(ingest)
    with pytest.raises(OSError, match="injected"):
        import_bhavcopy(seeded, path, run_cfg=cfg)
    assert calls == ["option_chain_snapshots", "underlying_bars"]
    assert fingerprint(seeded) == before and fingerprint(seeded, ("training_batches",)) == batches_before
    monkeypatch.undo()                                                   # the same file imports cleanly afterwards
    assert import_bhavcopy(seeded, path, run_cfg=cfg)["rows_added"]["option_chain_snapshots"] == 44


def test_a_failure_rebuilding_features_stores_no_bars(seeded, cfg, tmp_path, fingerprint, monkeypatch):
    before = fingerprint(seeded)
    def failing(c, params, *rate): raise OSError("injected rebuild failure")
    monkeypatch.setattr(ingest, "rebuild_ml_features_in_transaction", failing)
    with pytest.raises(OSError, match="injected"):
        import_ohlcv(seeded, write(yahoo_frame(seed=5), tmp_path / "new.csv"), "NEW", run_cfg=cfg)
    assert fingerprint(seeded) == before


# ---------------------------------------------------------------- NSE F&O bhavcopy, both layouts
def example_reference(trade_date="2025-01-02", spot=23700.0, lot=75):
    "What write_example_bhavcopy's NIFTY contracts are, recomputed independently."
    day = pd.Timestamp(trade_date)
    rows = []
    for expiry in (day + pd.Timedelta(days=7), day + pd.Timedelta(days=28)):
        tau = (expiry - day).days / 365
        fwd = round(spot * np.exp(0.065 * tau), 2)
        for k in np.arange(spot - 500, spot + 501, 100):
            for typ in ("CE", "PE"):
                rows.append({"expiry": expiry.date(), "strike": float(k), "option_type": typ, "forward": fwd,
                                 "ltp": round(float(black76(fwd, k, 0.14, tau, 0.065, typ == "CE")), 2)})
    return pd.DataFrame(rows).sort_values(["expiry", "strike", "option_type"]).reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["old", "udiff"])
@pytest.mark.parametrize("zipped", [False, True], ids=["csv", "zip"])
def test_bhavcopy_is_imported_in_both_layouts(con, cfg, tmp_path, fmt, zipped):
    path = write_example_bhavcopy(tmp_path / f"bhav.{'zip' if zipped else 'csv'}", fmt, zipped=zipped)
    result = import_bhavcopy(con, path, run_cfg=cfg)
    assert result["format"] == fmt and result["rows_skipped_other_symbols"] == 1 and result["warnings"] == []
    assert result["rows_added"] == {"option_chain_snapshots": 44, "underlying_bars": 1}
    chain = con.execute("SELECT * FROM option_chain_snapshots ORDER BY expiry, strike, option_type").df()
    ref = example_reference()
    assert set(chain.symbol) == {"NIFTY"} and set(chain.source) == {"imported"}
    assert (pd.to_datetime(chain.expiry).dt.date.to_numpy() == ref.expiry.to_numpy()).all()
    np.testing.assert_array_equal(chain.strike, ref.strike); assert list(chain.option_type) == list(ref.option_type)
    np.testing.assert_allclose(chain.ltp, ref.ltp)
    assert (chain.timestamp == pd.Timestamp("2025-01-02 10:00", tz="UTC")).all()       # 15:30 IST close of the trade date
    assert (chain.oi == 2000).all() and (chain.oi_change == 200).all() and (chain.volume == 300).all() and (chain.lot_size == 75).all()
    # IV recovered from 2-decimal prices: 0.14 wherever the price carries enough information
    liquid = chain.ltp > 5
    np.testing.assert_allclose(chain.iv[liquid], 0.14, atol=2e-3)
    near_fwd = ref.forward.iloc[0]
    spot = 23700.0 if fmt == "udiff" else near_fwd                                     # old layout: near future as proxy
    np.testing.assert_allclose(chain.underlying_price, spot)
    bar = con.execute("SELECT * FROM underlying_bars").df()
    assert len(bar) == 1 and bar.close[0] == spot and bar.futures_price[0] == near_fwd and bar.futures_oi[0] == 1000
    feats = con.execute("SELECT pcr_oi, atm_strike, lot_size, days_to_expiry FROM ml_features WHERE symbol = 'NIFTY'").df()
    assert len(feats) == 1 and feats.pcr_oi[0] == 1.0 and feats.lot_size[0] == 75 and np.isclose(feats.days_to_expiry[0], 7)
    assert feats.atm_strike[0] == 23700.0
    assert con.execute("SELECT count(*) FROM option_chain_snapshots WHERE symbol = 'BANKNIFTY'").fetchall()[0][0] == 0


def test_a_chain_imported_after_later_bars_reaches_them(con, cfg, tmp_path):
    """Out-of-order backfill: NIFTY daily bars of Fri 3 and Mon 6 Jan are stored first, then the bhavcopy of Thu 2 Jan.
    Friday's bar reads that chain as of (one session old); Monday's is past the one-session staleness limit. The
    import's rebuild must reach the bars stored before it, giving exactly what a full rebuild gives."""
    from oi_ml.store import StaleFeatureWarning, build_ml_features
    bars = pd.DataFrame({"Date": ["2025-01-03", "2025-01-06"], "Open": ["23700", "23750"], "High": ["23800", "23850"],
                         "Low": ["23600", "23650"], "Close": ["23750", "23800"], "Volume": ["1000", "1200"]})
    import_ohlcv(con, write(bars, tmp_path / "nifty.csv"), "NIFTY", run_cfg=cfg)
    with pytest.warns(StaleFeatureWarning, match="chain 1"):
        import_bhavcopy(con, write_example_bhavcopy(tmp_path / "bhav.csv"), run_cfg=cfg)
    query = "SELECT * FROM ml_features WHERE symbol = 'NIFTY' ORDER BY timestamp"
    after_import = con.execute(query).df()
    assert after_import.pcr_oi.tolist()[:2] == [1.0, 1.0] and np.isnan(after_import.pcr_oi[2])   # Thu, Fri: the chain; Mon: stale
    assert after_import.atm_strike[1] == 23700.0 and np.isclose(after_import.days_to_expiry[1], 6 + 375 / 1440)
    with pytest.warns(StaleFeatureWarning):
        build_ml_features(con, "NSE")
    pd.testing.assert_frame_equal(after_import, con.execute(query).df())


def test_a_two_index_chain_import_reaches_each_indexs_later_bars(con, cfg, tmp_path):
    """The rebuild ends at each imported symbol's next snapshot, not the exchange's: a NIFTY snapshot on Fri 3 Jan 10:00 IST
    must not stop the 2 Jan import from reaching BANKNIFTY bars stored for 11:15 and 12:15 that day (found by review)."""
    from oi_ml.store import build_ml_features, insert_rows
    scratch = connect(RunConfig(data_dir=str(tmp_path / "scratch")))
    import_bhavcopy(scratch, write_example_bhavcopy(tmp_path / "d2.csv", trade_date="2025-01-03"), run_cfg=cfg)
    snap = scratch.execute("SELECT * EXCLUDE (batch_id) FROM option_chain_snapshots").df()
    snap["timestamp"] = pd.Timestamp("2025-01-03 10:00", tz=IST).tz_convert("UTC")   # an intraday NIFTY snapshot
    insert_rows(con, "option_chain_snapshots", snap, "live-snap")
    bars = pd.DataFrame({"Date": ["2025-01-03 11:15", "2025-01-03 12:15"], "Open": ["51000"] * 2, "High": ["51100"] * 2,
                         "Low": ["50900"] * 2, "Close": ["51050"] * 2, "Volume": ["100"] * 2})   # hourly bars (09:15, 10:15, ...)
    import_ohlcv(con, write(bars, tmp_path / "bn.csv"), "BANKNIFTY", run_cfg=dataclasses.replace(cfg, bar_minutes=60))
    import_bhavcopy(con, write_example_bhavcopy(tmp_path / "d1.csv"), symbols=("NIFTY", "BANKNIFTY"), run_cfg=cfg)
    query = "SELECT * FROM ml_features ORDER BY symbol, timestamp"
    after_import = con.execute(query).df()
    assert after_import[after_import.symbol == "BANKNIFTY"].atm_strike.notna().all()   # both bars read the 2 Jan chain
    build_ml_features(con, "NSE", run_cfg=cfg)
    pd.testing.assert_frame_equal(after_import, con.execute(query).df())


def test_in_a_year_without_listed_holidays_a_holiday_does_not_age_the_chain(con, cfg, tmp_path):
    """2023's holidays are not in the config: the stored bars are its calendar, so Thu 26 Jan (Republic Day, no bar) is
    not a session and Friday's bar still reads Wednesday's chain, one overnight break old (found by review)."""
    bars = pd.DataFrame({"Date": ["2023-01-24", "2023-01-27"], "Open": ["18100", "18000"], "High": ["18200", "18100"],
                         "Low": ["18000", "17900"], "Close": ["18150", "18050"], "Volume": ["1", "1"]})
    assert "lists no NSE holidays for 2023" in import_ohlcv(con, write(bars, tmp_path / "n.csv"), "NIFTY", run_cfg=cfg)["warnings"][0]
    import_bhavcopy(con, write_example_bhavcopy(tmp_path / "b.csv", trade_date="2023-01-25", spot=18100.0, lot=50), run_cfg=cfg)
    pcr = con.execute("SELECT pcr_oi FROM ml_features ORDER BY timestamp").df().pcr_oi.tolist()
    assert np.isnan(pcr[0]) and pcr[1:] == [1.0, 1.0]       # Tue: no chain yet; Wed 15:30 and Fri 09:15: Wednesday's


def test_both_layouts_give_the_same_contracts_and_reimport_adds_nothing(tmp_path, fingerprint):
    chains = {}
    for fmt in ("old", "udiff"):
        run_cfg = RunConfig(data_dir=str(tmp_path / fmt))
        c = connect(run_cfg)
        path = write_example_bhavcopy(tmp_path / f"{fmt}.csv", fmt)
        import_bhavcopy(c, path, run_cfg=run_cfg)
        before = fingerprint(c)
        again = import_bhavcopy(c, path, run_cfg=run_cfg)
        assert again["rows_added"] == {"option_chain_snapshots": 0, "underlying_bars": 0} and fingerprint(c) == before
        # the other layout of the same day disagrees on the underlying (UDiFF spot vs old-layout futures proxy): a
        # conflict naming table, key and column, and nothing of it is stored
        other = write_example_bhavcopy(tmp_path / f"other_{fmt}.zip", "udiff" if fmt == "old" else "old", zipped=True)
        with pytest.raises(IngestError, match=r"conflict.*column 'underlying_price'.*option_chain_snapshots: 44 row\(s\) already stored"):
            import_bhavcopy(c, other, run_cfg=run_cfg)
        assert fingerprint(c) == before
        chains[fmt] = c.execute("SELECT expiry, strike, option_type, ltp, iv, oi, oi_change, volume, lot_size "
                                "FROM option_chain_snapshots ORDER BY ALL").df()
        c.close()
    pd.testing.assert_frame_equal(chains["old"], chains["udiff"], rtol=1e-9)


def test_old_layout_takes_the_lot_size_in_force_on_the_trade_date(con, cfg, tmp_path):
    path = write_example_bhavcopy(tmp_path / "june2024.csv", "old", trade_date="2024-06-03", lot=25)   # NIFTY lot 25 then
    import_bhavcopy(con, path, run_cfg=cfg)
    chain = con.execute("SELECT DISTINCT lot_size, oi FROM option_chain_snapshots").fetchall()
    assert chain == [(25, 2000.0)]


def _bhav(tmp_path, fmt="udiff"):
    return pd.read_csv(write_example_bhavcopy(tmp_path / f"src_{fmt}.csv", fmt), dtype=str, keep_default_na=False)


def _first_option_row(raw, fmt="udiff"):
    "0-based index of the 4th NIFTY option row."
    inst, sym = ("FinInstrmTp", "TckrSymb") if fmt == "udiff" else ("INSTRUMENT", "SYMBOL")
    is_option = (raw[inst] == ("IDO" if fmt == "udiff" else "OPTIDX")) & (raw[sym] == "NIFTY")
    return int(np.flatnonzero(is_option.to_numpy())[3])


def _bhav_case(column, value, check, canonical):
    def mutate(raw, r):
        raw = raw.copy(); raw.loc[r, column] = value(raw.loc[r]) if callable(value) else value; return raw
    return (mutate, check, canonical)


BAD_BHAV = {
    "negative_oi": _bhav_case("OpnIntrst", "-75", "non_negative", "oi_units"),
    "negative_strike": _bhav_case("StrkPric", "-100", "non_negative", "strike"),
    "high_below_close": _bhav_case("HghPric", lambda row: str(float(row.ClsPric) - 1), "ohlc_logic", "high"),
    "non_positive_close": _bhav_case("ClsPric", "0", "price_sanity", "close"),
    "unparseable_oi": _bhav_case("OpnIntrst", "lots", "schema", "oi_units"),
    "unparseable_expiry": _bhav_case("XpryDt", "someday", "schema", "expiry"),
    "expiry_before_trade_date": _bhav_case("XpryDt", "2024-12-26", "temporal", "expiry"),
    "dd_mm_yyyy_expiry": _bhav_case("XpryDt", "09-01-2025", "schema", "expiry"),          # UDiFF dates are YYYY-MM-DD
    "negative_settle": _bhav_case("SttlmPric", "-5", "non_negative", "settle"),
    "zero_option_strike": _bhav_case("StrkPric", "0", "non_negative", "strike"),
    "zero_lot_size": _bhav_case("NewBrdLotQty", "0", "non_negative", "lot_size"),
    "unknown_option_type": _bhav_case("OptnTp", "C", "schema", "option_type"),
    "infinite_close": _bhav_case("ClsPric", "inf", "schema", "close"),
    "expiry_in_year_9999": _bhav_case("XpryDt", "9999-12-31", "schema", "expiry"),
    "option_above_its_bound": _bhav_case(   # a call above its underlying, a put above its strike (whichever the row is)
        "ClsPric", lambda row: str(float(row.UndrlygPric if row.OptnTp == "CE" else row.StrkPric) * 1.01), "price_sanity", "close"),
    # review 16: lot sizes the INTEGER column cannot hold (were a TypeError / ConversionException), magnitudes, Src, prices
    "fractional_lot_size": _bhav_case("NewBrdLotQty", "75.5", "schema", "lot_size"),
    "lot_size_beyond_int32": _bhav_case("NewBrdLotQty", "3000000000", "schema", "lot_size"),
    "lot_size_1e20": _bhav_case("NewBrdLotQty", "1e20", "schema", "lot_size"),
    "oi_1e300": _bhav_case("OpnIntrst", "1e300", "volume_sanity", "oi_units"),
    "underlying_in_paise": _bhav_case("UndrlygPric", lambda row: str(float(row.UndrlygPric) * 100), "price_sanity", "underlying"),
    "src_names_another_exchange": _bhav_case("Src", "BSE", "schema", "Src"),
    "untraded_negative_close": (lambda raw, r: _bhav_case("ClsPric", "-5", "", "")[0](_bhav_case("TtlTradgVol", "0", "", "")[0](raw, r), r),
                                "non_negative", "close"),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")                     # IV of a negative strike, a zero close
@pytest.mark.parametrize("case", BAD_BHAV)
def test_bad_bhavcopy_is_rejected_naming_file_row_column(seeded, cfg, tmp_path, fingerprint, case):
    mutate, check, column = BAD_BHAV[case]
    raw = _bhav(tmp_path)
    # move the other-symbol row to the top, so file rows and NIFTY rows are numbered differently
    raw = pd.concat([raw[raw.TckrSymb != "NIFTY"], raw[raw.TckrSymb == "NIFTY"]], ignore_index=True)
    r = _first_option_row(raw)
    path = tmp_path / f"{case}.csv"; mutate(raw, r).to_csv(path, index=False)
    before = fingerprint(seeded)
    with pytest.raises(IngestError) as err:
        import_bhavcopy(seeded, path, run_cfg=cfg)
    line = next((l for l in str(err.value).splitlines() if f": {check}:" in l), None)
    assert line is not None and str(path) in line and f"first at row {r + 1}," in line and f"column '{column}'" in line, str(err.value)
    assert fingerprint(seeded) == before
    q = seeded.execute("SELECT row_number, column_name, check_name FROM quarantine WHERE file = ?", [str(path)]).fetchall()
    assert (r + 1, column, check) in q
    assert seeded.execute("SELECT status FROM training_batches WHERE file = ?", [str(path)]).fetchall() == [("rejected",)]


def test_an_untraded_future_with_a_negative_close_is_rejected(seeded, cfg, tmp_path, fingerprint):
    "Review 16 (3): an untraded future's ClsPric of -1 was stored silently (its settlement price priced it)."
    raw = _bhav(tmp_path)
    fut = int(np.flatnonzero((raw.FinInstrmTp == "IDF").to_numpy())[0])
    raw.loc[fut, ["TtlTradgVol", "ClsPric"]] = ["0", "-1"]
    path = tmp_path / "fut.csv"; raw.to_csv(path, index=False)
    _bhavcopy_refused(seeded, path, cfg, fingerprint, rf"non_negative: 1 row\(s\); first at row {fut + 1}, column 'close': negative close")


def test_a_bhavcopy_dated_in_the_future_is_rejected(seeded, cfg, tmp_path, fingerprint):
    "Review 16 (3): the OHLCV importer refuses future bars; a bhavcopy of 2 Jan 2031 was stored."
    path = write_example_bhavcopy(tmp_path / "2031.csv", trade_date="2031-01-02")
    _bhavcopy_refused(seeded, path, cfg, fingerprint, r"temporal: 46 row\(s\); first at row 1, column 'trade_date': bar at 2031-01-02 15:30 IST is in the future")


def test_a_bhavcopy_of_a_saturday_is_kept_with_a_calendar_warning(con, cfg, tmp_path):
    "Review 16 (3): a Saturday's file was stored without a word; like OHLCV bars it is kept (special sessions) but flagged."
    result = import_bhavcopy(con, write_example_bhavcopy(tmp_path / "sat.csv", trade_date="2025-01-04"), run_cfg=cfg)
    assert result["rows_added"] == {"option_chain_snapshots": 44, "underlying_bars": 1}
    assert any("calendar:" in w and "column 'trade_date': bar on 2025-01-04 IST, a Saturday" in w for w in result["warnings"]), result["warnings"]


def test_a_bhavcopy_on_a_day_with_intraday_bars_warns_that_its_close_bar_joins_them(sim_con, cfg, tmp_path):
    "Review 16 (12): an end-of-day bhavcopy of a simulated day added a 15:30 bar (volume 500) to a 1-minute series, silently."
    result = import_bhavcopy(sim_con, write_example_bhavcopy(tmp_path / "b.csv", trade_date="2025-08-01", spot=24500.0), run_cfg=cfg)
    assert result["rows_added"]["underlying_bars"] == 1
    assert any("temporal:" in w and "holds 375 simulated bar(s) of NIFTY on 2025-08-01 at other times (the first at 09:15 IST)" in w
               for w in result["warnings"]), result["warnings"]


def test_a_bhavcopy_on_a_new_day_has_no_such_warning(sim_con, cfg, tmp_path):
    result = import_bhavcopy(sim_con, write_example_bhavcopy(tmp_path / "b.csv", trade_date="2025-08-06", spot=24500.0), run_cfg=cfg)
    assert not [w for w in result["warnings"] if "temporal" in w], result["warnings"]


def test_duplicate_bhavcopy_row_is_rejected(seeded, cfg, tmp_path, fingerprint):
    raw = _bhav(tmp_path, "old")
    r = _first_option_row(raw, "old")
    dup = pd.concat([raw.iloc[: r + 1], raw.iloc[[r]], raw.iloc[r + 1:]], ignore_index=True)
    path = tmp_path / "dup.csv"; dup.to_csv(path, index=False)
    _bhavcopy_refused(seeded, path, cfg, fingerprint, rf"temporal: 1 row\(s\); first at row {r + 2}, column")


def _bhavcopy_refused(con, path, cfg, fingerprint, match: str) -> None:
    "Importing the bhavcopy at `path` raises an IngestError matching `match` and leaves every stored table unchanged."
    before = fingerprint(con)
    with pytest.raises(IngestError, match=match):
        import_bhavcopy(con, path, run_cfg=cfg)
    assert fingerprint(con) == before


def test_bhavcopy_missing_a_column_names_it(seeded, cfg, tmp_path, fingerprint):
    path = tmp_path / "no_oi.csv"; _bhav(tmp_path, "old").drop(columns="OPEN_INT").to_csv(path, index=False)
    before = fingerprint(seeded)
    with pytest.raises(IngestError, match=r"row 0, column 'OPEN_INT': missing required column"):
        import_bhavcopy(seeded, path, run_cfg=cfg)
    assert fingerprint(seeded) == before


def test_untraded_contracts_use_the_settlement_price_and_skip_ohlc_checks(con, cfg, tmp_path):
    raw = _bhav(tmp_path)
    r = _first_option_row(raw)
    raw.loc[r, ["OpnPric", "HghPric", "LwPric", "ClsPric", "LastPric", "TtlTradgVol"]] = "0"
    path = tmp_path / "untraded.csv"; raw.to_csv(path, index=False)
    import_bhavcopy(con, path, run_cfg=cfg)
    got = con.execute("SELECT ltp, volume FROM option_chain_snapshots WHERE strike = ? AND option_type = ? AND expiry = ?",
                      [float(raw.StrkPric[r]), raw.OptnTp[r], raw.XpryDt[r]]).fetchall()
    assert got == [(float(raw.SttlmPric[r]), 0.0)]


def test_an_untraded_near_future_proxies_the_underlying_at_its_settlement_price(con, cfg, tmp_path):
    "Old layout (no own underlying): the near-month future did not trade (OHLC 0), so its settlement price is the proxy."
    raw = _bhav(tmp_path, "old")
    near = raw.index[(raw.INSTRUMENT == "FUTIDX") & (raw.SYMBOL == "NIFTY")][0]
    raw.loc[near, ["OPEN", "HIGH", "LOW", "CLOSE", "CONTRACTS"]] = "0"
    path = tmp_path / "untraded_future.csv"; raw.to_csv(path, index=False)
    import_bhavcopy(con, path, run_cfg=cfg)                                    # was: every call "above its underlying 0.0"
    settle = float(raw.SETTLE_PR[near])
    assert con.execute("SELECT DISTINCT underlying_price FROM option_chain_snapshots").fetchall() == [(settle,)]
    assert con.execute("SELECT close, futures_price FROM underlying_bars").fetchall() == [(settle, settle)]
    assert con.execute("SELECT count(*) FROM option_chain_snapshots WHERE NOT isfinite(iv) OR iv IS NULL").fetchall() == [(0,)]


@pytest.mark.parametrize("missing", ["", "-", "NaN", "null"])                # however the exporter wrote the gap
def test_bhavcopy_with_a_few_missing_values_stores_the_rest(con, cfg, tmp_path, missing):
    raw = _bhav(tmp_path)
    r = _first_option_row(raw)
    raw.loc[r, "ClsPric"] = missing                                         # 1 of 46 NIFTY rows
    path = tmp_path / "missing.csv"; raw.to_csv(path, index=False)
    result = import_bhavcopy(con, path, run_cfg=cfg)
    assert result["rows_added"]["option_chain_snapshots"] == 43
    assert any(f"row {r + 1}, column 'close'" in w for w in result["warnings"])
    assert con.execute("SELECT row_number, check_name FROM quarantine WHERE file = ?", [str(path)]).fetchall() == [(r + 1, "completeness")]


@pytest.mark.parametrize("importer", ["ohlcv", "bhavcopy"])
def test_exchange_names_are_normalised(con, cfg, tmp_path, importer):
    if importer == "ohlcv":
        import_ohlcv(con, write(yahoo_frame(n=3), tmp_path / "x.csv"), "X", exchange="nse", run_cfg=cfg)
    else:
        import_bhavcopy(con, write_example_bhavcopy(tmp_path / "b.csv"), exchange="nse", run_cfg=cfg)
    assert con.execute("SELECT DISTINCT exchange FROM underlying_bars").fetchall() == [("NSE",)]


# ---------------------------------------------------------------- audit fixes: dates, conflicts, exchange, re-imports, bhavcopy rows
def test_dd_mm_yyyy_dates_are_rejected_not_read_month_first(con, cfg, tmp_path, fingerprint):
    frame = yahoo_frame(n=10).assign(Date=[f"{d:02d}/02/2025" for d in range(1, 11)])
    before = fingerprint(con)
    with pytest.raises(IngestError, match=r"row 1, column 'timestamp': unparseable or ambiguous date '01/02/2025'"):
        import_ohlcv(con, write(frame, tmp_path / "ddmm.csv"), "DDMM", run_cfg=cfg)
    assert fingerprint(con) == before


def test_month_name_and_iso_dates_are_read_exactly(con, cfg, tmp_path):
    frame = yahoo_frame(n=3).assign(Date=["03-Feb-2025", "2025-02-04", "05-FEB-2025"])
    import_ohlcv(con, write(frame, tmp_path / "named.csv"), "NAMED", run_cfg=cfg)
    got = stored_bars(con, "NAMED").timestamp.dt.tz_convert(IST).dt.strftime("%Y-%m-%d %H:%M").tolist()
    assert got == ["2025-02-03 09:15", "2025-02-04 09:15", "2025-02-05 09:15"]


def test_udiff_dd_mm_yyyy_trade_date_is_rejected(con, cfg, tmp_path, fingerprint):
    raw = _bhav(tmp_path)
    raw["TradDt"] = "02-01-2025"; raw["BizDt"] = "02-01-2025"
    path = tmp_path / "ddmm_udiff.csv"; raw.to_csv(path, index=False)
    _bhavcopy_refused(con, path, cfg, fingerprint, r"row 1, column 'trade_date': unparseable or ambiguous date '02-01-2025'")


def test_a_revised_file_with_other_values_is_a_conflict_and_stores_nothing(seeded, cfg, tmp_path, fingerprint):
    revised = yahoo_frame(seed=1)
    revised.loc[4, "Close"] = str(round(float(revised.loc[4, "Close"]) * 1.001, 4))    # one close revised ...
    revised.loc[4, "High"] = str(max(float(revised.loc[4, "High"]), float(revised.loc[4, "Close"])))
    extra = yahoo_frame(n=N_ROWS + 2, seed=1).iloc[N_ROWS:]                              # ... and two new days
    revised = pd.concat([revised, extra.assign(Open=revised.Close.iloc[-1])], ignore_index=True)
    revised.loc[N_ROWS:, "High"] = revised.loc[N_ROWS:, ["Open", "High", "Close"]].astype(float).max(axis=1).astype(str)
    revised.loc[N_ROWS:, "Low"] = revised.loc[N_ROWS:, ["Open", "Low", "Close"]].astype(float).min(axis=1).astype(str)
    path = write(revised, tmp_path / "revised.csv")
    before, bars_before = fingerprint(seeded), stored_bars(seeded, "GOOD")
    with pytest.raises(IngestError) as err:
        import_ohlcv(seeded, path, "GOOD", run_cfg=cfg)
    msg = str(err.value)
    assert "conflict" in msg and "first at row 5, column 'close'" in msg and "underlying_bars: 1 row(s) already stored with different values" in msg
    assert fingerprint(seeded) == before                                     # not even the two new days
    pd.testing.assert_frame_equal(stored_bars(seeded, "GOOD"), bars_before)
    assert seeded.execute("SELECT status FROM training_batches WHERE batch_id = ?", [ohlcv_batch_id(path, "GOOD")]).fetchall() == [("rejected",)]


def test_unknown_exchange_is_rejected_naming_the_known_ones(con, cfg, tmp_path, fingerprint):
    before = fingerprint(con)
    with pytest.raises(ValueError, match=r"unknown exchange 'NSEE'; known: NSE, BSE"):
        import_ohlcv(con, write(yahoo_frame(n=3), tmp_path / "x.csv"), "X", exchange="NSEE", run_cfg=cfg)
    assert fingerprint(con) == before


def _batch(con, batch_id):
    return con.execute("SELECT status, rows_in, rows_stored, rows_quarantined FROM training_batches WHERE batch_id = ?", [batch_id]).fetchall()


def test_reimport_keeps_the_first_batch_record(con, cfg, tmp_path, monkeypatch):
    rebuilds = []
    real_rebuild = ingest.rebuild_ml_features_in_transaction
    monkeypatch.setattr(ingest, "rebuild_ml_features_in_transaction", lambda c, window, *rate: (rebuilds.append(window), real_rebuild(c, window, *rate))[1])
    frame = yahoo_frame(); frame.loc[5, "Close"] = np.nan                          # 1/30 missing: a warning, row dropped
    path = write(frame, tmp_path / "few_missing.csv"); batch_id = ohlcv_batch_id(path, "FEW")
    import_ohlcv(con, path, "FEW", run_cfg=cfg)
    first = _batch(con, batch_id)
    assert first == [("stored", N_ROWS, N_ROWS - 1, 1)] and len(rebuilds) == 1
    again = import_ohlcv(con, path, "FEW", run_cfg=cfg)                           # same file: a no-op
    assert again["rows_added"] == {"underlying_bars": 0} and again["reimport"] and _batch(con, batch_id) == first
    assert len(rebuilds) == 1                                                      # nothing added: ml_features not rebuilt
    strict = dataclasses.replace(cfg, quality=dataclasses.replace(cfg.quality, max_missing_frac=0.0))
    with pytest.raises(IngestError, match="completeness"):
        import_ohlcv(con, path, "FEW", run_cfg=strict)                            # stricter: rejected, as its own record
    assert _batch(con, batch_id) == first
    assert _batch(con, f"{batch_id}-retry1") == [("rejected", N_ROWS, 0, 1)]
    assert con.execute("SELECT count(*) FROM underlying_bars WHERE batch_id = ?", [batch_id]).fetchall()[0][0] == N_ROWS - 1
    assert con.execute("SELECT count(*) FROM quarantine WHERE batch_id = ?", [batch_id]).fetchall()[0][0] == 1


def test_old_layout_without_futures_rows_is_rejected_naming_the_row(con, cfg, tmp_path, fingerprint):
    raw = _bhav(tmp_path, "old")
    raw = raw[raw.INSTRUMENT != "FUTIDX"].reset_index(drop=True)
    path = tmp_path / "no_futures.csv"; raw.to_csv(path, index=False)
    first_nifty_option = int(np.flatnonzero((raw.SYMBOL == "NIFTY").to_numpy())[0]) + 1
    before = fingerprint(con)
    with pytest.raises(IngestError, match=rf"completeness: .* first at row {first_nifty_option}, column 'underlying': no underlying price"):
        import_bhavcopy(con, path, run_cfg=cfg)
    assert fingerprint(con) == before


@pytest.mark.parametrize("case, stamps, row, reason", [
    ("naive_utc_intraday", pd.date_range("2025-01-02 03:45", periods=5, freq="1min"), 1, "bar starts at 03:45 IST"),
    ("midnight_daily", pd.bdate_range("2025-01-01", periods=5) + pd.Timedelta(0), 1, "bar starts at 00:00 IST"),
    ("after_the_close", pd.date_range("2025-01-02 15:28", periods=5, freq="1min"), 3, "bar starts at 15:30 IST"),
    ("future_day", pd.DatetimeIndex(["2025-01-02 09:15", "2099-01-02 09:15"]), 2, "bar at 2099-01-02 09:15 IST is in the future"),
])
def test_bars_outside_the_session_or_in_the_future_are_rejected(con, minute_cfg, tmp_path, fingerprint, case, stamps, row, reason):
    n = len(stamps)
    frame = pd.DataFrame({"Datetime": stamps.strftime("%Y-%m-%d %H:%M:%S"), "Open": ["100"] * n, "High": "101", "Low": "99",
                          "Close": "100.5", "Volume": "10"})
    before = fingerprint(con)
    with pytest.raises(IngestError, match=rf"temporal: .*first at row {row}, column 'timestamp': {reason}"):
        import_ohlcv(con, write(frame, tmp_path / f"{case}.csv"), "S", run_cfg=minute_cfg)
    assert fingerprint(con) == before


def test_a_bhavcopy_without_the_wanted_index_is_refused_not_stored_empty(con, cfg, tmp_path, fingerprint):
    "A stock-options-only file (or another index's) used to 'succeed' storing 0 rows."
    raw = _bhav(tmp_path)
    stocks = raw[raw.TckrSymb == "BANKNIFTY"].assign(FinInstrmTp="STO", TckrSymb="RELIANCE")   # a stock option row only
    path = tmp_path / "stocks_only.csv"; stocks.to_csv(path, index=False)
    _bhavcopy_refused(con, path, cfg, fingerprint, r"row 0, column 'symbol': no index futures/options rows of \['NIFTY'\]")
    before = fingerprint(con)                        # another index than the file's: refused, naming those it has
    with pytest.raises(IngestError, match=r"no index futures/options rows of \['FINNIFTY'\]; index symbols in the file: \['BANKNIFTY', 'NIFTY'\]"):
        import_bhavcopy(con, write_example_bhavcopy(tmp_path / "nifty.csv"), symbols=("FINNIFTY",), run_cfg=cfg)
    assert fingerprint(con) == before


def test_a_conflicting_key_is_located_by_exact_value_not_text_prefix():
    "The store returns keys as text; '100.0' must not match a strike of 100.05, nor an instant another offset's spelling."
    assert ingest._equals_stored_text(pd.Series([100.05, 100.0]), "100.0").tolist() == [False, True]
    times = pd.Series(pd.to_datetime(["2025-01-02 03:45", "2025-01-02 03:46"]).tz_localize("UTC"))
    assert ingest._equals_stored_text(times, "2025-01-02 09:16:00+05:30").tolist() == [False, True]
    assert ingest._equals_stored_text(pd.Series(["NIFTY", "NIFTY50"]), "NIFTY").tolist() == [True, False]


def test_bhavcopy_header_naming_a_column_twice_is_rejected(seeded, cfg, tmp_path, fingerprint):
    "' TckrSymb' and 'TckrSymb' are the same column once the header is stripped: a schema error naming it."
    raw = _bhav(tmp_path); raw[" TckrSymb"] = raw["TckrSymb"]
    path = tmp_path / "twice.csv"; raw.to_csv(path, index=False)
    _bhavcopy_refused(seeded, path, cfg, fingerprint, r"schema: 1 row\(s\); first at row 0, column 'TckrSymb': .*more than once")
    raw = _bhav(tmp_path); raw.insert(len(raw.columns), "ClsPric.1", "0.01")   # an exact repeat, as read_csv names it
    path = tmp_path / "exact.csv"; raw.rename(columns={"ClsPric.1": "ClsPric"}).to_csv(path, index=False)
    _bhavcopy_refused(seeded, path, cfg, fingerprint, r"column 'ClsPric': .*more than once")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_zero_close_is_a_price_error_without_numpy_warnings(seeded, cfg, tmp_path, fingerprint):
    "A zero close is reported (row, column); dividing by it in the move check prints no RuntimeWarning to the user."
    frame = yahoo_frame(); frame.loc[5, ["Open", "Low", "Close"]] = "0"
    before = fingerprint(seeded)
    with pytest.raises(IngestError, match=r"price_sanity: .*first at row 6, column"):
        import_ohlcv(seeded, write(frame, tmp_path / "zero.csv"), "ZERO", run_cfg=cfg)
    assert fingerprint(seeded) == before


# ---------------------------------------------------------------- review: UDiFF units, blank futures strikes, old-layout symbols
UDIFF_HEADER = ("TradDt,BizDt,Sgmt,Src,FinInstrmTp,FinInstrmId,ISIN,TckrSymb,SctySrs,XpryDt,FininstrmActlXpryDt,StrkPric,OptnTp,"
                "FinInstrmNm,OpnPric,HghPric,LwPric,ClsPric,LastPric,PrvsClsgPric,UndrlygPric,SttlmPric,OpnIntrst,ChngInOpnIntrst,"
                "TtlTradgVol,TtlTrfVal,TtlNbOfTxsExctd,SsnId,NewBrdLotQty,Rmks,Rsvd1,Rsvd2,Rsvd3,Rsvd4").split(",")
REAL_LOT, REAL_SPOT, REAL_FUT = 65, 24055.80, 24090.30


def udiff_real_layout(tmp_path, name="real.csv", mutate=None):
    """A UDiFF file in the layout of NSE's own files: the full header, futures with blank StrkPric/OptnTp, TtlTradgVol
    in contracts, OpnIntrst in units (contracts × NewBrdLotQty) and TtlTrfVal = contracts × lot × price ((strike + premium)
    for options) — as in NSE rows quoted in public fixtures (e.g. SeaOfTiberias/quantos tests/unit/test_vrp_bhavcopy.py)."""
    day, expiry, tau = "2026-09-01", "2026-09-29", 28 / 365
    rows = [dict(FinInstrmTp="IDF", XpryDt=expiry, StrkPric="", OptnTp="", ClsPric=REAL_FUT, OpnIntrst=REAL_LOT * 246_951,
                 TtlTradgVol=57_171, TtlTrfVal=round(57_171 * REAL_LOT * REAL_FUT, 2))]
    for k in np.arange(23_600.0, 24_501.0, 100.0):
        for typ in ("CE", "PE"):
            px = round(float(black76(REAL_FUT, k, 0.13, tau, 0.065, typ == "CE")), 2)
            rows.append(dict(FinInstrmTp="IDO", XpryDt=expiry, StrkPric=f"{k:.2f}", OptnTp=typ, ClsPric=px,
                             OpnIntrst=REAL_LOT * 23_061, TtlTradgVol=35_894, TtlTrfVal=round(35_894 * REAL_LOT * (k + px), 2)))
    t = pd.DataFrame(rows)
    t = t.assign(TradDt=day, BizDt=day, Sgmt="FO", Src="NSE", FinInstrmId=np.arange(len(t)) + 40_000, ISIN="", TckrSymb="NIFTY",
                 SctySrs="", FininstrmActlXpryDt=t.XpryDt, FinInstrmNm="NIFTY", OpnPric=t.ClsPric, HghPric=(t.ClsPric * 1.2).round(2),
                 LwPric=(t.ClsPric * 0.8).round(2), LastPric=t.ClsPric, PrvsClsgPric=t.ClsPric, UndrlygPric=REAL_SPOT,
                 SttlmPric=t.ClsPric, ChngInOpnIntrst=REAL_LOT * 1_000, TtlNbOfTxsExctd=1_000, SsnId="F1", NewBrdLotQty=REAL_LOT,
                 Rmks="", Rsvd1="", Rsvd2="", Rsvd3="", Rsvd4="")[UDIFF_HEADER].astype(str)
    if mutate is not None: t = mutate(t)
    t.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def test_udiff_volume_is_in_contracts_and_oi_in_units(con, cfg, tmp_path):
    "F1: UDiFF TtlTradgVol counts contracts (it was divided by the lot again); OpnIntrst is in units (divided once)."
    import_bhavcopy(con, udiff_real_layout(tmp_path), run_cfg=cfg)
    chain = con.execute("SELECT DISTINCT volume, oi, oi_change, lot_size FROM option_chain_snapshots").fetchall()
    assert chain == [(35_894.0, 23_061.0, 1_000.0, REAL_LOT)]                 # was volume 552.2 (35894 / 65)
    bar = con.execute("SELECT volume, futures_oi FROM underlying_bars").fetchall()
    assert bar == [(57_171.0, 246_951.0)]


def test_udiff_turnover_far_from_contracts_lot_price_is_a_warning_naming_the_row(con, cfg, tmp_path):
    "F1 sanity check: a row whose TtlTradgVol is in units (lot × too big for its TtlTrfVal) is stored but flagged."
    def units_on_row_5(t):
        t = t.copy(); t.loc[4, "TtlTradgVol"] = str(int(t.TtlTradgVol[4]) * REAL_LOT); return t
    path = udiff_real_layout(tmp_path, "units.csv", units_on_row_5)
    result = import_bhavcopy(con, path, run_cfg=cfg)
    assert result["rows_added"]["option_chain_snapshots"] == 20                # a warning: nothing dropped
    assert any("warning: volume_sanity: 1 row(s); first at row 5, column 'turnover'" in w for w in result["warnings"]), result["warnings"]
    q = con.execute("SELECT row_number, column_name, check_name FROM quarantine WHERE file = ?", [str(path)]).fetchall()
    assert q == [(5, "turnover", "volume_sanity")]


def test_consistent_udiff_turnover_gives_no_warning(con, cfg, tmp_path):
    result = import_bhavcopy(con, udiff_real_layout(tmp_path), run_cfg=cfg)
    assert result["warnings"] == [] and result["rows_added"] == {"option_chain_snapshots": 20, "underlying_bars": 1}


def test_udiff_futures_with_blank_strike_and_option_type_are_kept(con, cfg, tmp_path):
    "F2: NSE leaves StrkPric/OptnTp blank on futures rows; they are futures, not incomplete rows to drop."
    result = import_bhavcopy(con, udiff_real_layout(tmp_path), run_cfg=cfg)
    assert result["warnings"] == [], result["warnings"]                        # was: completeness warning on 'strike'
    bar = con.execute("SELECT close, futures_price, futures_oi, volume FROM underlying_bars").fetchall()
    assert bar == [(REAL_SPOT, REAL_FUT, 246_951.0, 57_171.0)]                  # was: (spot, None, None, None)
    assert con.execute("SELECT count(*) FROM quarantine").fetchall() == [(0,)]


def test_an_option_row_with_a_blank_strike_is_still_incomplete(con, cfg, tmp_path):
    "F2: only futures may leave the strike blank; an option without one is a missing value (dropped, quarantined)."
    def blank_option_strike(t):
        t = t.copy(); t.loc[3, "StrkPric"] = ""; return t
    path = udiff_real_layout(tmp_path, "blank_opt.csv", blank_option_strike)
    result = import_bhavcopy(con, path, run_cfg=cfg)
    assert result["rows_added"]["option_chain_snapshots"] == 19
    assert con.execute("SELECT row_number, column_name, check_name FROM quarantine WHERE file = ?", [str(path)]).fetchall() == [
        (4, "strike", "completeness")]


def test_example_udiff_file_has_the_real_layout(tmp_path):
    "write_example_bhavcopy writes NSE's UDiFF header, blank strike/option type on futures, contracts in TtlTradgVol."
    raw = pd.read_csv(write_example_bhavcopy(tmp_path / "ex.csv", "udiff"), dtype=str, keep_default_na=False)
    assert list(raw.columns) == UDIFF_HEADER
    fut = raw[raw.FinInstrmTp == "IDF"]
    assert (fut.StrkPric == "").all() and (fut.OptnTp == "").all() and (fut.TtlTradgVol.astype(float) == 500).all()
    nifty_opt = raw[(raw.FinInstrmTp == "IDO") & (raw.TckrSymb == "NIFTY")]
    assert (nifty_opt.TtlTradgVol.astype(float) == 300).all()
    expected = 300 * 75 * (nifty_opt.StrkPric.astype(float) + nifty_opt.ClsPric.astype(float))
    np.testing.assert_allclose(nifty_opt.TtlTrfVal.astype(float), expected, rtol=1e-9)


def _old_with_banknifty(tmp_path):
    "The old-layout example plus a BANKNIFTY future (lot 30 then: OPEN_INT 15000 units = 500 contracts)."
    raw = pd.read_csv(write_example_bhavcopy(tmp_path / "old.csv", "old"), dtype=str, keep_default_na=False)
    fut = raw[(raw.SYMBOL == "NIFTY") & (raw.INSTRUMENT == "FUTIDX")].iloc[[0]].copy()
    fut[["SYMBOL", "OPEN", "CLOSE", "SETTLE_PR", "HIGH", "LOW", "OPEN_INT"]] = ["BANKNIFTY", "51200", "51200", "51200", "51300", "51100", "15000"]
    path = tmp_path / "old_bank.csv"; pd.concat([raw, fut], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("symbols", [("NIFTY", "BANKNIFTY"), ("BANKNIFTY",), ("banknifty",)])
def test_old_layout_refuses_a_symbol_without_a_dated_lot_schedule(seeded, cfg, tmp_path, fingerprint, symbols):
    "F3: the old layout has no lot column; only the configured index has a dated lot schedule, so BANKNIFTY is refused."
    path = _old_with_banknifty(tmp_path)
    before = fingerprint(seeded)
    with pytest.raises(IngestError, match=r"column 'symbol'.*BANKNIFTY.*no lot-size column.*only NIFTY has a dated lot-size schedule"):
        import_bhavcopy(seeded, path, symbols=symbols, run_cfg=cfg)
    assert fingerprint(seeded) == before                                     # was: BANKNIFTY stored with NIFTY's lot 75
    assert seeded.execute("SELECT status FROM training_batches WHERE file = ?", [str(path)]).fetchall() == [("rejected",)]


def test_old_layout_still_imports_the_configured_index_when_asked_by_name(con, cfg, tmp_path):
    result = import_bhavcopy(con, _old_with_banknifty(tmp_path), symbols=("NIFTY",), run_cfg=cfg)
    assert result["rows_added"] == {"option_chain_snapshots": 44, "underlying_bars": 1} and result["rows_skipped_other_symbols"] == 2


def test_udiff_layout_imports_another_index_with_its_own_lot(con, cfg, tmp_path):
    "UDiFF carries the lot per row, so another index is fine there: BANKNIFTY OI is divided by its own lot (30)."
    path = write_example_bhavcopy(tmp_path / "u.csv", "udiff")
    result = import_bhavcopy(con, path, symbols=("NIFTY", "BANKNIFTY"), run_cfg=cfg)
    assert con.execute("SELECT lot_size, oi, volume FROM option_chain_snapshots WHERE symbol = 'BANKNIFTY'").fetchall() == [(30, 100.0, 10.0)]
    assert result["rows_added"]["option_chain_snapshots"] == 45



def test_a_reimport_selecting_another_symbol_is_a_batch_of_its_own(con, cfg, tmp_path):
    """Review finding (p8): re-importing a stored bhavcopy with --symbol BANKNIFTY stored its rows under the first import's
    batch id, whose training_batches record ('a re-import is a no-op') still said 45 rows while 47 carried the id. The
    selection is part of the batch id: a plain import keeps its id, each batch's record counts the rows carrying its id."""
    path = write_example_bhavcopy(tmp_path / "bhav.csv", "udiff")
    sha12 = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    plain = import_bhavcopy(con, path, run_cfg=cfg)
    more = import_bhavcopy(con, path, symbols=("banknifty",), run_cfg=cfg)
    assert (plain["batch_id"], more["batch_id"]) == (f"bhav-NSE-{sha12}", f"bhav-NSE-{sha12}-BANKNIFTY")
    assert not more["reimport"] and more["rows_added"] == {"option_chain_snapshots": 1, "underlying_bars": 1}
    carried = dict(con.execute("SELECT batch_id, sum(n) FROM (SELECT batch_id, count(*) AS n FROM option_chain_snapshots GROUP BY 1 "
                               "UNION ALL SELECT batch_id, count(*) FROM underlying_bars GROUP BY 1) GROUP BY 1").fetchall())
    recorded = dict(con.execute("SELECT batch_id, rows_stored FROM training_batches WHERE status = 'stored'").fetchall())
    assert carried == recorded == {plain["batch_id"]: 45, more["batch_id"]: 2}
    assert import_bhavcopy(con, path, symbols=("NIFTY",), run_cfg=cfg)["batch_id"] == plain["batch_id"]   # the benchmark alone: as plain
    again = import_bhavcopy(con, path, symbols=("BANKNIFTY", "NIFTY"), run_cfg=cfg)   # both, all stored already: adds nothing
    assert again["batch_id"] == f"bhav-NSE-{sha12}-BANKNIFTY+NIFTY" and sum(again["rows_added"].values()) == 0

@pytest.mark.parametrize("fmt", ["old", "udiff"])
def test_weekly_ivs_are_solved_on_the_parity_forward(con, cfg, tmp_path, fmt):
    "A weekly expiry has no future: its IVs come from the put-call-parity forward, so a flat 14 % smile stays flat and iv_skew ~ 0."
    path = write_example_bhavcopy(tmp_path / "bhav.csv", fmt, dividend_yield=0.012, weekly_future=False)
    assert import_bhavcopy(con, path, run_cfg=cfg)["rows_added"] == {"option_chain_snapshots": 44, "underlying_bars": 1}
    chain = con.execute("SELECT * FROM option_chain_snapshots ORDER BY expiry, strike, option_type").df()
    liquid = chain.ltp > 5
    np.testing.assert_allclose(chain.iv[liquid], 0.14, atol=2e-3)   # both expiries (the monthly one on its future)
    iv_skew, days = con.execute("SELECT iv_skew, days_to_expiry FROM ml_features WHERE symbol = 'NIFTY'").fetchall()[0]
    assert np.isclose(days, 7) and abs(iv_skew) < 1e-3, iv_skew   # put minus call IV 4 strikes out, on the weekly expiry


# ---------------------------------------------------------------- calendar, lots, paths (fixcal)
def test_an_old_layout_long_dated_option_takes_the_lot_of_its_trade_date(con, cfg, tmp_path):
    """A NIFTY option expiring 25 Jun 2026 in the old-layout bhavcopy of 25 Apr 2024 (lot 50): its OPEN_INT of 650,000
    units is 13,000 contracts (was: the 2026 lot 65 applied, 10,000 contracts stored with lot 65)."""
    path = write_example_bhavcopy(tmp_path / "fo25APR2024bhav.csv", "old", trade_date="2024-04-25", spot=22500, lot=50)
    raw = pd.read_csv(path, dtype=str)
    row = raw[(raw.INSTRUMENT == "OPTIDX") & (raw.SYMBOL == "NIFTY") & (raw.OPTION_TYP == "CE")].iloc[[5]].copy()
    row["EXPIRY_DT"], row["STRIKE_PR"] = "25-Jun-2026", "22500.0"
    for c in ("OPEN", "HIGH", "LOW", "CLOSE", "SETTLE_PR"): row[c] = "2900.0"
    row["CONTRACTS"], row["VAL_INLAKH"] = "12", f"{12 * 50 * (22500 + 2900) / 1e5:.2f}"
    row["OPEN_INT"], row["CHG_IN_OI"] = "650000", "5000"
    pd.concat([raw, row]).to_csv(path, index=False)
    import_bhavcopy(con, path, run_cfg=cfg)
    got = con.execute("SELECT lot_size, oi FROM option_chain_snapshots WHERE expiry > '2025-01-01'").fetchall()
    assert got == [(50, 13000.0)], got
    assert con.execute("SELECT DISTINCT lot_size FROM ml_features").fetchall() == [(50.0,)]


def _muhurat_file(tmp_path, evening_day="2024-11-01"):
    "1-minute NIFTY bars of Thu 31 Oct 2024 plus one hour from 18:00 IST on `evening_day` (Fri 1 Nov 2024: Muhurat trading)."
    rng, rows, px = np.random.default_rng(5), [], 24200.0
    for start, end in (("2024-10-31 09:15", "2024-10-31 15:29"), (f"{evening_day} 18:00", f"{evening_day} 18:59")):
        for ts in pd.date_range(start, end, freq="1min"):
            o = px; c = o * (1 + rng.normal(0, 0.0003)); px = c
            rows.append((ts.strftime("%Y-%m-%d %H:%M:%S"), round(o, 2), round(max(o, c) + 2, 2), round(min(o, c) - 2, 2), round(c, 2), 100))
    return write(pd.DataFrame(rows, columns=["Date", "Open", "High", "Low", "Close", "Volume"]), tmp_path / f"muhurat_{evening_day}.csv")


def test_a_muhurat_session_is_accepted_with_a_warning_and_featured(con, minute_cfg, tmp_path):
    """The 1 Nov 2024 Muhurat session (18:00-19:00 IST) is a special session of the config: its 60 bars are stored with a
    warning naming it (was: the whole file rejected, 'outside 09:15-15:30'), and features and labels run on them, the hour
    being a session of its own."""
    from oi_ml.features import compute_all_features
    from oi_ml.labels import LabelConfig, triple_barrier_frame
    result = import_ohlcv(con, _muhurat_file(tmp_path), "NIFTY", run_cfg=minute_cfg)
    assert result["rows_added"] == {"underlying_bars": 375 + 60}
    [warning] = result["warnings"]
    assert "60 row(s); first at row 376" in warning and "the Muhurat trading special session of the config (18:00-19:00 IST)" in warning
    assert "kept" not in warning
    raw = con.execute("SELECT * FROM ml_features WHERE symbol = 'NIFTY' ORDER BY timestamp").df()
    assert len(raw) == 435
    features = compute_all_features(raw)
    assert len(features) == 435 and np.isfinite(features.time_of_day).all()
    evening_time = features.time_of_day.to_numpy()[375:]   # the Muhurat hour, placed in its own session (it read 1.40-1.56)
    assert evening_time.min() == 0.0 and evening_time.max() < 1.0 and np.isclose(evening_time[30], 0.5)
    labels = triple_barrier_frame(raw, LabelConfig())
    evening = (raw.timestamp >= pd.Timestamp("2024-11-01 12:30", tz="UTC")).to_numpy()
    ends = labels.label_end_time[evening].dropna()
    assert len(ends) and (ends >= pd.Timestamp("2024-11-01 12:30", tz="UTC")).all()   # the hour is a session of its own
    assert labels.label_end_time[~evening].dropna().max() < pd.Timestamp("2024-11-01", tz="UTC")


def test_evening_bars_on_a_day_without_a_special_session_reject_the_batch_without_saying_kept(con, minute_cfg, tmp_path, fingerprint):
    "Evening bars on Sat 2 Nov 2024 (no special session): a session-hours error; the calendar warning does not claim they are kept."
    path = _muhurat_file(tmp_path, evening_day="2024-11-02")
    before = fingerprint(con)
    with pytest.raises(IngestError) as err:
        import_ohlcv(con, path, "NIFTY", run_cfg=minute_cfg)
    msg = str(err.value)
    assert "bar starts at 18:00 IST, outside the 09:15-15:30 IST session" in msg and "bar on 2024-11-02 IST, a Saturday" in msg
    assert "kept" not in msg
    assert fingerprint(con) == before


def test_a_batch_records_its_file_by_absolute_path(con, cfg, tmp_path, monkeypatch):
    "A file given by a relative path is recorded (training_batches, quarantine) by its resolved absolute path."
    monkeypatch.chdir(tmp_path)
    frame = yahoo_frame(); frame.loc[3, "Volume"] = ""      # one incomplete row: a quarantined warning row
    write(frame, tmp_path / "rel.csv")
    result = import_ohlcv(con, "rel.csv", "REL", run_cfg=cfg)
    where = str((tmp_path / "rel.csv").resolve())
    assert con.execute("SELECT file FROM training_batches WHERE batch_id = ?", [result["batch_id"]]).fetchall() == [(where,)]
    assert {r[0] for r in con.execute("SELECT file FROM quarantine").fetchall()} == {where}


def test_a_conflict_names_the_key_in_ist(con, minute_cfg, tmp_path):
    "An intraday file's conflicting bar is named by its IST wall clock (09:19 IST), as in the file, not in UTC (03:49)."
    frame = intraday_frame(n=10)
    import_ohlcv(con, write(frame, tmp_path / "first.csv"), "INTRA", run_cfg=minute_cfg)
    frame.loc[4, "Close"] = "100.7"
    with pytest.raises(IngestError) as err:
        import_ohlcv(con, write(frame, tmp_path / "revised.csv"), "INTRA", run_cfg=minute_cfg)
    msg = str(err.value)
    assert "timestamp=2025-01-02 09:19:00 IST" in msg and "03:49" not in msg, msg

"""Fault tests of the quarantine CSV across a kill: an import is SIGKILLed in a child process after its transaction
committed (before the hidden partial CSV is renamed to `<batch_id>.csv`) or before the commit (the partial's rows rolled
back); the next import, in this process, must promote the first, delete the second, leave a running import's partial
alone and lose nothing already stored."""
import errno
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from test_ingest import DAILY_MINUTES, ohlcv_batch_id, write, yahoo_frame

from oi_ml.config import RunConfig
from oi_ml.ingest import (
    IngestError,
    import_bhavcopy,
    import_ohlcv,
    staged_quarantine_csv,
    write_example_bhavcopy,
)
from oi_ml.store import TABLES, connect

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

# Runs one import_ohlcv in a fresh interpreter and SIGKILLs it at `point`: "after_commit" when the quarantine CSV's
# partial file is about to be renamed (the transaction has committed), "before_commit" right after the batch record is
# written inside the transaction (the CSV is written, nothing committed yet).
CHILD = r'''
import os, signal, sys
from oi_ml import ingest
from oi_ml.config import RunConfig
from oi_ml.store import connect
data_dir, path, symbol, point = sys.argv[1:]
def killed(*args, **kwargs): os.kill(os.getpid(), signal.SIGKILL)
if point == "after_commit":
    real_replace = os.replace
    os.replace = lambda src, dst, *a, **k: killed() if str(src).endswith(".partial") else real_replace(src, dst, *a, **k)
else:
    real_record = ingest.record_training_batch
    ingest.record_training_batch = lambda *a, **k: (real_record(*a, **k), killed())
cfg = RunConfig(data_dir=data_dir, bar_minutes=375)   # daily files: the daily config (test_ingest.DAILY_MINUTES)
try: ingest.import_ohlcv(connect(cfg), path, symbol, run_cfg=cfg)
except ingest.IngestError: pass
sys.exit("the import ran to its end: the kill point was never reached")
'''


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    "The test's data directory under the daily config: `yahoo_frame` files hold one bar a session (test_ingest.DAILY_MINUTES)."
    return RunConfig(data_dir=str(tmp_path / "data"), bar_minutes=DAILY_MINUTES)


def kill_import(cfg: RunConfig, path, symbol: str, point: str) -> None:
    "Run `import_ohlcv(path, symbol)` in a child process and SIGKILL it at `point` (the warehouse must be closed here)."
    proc = subprocess.run([sys.executable, "-c", CHILD, cfg.data_dir, str(path), symbol, point], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def partials(cfg: RunConfig) -> list[str]:
    return sorted(p.name for p in cfg.quarantine_dir.glob(".*.partial"))


def everything(con) -> dict:
    "(row count, order-free hash) of every table, bookkeeping included."
    return {t: tuple(con.execute(f"SELECT count(*), sum(hash(t)) FROM {t} t").fetchall()[0]) for t in TABLES}


def quarantined(con, batch_id: str) -> pd.DataFrame:
    "The `quarantine` table's rows of a batch, as (row_number, column_name, check_name, quarantined_at µs) sorted."
    return con.execute("SELECT row_number, column_name, check_name, epoch_us(quarantined_at) AS at FROM quarantine "
                       "WHERE batch_id = ? ORDER BY ALL", [batch_id]).df()


def csv_rows(path) -> pd.DataFrame:
    "The same columns read from a quarantine CSV."
    q = pd.read_csv(path)
    q["at"] = [t.value // 1000 for t in pd.to_datetime(q.quarantined_at, utc=True)]
    return (q[["row_number", "column_name", "check_name", "at"]].drop_duplicates()
            .sort_values(["row_number", "column_name", "check_name"]).reset_index(drop=True))


def next_import(cfg, tmp_path, importer: str):
    "Another, clean import (the 'next import' after a kill), returning the warnings it raised."
    with connect(cfg) as con, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if importer == "ohlcv": import_ohlcv(con, write(yahoo_frame(seed=7, start="2025-06-02"), tmp_path / "next.csv"), "NEXT", run_cfg=cfg)
        else: import_bhavcopy(con, write_example_bhavcopy(tmp_path / "next_bhav.csv", trade_date="2025-01-02"), run_cfg=cfg)
    return [str(w.message) for w in caught if "quarantine:" in str(w.message)]


def batch_rows(con, batch_id: str) -> dict:
    "(row count, order-free hash) of a batch's rows in each table that names its batch."
    return {t: tuple(con.execute(f"SELECT count(*), sum(hash(t)) FROM {t} t WHERE batch_id = ?", [batch_id]).fetchall()[0])
            for t in ("underlying_bars", "quarantine", "training_batches")}


@pytest.fixture
def stored(cfg, tmp_path):
    "A closed warehouse holding a batch with a quarantined row and its CSV: {batch_id, csv bytes, its rows, every table}."
    frame = yahoo_frame(seed=1); frame.loc[4, "Volume"] = ""                   # one row dropped and quarantined
    with connect(cfg) as con:
        batch_id = import_ohlcv(con, write(frame, tmp_path / "good.csv"), "GOOD", run_cfg=cfg)["batch_id"]
        return {"batch_id": batch_id, "csv": (cfg.quarantine_dir / f"{batch_id}.csv").read_bytes(),
                "rows": batch_rows(con, batch_id), "state": everything(con)}


def assert_nothing_lost(cfg, stored) -> None:
    "The batch stored before the kill keeps its CSV byte for byte and its rows in every table."
    assert (cfg.quarantine_dir / f"{stored['batch_id']}.csv").read_bytes() == stored["csv"]
    with connect(cfg) as con:
        assert batch_rows(con, stored["batch_id"]) == stored["rows"]
        assert all(n > 0 for n, _ in stored["rows"].values())


@pytest.mark.parametrize("importer", ["ohlcv", "bhavcopy"])
@pytest.mark.parametrize("outcome", ["stored", "rejected"])
def test_a_csv_hidden_by_a_kill_after_the_commit_is_recovered_by_the_next_import(cfg, tmp_path, stored, outcome, importer):
    "The rows are committed in `quarantine` but the CSV stayed a hidden `.partial` forever."
    frame = yahoo_frame(start="2025-03-03")
    if outcome == "stored": frame.loc[3, "Volume"] = ""      # a warning: the row is quarantined, the rest stored
    else: frame.loc[3, "Close"] = "-1"                       # an error: rejected
    path = write(frame, tmp_path / "killed.csv"); batch_id = ohlcv_batch_id(path, "KILLED")
    kill_import(cfg, path, "KILLED", "after_commit")
    assert len(partials(cfg)) == 1 and not (cfg.quarantine_dir / f"{batch_id}.csv").exists()
    with connect(cfg) as con:
        committed = quarantined(con, batch_id)
        assert len(committed) and con.execute("SELECT status FROM training_batches WHERE batch_id = ?", [batch_id]).fetchall() == [(outcome,)]
    messages = next_import(cfg, tmp_path, importer)
    final = cfg.quarantine_dir / f"{batch_id}.csv"
    assert final.exists() and partials(cfg) == [], sorted(p.name for p in cfg.quarantine_dir.iterdir())
    pd.testing.assert_frame_equal(csv_rows(final), committed, check_dtype=False)
    assert any("recovered" in m and str(final) in m for m in messages), messages
    assert_nothing_lost(cfg, stored)


@pytest.mark.parametrize("importer", ["ohlcv", "bhavcopy"])
@pytest.mark.parametrize("outcome", ["stored", "rejected"])
def test_a_partial_csv_of_an_import_killed_before_its_commit_is_deleted(cfg, tmp_path, stored, outcome, importer):
    "The transaction rolled back, so the partial CSV describes rows the warehouse never held."
    frame = yahoo_frame(start="2025-03-03")
    if outcome == "stored": frame.loc[3, "Volume"] = ""
    else: frame.loc[3, "Close"] = "-1"
    path = write(frame, tmp_path / "killed.csv"); batch_id = ohlcv_batch_id(path, "KILLED")
    kill_import(cfg, path, "KILLED", "before_commit")
    assert len(partials(cfg)) == 1
    with connect(cfg) as con:
        assert everything(con) == stored["state"]                      # rolled back
    messages = next_import(cfg, tmp_path, importer)
    assert partials(cfg) == [] and not (cfg.quarantine_dir / f"{batch_id}.csv").exists()
    assert any("removed" in m for m in messages), messages
    with connect(cfg) as con:
        assert quarantined(con, batch_id).empty
    assert_nothing_lost(cfg, stored)


def test_a_reimport_killed_after_its_commit_replaces_the_older_attempts_csv(cfg, tmp_path, stored):
    "A rejected file imported again rewrites its quarantine rows under the same batch id: the CSV must follow the table."
    frame = yahoo_frame(start="2025-03-03"); frame.loc[3, "Close"] = "-1"
    path = write(frame, tmp_path / "rejected.csv"); batch_id = ohlcv_batch_id(path, "REJ")
    with connect(cfg) as con, pytest.raises(IngestError):
        import_ohlcv(con, path, "REJ", run_cfg=cfg)
    final = cfg.quarantine_dir / f"{batch_id}.csv"
    first = final.read_bytes()
    kill_import(cfg, path, "REJ", "after_commit")
    assert len(partials(cfg)) == 1 and final.read_bytes() == first     # the older attempt's CSV, now stale
    next_import(cfg, tmp_path, "ohlcv")
    with connect(cfg) as con:
        pd.testing.assert_frame_equal(csv_rows(final), quarantined(con, batch_id), check_dtype=False)
    assert partials(cfg) == []
    assert_nothing_lost(cfg, stored)


def test_a_running_imports_partial_is_left_alone_while_a_dead_ones_is_swept(cfg, tmp_path, stored):
    """A partial whose import still runs (it holds the file's flock; here, this process) is not touched by another
    import's sweep; a dead one is, including one named as older releases named it (`.<batch_id>.csv.partial`)."""
    dead = cfg.quarantine_dir / ".ohlcv-NSE-GONE-0123456789ab.csv.partial"
    dead.write_text("batch_id,quarantined_at\nohlcv-NSE-GONE-0123456789ab,2025-01-02 10:00:00+00:00\n")
    with staged_quarantine_csv(cfg.quarantine_dir, "live-batch") as live:
        live.write_text("batch_id,quarantined_at\nlive-batch,2025-01-02 10:00:00+00:00\n")
        next_import(cfg, tmp_path, "ohlcv")
        assert live.exists() and live.read_text().startswith("batch_id")
        assert not dead.exists()
    assert (cfg.quarantine_dir / "live-batch.csv").exists() and partials(cfg) == []
    assert_nothing_lost(cfg, stored)


@pytest.mark.parametrize("flushed", ["partial", "folder"])
@pytest.mark.parametrize("outcome", ["stored", "rejected"])
def test_the_partial_is_on_disk_before_the_commit(cfg, tmp_path, stored, outcome, flushed, monkeypatch):
    """A power cut can lose what the OS has not written, so the partial CSV and its folder entry are fsynced before the
    transaction commits: here the flush of one of them fails, and the import must fail with nothing stored (a flush
    made after the commit, or none, would let it succeed)."""
    real_fsync, flushes = os.fsync, []
    def fsync(fd):
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        flushes.append(target)
        if (target.name.endswith(".partial") if flushed == "partial" else target == cfg.quarantine_dir.resolve()):
            raise OSError(errno.EIO, "simulated I/O error", str(target))
        return real_fsync(fd)
    frame = yahoo_frame(start="2025-03-03")
    if outcome == "stored": frame.loc[3, "Volume"] = ""
    else: frame.loc[3, "Close"] = "-1"
    path = write(frame, tmp_path / "flushed.csv"); batch_id = ohlcv_batch_id(path, "FLUSH")
    monkeypatch.setattr(os, "fsync", fsync)
    with connect(cfg) as con, pytest.raises(OSError, match="simulated I/O error"):
        import_ohlcv(con, path, "FLUSH", run_cfg=cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert flushes, "nothing was fsynced"
    with connect(cfg) as con:
        assert everything(con) == stored["state"]                      # the transaction never committed
    assert partials(cfg) == [] and not (cfg.quarantine_dir / f"{batch_id}.csv").exists()
    assert_nothing_lost(cfg, stored)

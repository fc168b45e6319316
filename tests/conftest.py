"""Shared tiny fixtures for the warehouse tests (store, simulate, ingest, datasets): a fresh warehouse under
`tmp_path`, a copy of a small simulated warehouse (built once per session), and table fingerprints; and, for the model
tests, the tiny training configuration `TINY_TRAIN` and `deploy_tiny_model`."""
import dataclasses
import shutil
from pathlib import Path

import pytest

from oi_ml.config import RunConfig
from oi_ml.store import TABLES, connect
from oi_ml.train import TrainConfig

BOOKKEEPING_TABLES = ("quarantine", "training_batches")  # expected to record a rejection
DATA_TABLES = tuple(t for t in TABLES if t not in BOOKKEEPING_TABLES)
# a tiny model for the gate and pipeline tests: 2 CV splits, 40 rounds, the pooled model in every regime (none has 10**6 rows)
# tiny-data tests: their windows of a few sessions cannot spare the features' memory (461 rows, the default embargo)
# after each fold, so they embargo the longest window only (200): fine for testing mechanics, not for judging a model
TINY_TRAIN = TrainConfig(n_splits=2, max_rounds=40, min_regime_rows=10**6, top_k_features=15, shap_rows=50, min_embargo_bars=200)


def table_fingerprint(con, table: str) -> tuple:
    "(row count, order-free sum of row hashes) of one table."
    return tuple(con.execute(f"SELECT count(*), sum(hash(t)) FROM {table} t").fetchall()[0])


def warehouse_fingerprint(con, tables=DATA_TABLES) -> dict:
    "Fingerprint of every table in `tables` (by default all but the bookkeeping tables)."
    return {t: table_fingerprint(con, t) for t in tables}


@pytest.fixture
def fail_second_insert(monkeypatch):
    "fail(module) makes `module.insert_rows` raise OSError('injected ...') on its 2nd call; returns the list of tables written to."
    def fail(module) -> list:
        real, calls = module.insert_rows, []
        def failing(c, table, frame, batch_id=None):
            calls.append(table)
            if len(calls) == 2: raise OSError("injected write failure on the second table")
            return real(c, table, frame, batch_id)
        monkeypatch.setattr(module, "insert_rows", failing)
        return calls
    return fail


@pytest.fixture
def fingerprint():
    "The `warehouse_fingerprint` helper."
    return warehouse_fingerprint


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    "A run configuration whose data directory is this test's tmp_path."
    return RunConfig(data_dir=str(tmp_path / "data"))


@pytest.fixture
def con(cfg):
    "A fresh, empty warehouse."
    c = connect(cfg)
    yield c
    c.close()


@pytest.fixture(scope="session")
def simulated_template(tmp_path_factory) -> Path:
    "A closed warehouse file holding a 2-day NSE simulation (seed 0, 1 Aug 2025), built once per session."
    from oi_ml.simulate import simulate_market
    root = tmp_path_factory.mktemp("template")
    run_cfg = RunConfig(data_dir=str(root))
    c = connect(run_cfg)
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=run_cfg)
    c.close()
    return run_cfg.db_path


@pytest.fixture
def sim_con(cfg, simulated_template):
    "A private, writable copy of the simulated template warehouse, in this test's data directory."
    cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(simulated_template, cfg.db_path)
    c = connect(cfg)
    yield c
    c.close()


def private_copy(cfg: RunConfig, tmp_path: Path) -> RunConfig:
    "A run config over a writable copy of `cfg`'s data directory (warehouse, datasets, models) under `tmp_path`."
    shutil.copytree(cfg.data_dir, tmp_path / "data")
    return RunConfig(data_dir=str(tmp_path / "data"))


def deploy_tiny_model(root: Path, reason: str, live_rows: int | None = None,
                      force_selected: str | None = None):   # a column forced into the selection in place of its last-ranked pick
    """(run config, time-sorted raw dataset rows, run manifest) of a tiny model trained on 8 simulated days and deployed;
    `live_rows` sets RunConfig.monitoring.live_rows (the length of the training windows behind the drift levels);
    `force_selected` makes the model read a column its selector would not pick (e.g. `regime_prob_1`)."""
    from oi_ml.datasets import export_training_window, load_dataset
    from oi_ml.registry import deploy_model
    from oi_ml.simulate import simulate_market
    from oi_ml.train import train_model
    cfg = RunConfig(data_dir=str(root / "data"))
    if live_rows: cfg = dataclasses.replace(cfg, monitoring=dataclasses.replace(cfg.monitoring, live_rows=live_rows))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=8, run_cfg=cfg)
        dm = export_training_window(con, "NSE", run_cfg=cfg)
    small = TrainConfig(n_splits=3, min_regime_rows=600, max_rounds=60, top_k_features=20, shap_rows=200)
    with pytest.MonkeyPatch.context() as mp:
        if force_selected:
            import oi_ml.train as train_mod
            real = train_mod.select_features
            def select(*args):
                picked = real(*args)
                return picked if force_selected in picked else sorted(picked[:-1] + [force_selected])
            mp.setattr(train_mod, "select_features", select)
        manifest = train_model("NSE", dm["version"], cfg=small, run_cfg=cfg)
    deploy_model("NSE", manifest["run_id"], "pytest", reason, run_cfg=cfg, ungated=True)   # a fixture model, not gated
    raw, _ = load_dataset("NSE", dm["version"], cfg)
    return cfg, raw.sort_values(["timestamp", "symbol"], kind="mergesort").reset_index(drop=True), manifest


def record_fsync_events(monkeypatch, fail=lambda path: False, registrations: bool = False) -> list:
    """Log `fsync_path` calls ("fsync", path) wherever it is looked up (datasets, train) and `os.replace` renames
    ("rename", src, dst) in order, with `registrations` also dataset registrations ("register",); the flush of a path for
    which `fail(path)` is true raises EIO (a failing disk)."""
    import errno
    import os

    import oi_ml.datasets as datasets
    import oi_ml.train as train_mod
    events, real_fsync, real_replace, real_record = [], datasets.fsync_path, os.replace, datasets.record_training_batch
    def fsync_path(path):
        events.append(("fsync", Path(path)))
        if fail(Path(path)): raise OSError(errno.EIO, "simulated I/O error", str(path))
        return real_fsync(path)
    def replace(src, dst):
        events.append(("rename", Path(src), Path(dst))); return real_replace(src, dst)
    def record(*args, **kwargs):
        events.append(("register",)); return real_record(*args, **kwargs)
    monkeypatch.setattr(datasets, "fsync_path", fsync_path)
    monkeypatch.setattr(train_mod, "fsync_path", fsync_path, raising=False)
    monkeypatch.setattr(os, "replace", replace)
    if registrations: monkeypatch.setattr(datasets, "record_training_batch", record)
    return events

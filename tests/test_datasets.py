"""Integration and fault tests of `oi_ml.datasets`: content-addressed versions (same window -> same version and
byte-identical files), manifest fields checked against the files themselves, tamper/deletion detection naming the
file, suffixed versions for new content, and no orphan folders when writing or registration fails."""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import record_fsync_events

from oi_ml import datasets
from oi_ml.config import RunConfig, config_to_dict
from oi_ml.datasets import (
    DATASET_FILES,
    DatasetIntegrityError,
    dataset_dir,
    export_training_window,
    latest_dataset_version,
    list_datasets,
    load_dataset,
    load_manifest,
    verify_dataset,
)
from oi_ml.simulate import simulate_market
from oi_ml.store import build_ml_features, connect

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-\d+)?$")
REQUIRED_FIELDS = {"version", "exchange", "window_start", "window_end", "row_count", "columns", "completeness", "files",
                   "content_sha256", "source", "simulated", "config", "git_commit", "packages", "batches", "created_at"}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folders(cfg, exchange="NSE"):
    root = cfg.datasets_dir / exchange
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def registry(con):
    return con.execute("SELECT exchange, version, row_count, content_sha256, manifest_path FROM dataset_registry ORDER BY version").fetchall()


# ---------------------------------------------------------------- versions and hashes
def test_exporting_the_same_window_twice_gives_the_same_version_and_files(sim_con, cfg):
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    hashes = {name: sha256(dataset_dir("NSE", first["version"], cfg) / name) for name in DATASET_FILES}
    second = export_training_window(sim_con, "nse", run_cfg=cfg)                       # exchange is case-insensitive
    assert second["version"] == first["version"] == "2025-08-04" and second == first
    assert {name: sha256(dataset_dir("NSE", first["version"], cfg) / name) for name in DATASET_FILES} == hashes
    assert folders(cfg) == ["2025-08-04"] and len(registry(sim_con)) == 1


def test_manifest_records_what_the_files_hold(sim_con, cfg):
    manifest = export_training_window(sim_con, "NSE", run_cfg=cfg)
    folder = dataset_dir("NSE", manifest["version"], cfg)
    assert REQUIRED_FIELDS <= set(manifest) and VERSION_RE.match(manifest["version"])
    assert json.loads((folder / "manifest.json").read_text()) == manifest == load_manifest("NSE", manifest["version"], cfg)
    frame, _ = load_dataset("NSE", manifest["version"], cfg)
    assert manifest["exchange"] == "NSE" and manifest["row_count"] == len(frame) == 750
    assert pd.Timestamp(manifest["window_start"]) == frame.timestamp.min() == pd.Timestamp("2025-08-01 03:45", tz="UTC")
    assert pd.Timestamp(manifest["window_end"]) == frame.timestamp.max() == pd.Timestamp("2025-08-04 09:59", tz="UTC")
    assert manifest["columns"] == {c: str(t) for c, t in frame.dtypes.items()}
    assert manifest["completeness"] == {c: pytest.approx(frame[c].notna().mean(), abs=1e-6) for c in frame.columns}
    assert manifest["completeness"]["fii_flow"] == 0.5                                 # first session: no flow published yet
    for name in DATASET_FILES:
        info = manifest["files"][name]
        assert info["sha256"] == sha256(folder / name) and info["bytes"] == (folder / name).stat().st_size
        assert info["rows"] == len(pd.read_parquet(folder / name))
    expected_content = hashlib.sha256("".join(f"{n}:{manifest['files'][n]['sha256']};" for n in sorted(DATASET_FILES)).encode()).hexdigest()
    assert manifest["content_sha256"] == expected_content
    assert manifest["source"] == "simulated" and manifest["simulated"] is True and manifest["symbols"] == ["NIFTY"]
    assert manifest["config"] == json.loads(json.dumps(config_to_dict(cfg)))
    assert re.match(r"^([0-9a-f]{40}(\+dirty)?|unknown)$", manifest["git_commit"])
    assert manifest["packages"]["numpy"] == np.__version__ and manifest["packages"]["pandas"] == pd.__version__
    assert [b["batch_id"] for b in manifest["batches"]] == ["sim-NSE-2025-08-01-2025-08-04-seed0-s1"]
    assert manifest["batches"][0]["config"]["seed"] == 0 and manifest["batches"][0]["kind"] == "simulate"
    assert registry(sim_con) == [("NSE", manifest["version"], 750, manifest["content_sha256"], str(folder / "manifest.json"))]
    export = sim_con.execute("SELECT kind, status, rows_stored FROM training_batches WHERE batch_id = ?",
                             [f"export-NSE-{manifest['version']}"]).fetchall()
    assert export == [("export", "stored", 750)]


def test_chain_file_holds_the_window_of_the_warehouse(sim_con, cfg):
    manifest = export_training_window(sim_con, "NSE", start="2025-08-04", run_cfg=cfg)
    assert manifest["row_count"] == 375
    chain, _ = load_dataset("NSE", manifest["version"], cfg, table="option_chain")
    stored = sim_con.execute("SELECT count(*) FROM option_chain_snapshots WHERE timestamp >= '2025-08-04'").fetchall()[0][0]
    assert len(chain) == stored == 125 * 2 * 2 * 21 and "batch_id" not in chain
    keys = DATASET_FILES["option_chain.parquet"]
    assert chain[keys].equals(chain[keys].sort_values(keys).reset_index(drop=True))       # rows in key order


def test_new_content_for_the_same_end_date_gets_a_suffix_and_old_versions_stay(sim_con, cfg):
    v1 = export_training_window(sim_con, "NSE", run_cfg=cfg)
    v2 = export_training_window(sim_con, "NSE", start="2025-08-04", run_cfg=cfg)
    simulate_market(sim_con, "NSE", "2025-08-01", n_days=2, seed=1, run_cfg=cfg)         # same window, new content
    v3 = export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert [v1["version"], v2["version"], v3["version"]] == ["2025-08-04", "2025-08-04-2", "2025-08-04-3"]
    assert len({v1["content_sha256"], v2["content_sha256"], v3["content_sha256"]}) == 3
    for v in (v1, v2, v3):
        assert verify_dataset("NSE", v["version"], cfg)["content_sha256"] == v["content_sha256"]   # immutable
    assert list(list_datasets(cfg).version) == ["2025-08-04", "2025-08-04-2", "2025-08-04-3"]
    assert latest_dataset_version("NSE", cfg) == "2025-08-04-3"
    assert [r[1] for r in registry(sim_con)] == ["2025-08-04", "2025-08-04-2", "2025-08-04-3"]


def test_fresh_warehouses_with_the_same_seed_give_the_same_dataset(tmp_path, sim_con, cfg):
    "Two runs on two machines: the chain file is byte-identical, the features equal (gex to rounding)."
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    other_cfg = RunConfig(data_dir=str(tmp_path / "other"))
    c = connect(other_cfg)
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=0, run_cfg=other_cfg)
    second = export_training_window(c, "NSE", run_cfg=other_cfg)
    assert second["version"] == first["version"]
    assert second["files"]["option_chain.parquet"] == first["files"]["option_chain.parquet"]
    a, _ = load_dataset("NSE", first["version"], cfg)
    b, _ = load_dataset("NSE", second["version"], other_cfg)
    pd.testing.assert_frame_equal(a.drop(columns="gex"), b.drop(columns="gex"))
    np.testing.assert_allclose(a.gex, b.gex, rtol=1e-12)


def test_rebuilding_features_from_the_same_raw_data_keeps_the_dataset_version(sim_con, cfg):
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    versions = set()
    for threads in (1, 4, 4):                                   # another machine may have another core count
        sim_con.execute(f"SET threads = {threads}")
        build_ml_features(sim_con, "NSE")
        versions.add(export_training_window(sim_con, "NSE", run_cfg=cfg)["version"])
    assert versions == {first["version"]}


def test_another_seed_gives_another_content_hash(tmp_path, sim_con, cfg):
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    other_cfg = RunConfig(data_dir=str(tmp_path / "other"))
    c = connect(other_cfg)
    simulate_market(c, "NSE", "2025-08-01", n_days=2, seed=1, run_cfg=other_cfg)
    second = export_training_window(c, "NSE", run_cfg=other_cfg)
    assert all(second["files"][n]["sha256"] != first["files"][n]["sha256"] for n in DATASET_FILES)


# ---------------------------------------------------------------- integrity on load
@pytest.mark.parametrize("name", list(DATASET_FILES))
def test_a_tampered_file_is_refused_naming_it(sim_con, cfg, name):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    path = dataset_dir("NSE", version, cfg) / name
    data = bytearray(path.read_bytes()); data[len(data) // 2] ^= 0x01; path.write_bytes(bytes(data))   # one bit
    with pytest.raises(DatasetIntegrityError, match=re.escape(str(path)) + ": sha256"):
        load_dataset("NSE", version, cfg)
    with pytest.raises(DatasetIntegrityError, match=name):
        verify_dataset("NSE", version, cfg)


@pytest.mark.parametrize("name", list(DATASET_FILES))
def test_a_deleted_file_is_refused_naming_it(sim_con, cfg, name):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    (dataset_dir("NSE", version, cfg) / name).unlink()
    with pytest.raises(DatasetIntegrityError, match=re.escape(name) + ": file listed in the manifest is missing"):
        load_dataset("NSE", version, cfg)


def test_unverified_load_reads_the_file_as_is(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    path = dataset_dir("NSE", version, cfg) / "ml_features.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[:10].to_parquet(path)
    assert len(load_dataset("NSE", version, cfg, verify=False)[0]) == 10
    with pytest.raises(DatasetIntegrityError):
        load_dataset("NSE", version, cfg)


def test_missing_versions_and_bad_arguments_fail_clearly(con, sim_con, cfg):
    with pytest.raises(FileNotFoundError, match="no dataset versions for NSE"):
        latest_dataset_version("NSE", cfg)
    with pytest.raises(FileNotFoundError, match="2030-01-01"):
        load_manifest("NSE", "2030-01-01", cfg)
    with pytest.raises(ValueError, match="unsupported format 'csv'"):
        export_training_window(sim_con, "NSE", fmt="csv", run_cfg=cfg)
    with pytest.raises(ValueError, match="no ml_features rows for BSE"):
        export_training_window(sim_con, "BSE", run_cfg=cfg)
    assert folders(cfg) == [] and folders(cfg, "BSE") == []


# ---------------------------------------------------------------- no orphans on failure
def test_a_failed_registration_leaves_no_folder_and_no_registry_row(sim_con, cfg, monkeypatch):
    def failing(*args, **kwargs): raise OSError("injected registration failure")
    monkeypatch.setattr(datasets, "record_training_batch", failing)
    with pytest.raises(OSError, match="injected"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert folders(cfg) == [] and registry(sim_con) == []                                   # no orphan, no staging left
    assert list_datasets(cfg).empty
    monkeypatch.undo()
    assert export_training_window(sim_con, "NSE", run_cfg=cfg)["version"] == "2025-08-04"   # the id was not burnt
    assert folders(cfg) == ["2025-08-04"]


def test_a_failed_file_write_leaves_no_staging_folder(sim_con, cfg, monkeypatch):
    calls = []

    def failing(con, sql, params, path, row_group_size=256_000):   # the second file (the streamed option chain)
        calls.append(path)
        raise OSError("injected disk full")
    monkeypatch.setattr(datasets, "write_query_parquet", failing)
    with pytest.raises(OSError, match="injected"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert len(calls) == 1 and folders(cfg) == [] and registry(sim_con) == []


# ---------------------------------------------------------------- derived tables: the file and its manifest entry switch together
def _derived_frame(x: float) -> pd.DataFrame:
    return pd.DataFrame({"symbol": ["NIFTY"] * 3, "timestamp": pd.date_range("2025-08-01", periods=3, tz="UTC"), "x": [x] * 3})


def test_a_failure_before_the_manifest_switch_keeps_the_old_derived_table(sim_con, cfg, monkeypatch):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)
    files_before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace = datasets.os.replace

    def failing_replace(src, dst):                       # the manifest switch fails (e.g. disk full)
        if str(dst).endswith("manifest.json"): raise OSError("injected: manifest rename failed")
        return real_replace(src, dst)
    monkeypatch.setattr(datasets.os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        datasets.write_derived("NSE", version, "features", _derived_frame(9.0), {"v": 2}, cfg)
    monkeypatch.undo()
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [1.0] * 3        # old table, hash ok
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files_before                  # nothing half-written left
    datasets.write_derived("NSE", version, "features", _derived_frame(2.0), {"v": 2}, cfg)       # and a retry works
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [2.0] * 3
    assert len([p for p in folder.iterdir() if p.name.startswith("features.")]) == 1                     # the old file was removed


# ---------------------------------------------------------------- a corrupt manifest is reported, not hidden
@pytest.mark.parametrize("corrupt, message", [(lambda text: text[:200], r"manifest\.json: not valid JSON"),
                                              (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "files"}),
                                               r"manifest\.json: missing key\(s\) 'files'")])
def test_a_corrupt_dataset_manifest_is_named_and_listed(sim_con, cfg, corrupt, message):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    path = dataset_dir("NSE", version, cfg) / "manifest.json"
    path.write_text(corrupt(path.read_text()))
    listed = list_datasets(cfg)
    assert listed.version.tolist() == [version] and re.search(message, listed.problem.iloc[0])
    for call in (lambda: verify_dataset("NSE", version, cfg), lambda: load_dataset("NSE", version, cfg),
                 lambda: load_manifest("NSE", version, cfg), lambda: latest_dataset_version("NSE", cfg)):
        with pytest.raises(DatasetIntegrityError, match=message):
            call()
    corrupt_bytes = path.read_bytes()
    again = export_training_window(sim_con, "NSE", run_cfg=cfg)                 # never written over the corrupt version
    assert again["version"] != version and path.read_bytes() == corrupt_bytes


# ---------------------------------------------------------------- a hand-edited manifest covering a tampered file
def test_a_manifest_edited_to_cover_a_tampered_file_is_refused(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    frame = pd.read_parquet(folder / "ml_features.parquet"); frame.loc[0, "close"] *= 10
    frame.to_parquet(folder / "ml_features.parquet")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["ml_features.parquet"]["sha256"] = sha256(folder / "ml_features.parquet")   # the file hash re-computed
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetIntegrityError, match=r"manifest\.json: content_sha256 .* differs from the hash of its files"):
        verify_dataset("NSE", version, cfg)
    names = sorted(manifest["files"])                                       # reference content hash: the documented formula
    manifest["content_sha256"] = hashlib.sha256("".join(f"{n}:{manifest['files'][n]['sha256']};" for n in names).encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({**manifest, "row_count": 99999}))
    with pytest.raises(DatasetIntegrityError, match="row_count 99999 differs"):
        verify_dataset("NSE", version, cfg)
    (folder / "manifest.json").write_text(json.dumps(manifest))              # edited consistently: only the warehouse knows
    assert verify_dataset("NSE", version, cfg)["version"] == version
    with pytest.raises(DatasetIntegrityError, match="differ from the warehouse's dataset_registry"):
        verify_dataset("NSE", version, cfg, con=sim_con)


def test_an_untouched_version_passes_the_warehouse_check(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    assert verify_dataset("NSE", version, cfg, con=sim_con)["version"] == version


def test_a_rehashed_truncated_parquet_is_named(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    path = folder / "option_chain.parquet"; path.write_bytes(path.read_bytes()[:100])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["option_chain.parquet"]["sha256"] = sha256(path)
    names = sorted(manifest["files"])
    manifest["content_sha256"] = hashlib.sha256("".join(f"{n}:{manifest['files'][n]['sha256']};" for n in names).encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetIntegrityError, match=r"option_chain\.parquet: not a readable Parquet file"):
        verify_dataset("NSE", version, cfg)


# ---------------------------------------------------------------- re-exporting the content of a damaged version
@pytest.mark.parametrize("damage", ["flip a bit", "delete"])
@pytest.mark.parametrize("name", list(DATASET_FILES))
def test_re_exporting_restores_a_damaged_file_of_the_same_content(sim_con, cfg, name, damage):
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    path = dataset_dir("NSE", first["version"], cfg) / name
    good = path.read_bytes()
    if damage == "delete": path.unlink()
    else: data = bytearray(good); data[len(data) // 2] ^= 0x01; path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"dataset NSE/{first['version']} failed verification .*{re.escape(name)}.*restored \['{re.escape(name)}'\]"):
        again = export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert again == first and path.read_bytes() == good                     # the same version, its bytes restored
    assert verify_dataset("NSE", first["version"], cfg, con=sim_con) == first
    assert folders(cfg) == [first["version"]] and len(registry(sim_con)) == 1   # no new version, no staging left


def test_a_damaged_version_that_cannot_be_restored_is_refused_and_left_as_it_was(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["option_chain.parquet"]["rows"] = 99999                 # the files are sound, the manifest not
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DatasetIntegrityError, match=rf"dataset NSE/{version} holds this export's content but fails verification.*the manifest says 99999"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and folders(cfg) == [version]


def test_re_exporting_into_a_new_warehouse_registers_the_existing_version(tmp_path, sim_con, cfg, simulated_template):
    first = export_training_window(sim_con, "NSE", run_cfg=cfg)
    fresh_db = tmp_path / "other.duckdb"
    shutil.copyfile(simulated_template, fresh_db)                           # the same raw data, no dataset registered
    c = connect(fresh_db)                                                   # the datasets folder stays cfg's
    try:
        assert registry(c) == []
        assert export_training_window(c, "NSE", run_cfg=cfg) == first
        assert [row[:4] for row in registry(c)] == [("NSE", first["version"], first["row_count"], first["content_sha256"])]
        assert verify_dataset("NSE", first["version"], cfg, con=c) == first
    finally: c.close()


def test_a_registry_row_with_other_content_is_refused_before_anything_is_restored(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    path = dataset_dir("NSE", version, cfg) / "ml_features.parquet"
    path.unlink()
    sim_con.execute("UPDATE dataset_registry SET row_count = row_count + 1")
    with pytest.raises(DatasetIntegrityError, match="differ from the warehouse's dataset_registry"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert not path.exists() and folders(cfg) == [version]                 # nothing touched, no staging left


def test_a_renamed_version_folder_is_named_not_reported_missing(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    renamed = dataset_dir("NSE", version, cfg).rename(cfg.datasets_dir / "NSE" / f"{version}-backup")
    with pytest.raises(DatasetIntegrityError, match=re.escape(f"{renamed}/manifest.json: the manifest is of dataset NSE/{version}, "
                                                              f"not of NSE/{version}-backup")):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert list_datasets(cfg).problem.str.contains("not named like a dataset version").tolist() == [True]


def test_a_registered_version_whose_folder_is_gone_keeps_its_id(sim_con, cfg):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    shutil.rmtree(dataset_dir("NSE", version, cfg))
    again = export_training_window(sim_con, "NSE", run_cfg=cfg)              # was: a duckdb ConstraintException
    assert again["version"] == f"{version}-2" and folders(cfg) == [again["version"]]
    assert [r[1] for r in registry(sim_con)] == [version, again["version"]]


# ---------------------------------------------------------------- staging folders of killed exports
STALLED_EXPORT = """
import sys, time
from oi_ml import datasets
from oi_ml.config import RunConfig
from oi_ml.store import connect
real = datasets.write_parquet_deterministic
def stall(*args, **kwargs):
    info = real(*args, **kwargs); print("written", flush=True); time.sleep(600); return info
datasets.write_parquet_deterministic = stall
datasets.export_training_window(connect(sys.argv[1]), "NSE", run_cfg=RunConfig(data_dir=sys.argv[2]))
"""


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export_not_while_it_runs(tmp_path, sim_con, cfg, simulated_template):
    "An export killed with SIGKILL leaves `.staging-*` (was: kept forever); the next export removes it, never a running one's."
    own_warehouse = tmp_path / "child.duckdb"; shutil.copyfile(simulated_template, own_warehouse)   # sim_con holds cfg's
    child = subprocess.Popen([sys.executable, "-c", STALLED_EXPORT, str(own_warehouse), str(cfg.data_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "written"                   # mid-export: ml_features.parquet is staged
        (staging,) = [p for p in (cfg.datasets_dir / "NSE").iterdir() if p.name.startswith(".staging-")]
        version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
        assert staging.exists()                                              # its export is running: left alone
    finally:
        child.kill(); child.wait()
    assert staging.exists() and list(list_datasets(cfg).version) == [version]   # listing ignores it
    with pytest.raises(FileNotFoundError, match="not a dataset version"):
        load_dataset("NSE", staging.name, cfg)
    assert export_training_window(sim_con, "NSE", run_cfg=cfg)["version"] == version
    assert folders(cfg) == [version]                                         # the dead export's folder is gone


def test_a_staging_folder_killed_after_its_manifest_is_written_is_never_a_version(sim_con, cfg):
    "A staging folder holding a complete manifest (killed just before the rename) is not listed, not loadable, and swept."
    manifest = export_training_window(sim_con, "NSE", run_cfg=cfg)
    staging = cfg.datasets_dir / "NSE" / ".staging-killed"
    shutil.copytree(dataset_dir("NSE", manifest["version"], cfg), staging)
    assert list(list_datasets(cfg).version) == [manifest["version"]]
    for load in (load_manifest, verify_dataset, load_dataset):
        with pytest.raises(FileNotFoundError, match="not a dataset version"):
            load("NSE", staging.name, cfg)
    export_training_window(sim_con, "NSE", start="2025-08-04", run_cfg=cfg)
    assert not staging.exists() and ".staging-killed" not in folders(cfg)


# ---------------------------------------------------------------- only a version id is a version, read from its own manifest
def datasets_snapshot(cfg) -> dict:
    "Bytes of every file under the datasets folder, by relative path."
    return {p.relative_to(cfg.datasets_dir).as_posix(): p.read_bytes() for p in sorted(cfg.datasets_dir.rglob("*")) if p.is_file()}


def bse_copy(cfg, version: str, name: str) -> Path:
    "NSE's version `version` copied as BSE's version `name`, its manifest saying so (a sound BSE version as far as it can tell)."
    folder = cfg.datasets_dir / "BSE" / name
    shutil.copytree(dataset_dir("NSE", version, cfg), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "exchange": "BSE", "version": name, "derived": {}}))
    return folder


ENTRY_POINTS = {   # every function that takes an (exchange, version) of a dataset
    "dataset_dir": lambda v, cfg: dataset_dir("NSE", v, cfg),
    "load_manifest": lambda v, cfg: load_manifest("NSE", v, cfg),
    "verify_dataset": lambda v, cfg: verify_dataset("NSE", v, cfg),
    "load_dataset": lambda v, cfg: load_dataset("NSE", v, cfg),
    "load_dataset unverified": lambda v, cfg: load_dataset("NSE", v, cfg, verify=False),
    "write_derived": lambda v, cfg: datasets.write_derived("NSE", v, "features", _derived_frame(9.0), {"v": 9}, cfg),
    "load_derived": lambda v, cfg: datasets.load_derived("NSE", v, "features", cfg)}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("given", ["absolute path", "../BSE/<v>", "BSE/<v>", "<v>/", "staging folder", ""])
def test_a_version_that_is_a_path_is_refused_by_every_entry_point_and_nothing_changes(sim_con, cfg, entry, given):
    """Review finding: an absolute path or `../BSE/<v>` was joined as-is, so `oi-ml train --exchange NSE --dataset
    <.../BSE/v>` trained an NSE model on BSE data and `oi-ml features` switched NSE's derived table to one made from
    SENSEX rows. Anything but a version id is refused, naming it, the form expected and NSE's versions."""
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)
    bse = bse_copy(cfg, version, "2025-08-05")
    (cfg.datasets_dir / "NSE" / ".staging-x").mkdir()
    value = {"absolute path": str(bse), "../BSE/<v>": "../BSE/2025-08-05", "BSE/<v>": "BSE/2025-08-05",
             "<v>/": f"{version}/", "staging folder": ".staging-x", "": ""}[given]
    before = datasets_snapshot(cfg)
    with pytest.raises(FileNotFoundError) as refused:
        ENTRY_POINTS[entry](value, cfg)
    assert f"{value!r} is not a dataset version id: expected YYYY-MM-DD or YYYY-MM-DD-n" in str(refused.value)
    assert f"NSE's versions: {version}" in str(refused.value)
    assert datasets_snapshot(cfg) == before                                   # NSE's manifest and derived table as they were
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [1.0] * 3


def test_version_ids_are_what_exports_name_them(sim_con, cfg):
    "The rule is the ids `_new_version_id` makes: `YYYY-MM-DD` and `YYYY-MM-DD-n`, nothing else."
    assert datasets._new_version_id(pd.Timestamp("2025-08-04").date(), {"2025-08-04": 1, "2025-08-04-2": 1}) == "2025-08-04-3"
    for good in ("2025-08-04", "2025-08-04-2", "2025-08-04-12"):
        assert datasets.check_version_id("NSE", good, cfg) == good
    for bad in ("2025-08-04-x", "20250804", "2025-08-04/", "/2025-08-04", "..", None):
        with pytest.raises(FileNotFoundError, match="is not a dataset version id"):
            datasets.check_version_id("NSE", bad, cfg)
    with pytest.raises(FileNotFoundError, match="--dataset 'x' is not a dataset version id.*NSE has no dataset versions yet"):
        datasets.check_version_id("NSE", "x", cfg, option="--dataset")
    with pytest.raises(ValueError, match=r"invalid exchange '\.\./BSE'"):
        dataset_dir("../BSE", "2025-08-04", cfg)


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e != "dataset_dir"])
@pytest.mark.parametrize("foreign", ["copied from BSE", "renamed", "exchange edited"])
def test_a_manifest_of_another_exchange_or_version_is_refused_and_nothing_changes(sim_con, cfg, entry, foreign):
    """A version folder whose manifest names another exchange or version than the one asked for (BSE's version copied
    into NSE's folder under another name, a folder renamed, a manifest's exchange edited) is refused before anything is
    read or written, naming the manifest and both; listing shows it with that problem."""
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)
    nse = cfg.datasets_dir / "NSE"
    if foreign == "copied from BSE": shutil.copytree(bse_copy(cfg, version, version), nse / "2025-08-05"); asked, named = "2025-08-05", f"BSE/{version}"
    if foreign == "renamed": shutil.copytree(nse / version, nse / "2025-08-05"); asked, named = "2025-08-05", f"NSE/{version}"
    if foreign == "exchange edited":
        path = nse / version / "manifest.json"; path.write_text(path.read_text().replace('"exchange": "NSE"', '"exchange": "BSE"'))
        asked, named = version, f"BSE/{version}"
    before = datasets_snapshot(cfg)
    with pytest.raises(DatasetIntegrityError) as refused:
        ENTRY_POINTS[entry](asked, cfg)
    assert str(refused.value).startswith(f"{nse / asked / 'manifest.json'}: the manifest is of dataset {named}, not of NSE/{asked} ")
    assert datasets_snapshot(cfg) == before
    listed = list_datasets(cfg, "NSE").set_index("version").problem
    assert listed[asked].startswith(f"{nse / asked / 'manifest.json'}: the manifest is of dataset {named}")
    with pytest.raises(DatasetIntegrityError, match="cannot tell which version is the latest"):
        latest_dataset_version("NSE", cfg)


# ---------------------------------------------------------------- flushed to disk before it is published or registered
def export_rows(con) -> int:
    return con.execute("SELECT count(*) FROM training_batches WHERE kind = 'export'").fetchone()[0]


def test_an_export_flushes_every_file_and_folder_before_publishing_and_registering_it(sim_con, cfg, monkeypatch):
    """A rename can reach the disk before the data it publishes: every staged file and the staging folder are fsynced
    before the rename, and the exchange folder (the rename) before the registry row, which DuckDB makes durable."""
    events = record_fsync_events(monkeypatch, registrations=True)
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    monkeypatch.undo()
    root = cfg.datasets_dir / "NSE"
    (rename,) = [e for e in events if e[0] == "rename"]
    staging, at = rename[1], events.index(rename)
    assert staging.parent == root and staging.name.startswith(".staging-") and rename[2] == root / version
    written = {staging / p.relative_to(root / version) for p in (root / version).rglob("*")}
    assert {p.name for p in written} == {*DATASET_FILES, "manifest.json"}
    assert written | {staging} <= {e[1] for e in events[:at] if e[0] == "fsync"}          # all on disk before the rename
    after = events[at + 1:]
    assert after.index(("fsync", root)) < after.index(("register",))                       # the rename before the registry row


def test_a_first_export_flushes_the_folders_it_makes_before_it_publishes(sim_con, cfg, monkeypatch):
    """The exchange folder (and the datasets folder) a first export creates are entries in their parents like any rename:
    each new folder's parent is flushed before the version is renamed into it; a failed flush registers nothing."""
    root = cfg.datasets_dir / "NSE"
    made = [p for p in (root, root.parent) if not p.exists()]
    assert root in made
    events = record_fsync_events(monkeypatch, registrations=True)
    export_training_window(sim_con, "NSE", run_cfg=cfg)
    monkeypatch.undo()
    first_rename = next(i for i, e in enumerate(events) if e[0] == "rename")
    assert {("fsync", p.parent) for p in made} <= set(events[:first_rename])


def test_a_failed_flush_of_a_new_exchange_folder_registers_nothing(sim_con, cfg, monkeypatch):
    root = cfg.datasets_dir / "NSE"
    record_fsync_events(monkeypatch, lambda p: p == root.parent, registrations=True)
    with pytest.raises(OSError, match="simulated I/O error"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    monkeypatch.undo()
    assert registry(sim_con) == [] and export_rows(sim_con) == 0 and folders(cfg) == []
    assert export_training_window(sim_con, "NSE", run_cfg=cfg)["version"] == "2025-08-04"


@pytest.mark.parametrize("flushed", ["file", "staging folder", "exchange folder"])
def test_a_failed_flush_fails_the_export_with_nothing_registered(sim_con, cfg, monkeypatch, flushed):
    """A flush that fails (EIO) means the bytes may not be on disk: the export must fail with no version folder, no
    registry row and no staging folder left; one flushing later than its rename (or not at all) would succeed."""
    root = cfg.datasets_dir / "NSE"
    fail = {"file": lambda p: p.name == "option_chain.parquet" and p.parent.name.startswith(".staging-"),
            "staging folder": lambda p: p.parent == root and p.name.startswith(".staging-"),
            "exchange folder": lambda p: p == root}[flushed]
    events = record_fsync_events(monkeypatch, fail, registrations=True)
    with pytest.raises(OSError, match="simulated I/O error"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    monkeypatch.undo()
    assert any(e[0] == "fsync" and fail(e[1]) for e in events)
    assert folders(cfg) == [] and registry(sim_con) == [] and export_rows(sim_con) == 0 and list_datasets(cfg).empty
    assert export_training_window(sim_con, "NSE", run_cfg=cfg)["version"] == "2025-08-04"      # a retry works, id not burnt
    assert folders(cfg) == ["2025-08-04"] and [r[1] for r in registry(sim_con)] == ["2025-08-04"] and export_rows(sim_con) == 1


def test_a_restored_file_is_flushed_before_its_rename_and_the_folder_after(sim_con, cfg, monkeypatch):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    (folder / "option_chain.parquet").unlink()
    events = record_fsync_events(monkeypatch, registrations=True)
    with pytest.warns(UserWarning, match=r"restored \['option_chain\.parquet'\]"):
        export_training_window(sim_con, "NSE", run_cfg=cfg)
    monkeypatch.undo()
    (rename,) = [e for e in events if e[0] == "rename"]
    at = events.index(rename)
    assert rename[2] == folder / "option_chain.parquet" and ("fsync", rename[1]) in events[:at] and ("fsync", folder) in events[at:]


def test_write_derived_flushes_the_table_and_manifest_before_the_switch_and_the_folder_after(sim_con, cfg, monkeypatch):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    old = folder / datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)["file"]
    events, old_there = record_fsync_events(monkeypatch, registrations=True), []
    real = datasets.fsync_path
    monkeypatch.setattr(datasets, "fsync_path", lambda p: (old_there.append(old.exists()) if Path(p) == folder else None, real(p))[1])
    new = datasets.write_derived("NSE", version, "features", _derived_frame(2.0), {"v": 2}, cfg)["file"]
    monkeypatch.undo()
    tmp, tmp_manifest = folder / ".features.parquet.tmp", folder / ".manifest.json.tmp"
    assert events == [("fsync", tmp), ("fsync", tmp_manifest), ("rename", tmp, folder / new),
                      ("rename", tmp_manifest, folder / "manifest.json"), ("fsync", folder)]
    assert old_there == [True] and not old.exists()                     # the old file is deleted only after the flush


@pytest.mark.parametrize("flushed", [".features.parquet.tmp", ".manifest.json.tmp"])
def test_a_failed_flush_of_a_derived_table_keeps_the_old_one(sim_con, cfg, monkeypatch, flushed):
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)
    files_before = {p.name: p.read_bytes() for p in folder.iterdir()}
    record_fsync_events(monkeypatch, lambda p: p.name == flushed, registrations=True)
    with pytest.raises(OSError, match="simulated I/O error"):
        datasets.write_derived("NSE", version, "features", _derived_frame(9.0), {"v": 2}, cfg)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files_before                  # nothing switched or left
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [1.0] * 3
    datasets.write_derived("NSE", version, "features", _derived_frame(2.0), {"v": 2}, cfg)
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [2.0] * 3


def test_features_and_labels_written_side_by_side_both_stay_listed(sim_con, cfg, monkeypatch):
    """`oi-ml features` and `oi-ml labels` on one version at once: the features writer pauses after reading the manifest
    (up to 2 s) while the labels writer runs. Without the folder's flock the labels writer finished in that pause and the
    features switch then replaced the manifest without the labels entry; with it the labels writer waits its turn."""
    import threading
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    features_read, labels_done, errors = threading.Event(), threading.Event(), []
    real_write = datasets.write_parquet_deterministic

    def pausing_write(frame, path, *args, **kwargs):
        out = real_write(frame, path, *args, **kwargs)
        if Path(path).name == ".features.parquet.tmp":          # the features writer has read the manifest
            features_read.set(); labels_done.wait(timeout=2.0)
        return out
    monkeypatch.setattr(datasets, "write_parquet_deterministic", pausing_write)

    def write(name, x, wait=None):
        try:
            if wait is not None: wait.wait(timeout=10)
            datasets.write_derived("NSE", version, name, _derived_frame(x), {"name": name}, cfg)
            if name == "labels": labels_done.set()
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=write, args=("features", 1.0)), threading.Thread(target=write, args=("labels", 2.0, features_read))]
    for t in threads: t.start()
    for t in threads: t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert set(datasets.load_manifest("NSE", version, cfg)["derived"]) == {"features.parquet", "labels.parquet"}
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [1.0] * 3
    assert datasets.load_derived("NSE", version, "labels", cfg).x.tolist() == [2.0] * 3
    assert sorted(p.name.split(".")[0] for p in folder.glob("*.parquet") if p.name.startswith(("features.", "labels."))) == ["features", "labels"]
    assert not list(folder.glob(".*.tmp"))


def test_a_failed_folder_flush_after_the_switch_leaves_the_new_table_and_the_next_write_removes_the_old(sim_con, cfg, monkeypatch):
    "The switch happened, the folder flush failed: the error reaches the caller, the manifest lists the new (whole) table and the old file stays until the next write of that table removes it."
    version = export_training_window(sim_con, "NSE", run_cfg=cfg)["version"]
    folder = dataset_dir("NSE", version, cfg)
    old = folder / datasets.write_derived("NSE", version, "features", _derived_frame(1.0), {"v": 1}, cfg)["file"]
    record_fsync_events(monkeypatch, lambda p: p == folder)
    with pytest.raises(OSError, match="simulated I/O error"):
        datasets.write_derived("NSE", version, "features", _derived_frame(2.0), {"v": 2}, cfg)
    monkeypatch.undo()
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [2.0] * 3       # the switch stands, hash ok
    verify_dataset("NSE", version, cfg)
    assert old.exists()                                                                          # not deleted before a flush
    newest = datasets.write_derived("NSE", version, "features", _derived_frame(3.0), {"v": 3}, cfg)["file"]
    assert sorted(p.name for p in folder.glob("features.*.parquet")) == [newest]                # the unlisted old file is gone too
    assert datasets.load_derived("NSE", version, "features", cfg).x.tolist() == [3.0] * 3


# ---------------------------------------------------------------- provenance of every input, not only the bars
def _ohlcv_csv(path, day: str = "2025-08-05", start_price: float = 24_000.0) -> str:
    "One IST session of 1-minute OHLCV bars (09:15-15:29) as an importable CSV."
    times = pd.date_range(f"{day} 09:15", periods=375, freq="1min", tz="Asia/Kolkata")
    close = start_price + np.cumsum(np.random.default_rng(0).normal(0, 3, len(times)))
    open_ = np.r_[start_price, close[:-1]]
    pd.DataFrame({"timestamp": [t.isoformat() for t in times], "open": open_, "high": np.maximum(open_, close) + 1,
                  "low": np.minimum(open_, close) - 1, "close": close, "volume": 1000}).to_csv(path, index=False)
    return str(path)


def test_imported_bars_with_the_simulators_chain_and_flows_are_recorded_as_mixed(sim_con, cfg, tmp_path):
    "Imported bars of 5 Aug joined as of the simulator's 4 Aug chain and flows: the manifest says mixed and names the simulated inputs and batch."
    from oi_ml.ingest import import_ohlcv
    import_ohlcv(sim_con, _ohlcv_csv(tmp_path / "nifty.csv"), "NIFTY", run_cfg=cfg)
    manifest = export_training_window(sim_con, "NSE", start="2025-08-05", run_cfg=cfg)
    frame, _ = load_dataset("NSE", manifest["version"], cfg)
    assert set(frame.source) == {"imported"} and frame.fii_flow.notna().sum() == 375       # every bar imported, the flows simulated
    assert manifest["simulated"] is True and manifest["source"] == "imported+simulated" and manifest["data_origin"] == "mixed"
    inputs = manifest["inputs"]
    assert inputs["underlying_bars"]["sources"] == {"imported": 375}
    assert inputs["fii_flow"]["sources"] == {"simulated": 375} and inputs["fii_flow"]["table"] == "macro_signals"
    assert frame.call_oi.notna().sum() > 0 and inputs["option_chain"]["sources"] == {"simulated": int(frame.call_oi.notna().sum())}
    sim_batch = "sim-NSE-2025-08-01-2025-08-04-seed0-s1"
    assert sim_batch in inputs["fii_flow"]["batches"] and sim_batch in [b["batch_id"] for b in manifest["batches"]]
    assert manifest["row_origin"] == {"imported": 0, "simulated": 0, "mixed": 375}
    assert list_datasets(cfg).source.tolist() == ["imported+simulated"]


def test_a_dataset_of_imported_bars_alone_is_imported_and_a_simulated_one_simulated(sim_con, cfg, tmp_path):
    "Only imported inputs (BSE, beside a simulated NSE): data_origin imported, simulated false, every row imported; NSE: every row simulated."
    from oi_ml.ingest import import_ohlcv
    import_ohlcv(sim_con, _ohlcv_csv(tmp_path / "nifty.csv", day="2025-09-03"), "NIFTY", exchange="BSE", run_cfg=cfg)
    real = export_training_window(sim_con, "BSE", run_cfg=cfg)
    assert (real["data_origin"], real["simulated"], real["source"]) == ("imported", False, "imported")
    assert real["row_origin"] == {"imported": 375, "simulated": 0, "mixed": 0} and list(real["inputs"]) == ["underlying_bars"]
    assert [b["file"] for b in real["batches"]] == [str((tmp_path / "nifty.csv").resolve())]
    sim = export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert sim["data_origin"] == "simulated" and sim["row_origin"] == {"imported": 0, "simulated": 750, "mixed": 0}


# ---------------------------------------------------------------- review: the latest version, one symbol per version, window errors
def ohlcv_sessions_csv(path, days=("2025-08-01", "2025-08-04"), start_price: float = 52_000.0) -> str:
    "IST sessions of 1-minute OHLCV bars (09:15-15:29) as one importable CSV: a second index beside the simulated NIFTY."
    frames = [pd.read_csv(_ohlcv_csv(Path(f"{path}.{day}"), day, start_price)) for day in days]
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


def test_the_latest_version_orders_suffixes_as_numbers(sim_con, cfg):
    """Review proof: version ids sorted as text put 2025-08-04-10 before -9, so after ten exports ending on one bar every
    command without --dataset read an older version. Eleven windows ending on 4 Aug: the latest is the last export."""
    versions = [export_training_window(sim_con, "NSE", start=f"2025-08-04 09:{m}", run_cfg=cfg)["version"] for m in range(15, 26)]
    assert versions == ["2025-08-04"] + [f"2025-08-04-{n}" for n in range(2, 12)]
    assert latest_dataset_version("NSE", cfg) == "2025-08-04-11"
    assert list(list_datasets(cfg).version) == versions                    # listed in that order too
    assert load_dataset("NSE", run_cfg=cfg)[1]["version"] == "2025-08-04-11"


def test_a_second_index_on_the_exchange_is_exported_only_when_asked_for(sim_con, cfg, tmp_path):
    """Review proof: after `ingest --symbol BANKNIFTY --exchange NSE` every NSE export held both indices, so labels failed on
    'timestamp is not strictly increasing' and training refused it. An export holds one symbol: the index unless
    `symbol` says otherwise, byte for byte the version the one-symbol warehouse gave (same id, files and content hash)."""
    from oi_ml.ingest import import_ohlcv
    from oi_ml.store import load_historical_data_for_ml
    before = export_training_window(sim_con, "NSE", run_cfg=cfg)
    expected = datasets.write_parquet_deterministic(load_historical_data_for_ml(sim_con, "NSE"), tmp_path / "old.parquet",
                                                    DATASET_FILES["ml_features.parquet"])   # what the old, all-symbol export wrote
    assert before["files"]["ml_features.parquet"]["sha256"] == expected["sha256"]
    import_ohlcv(sim_con, ohlcv_sessions_csv(tmp_path / "banknifty.csv"), "BANKNIFTY", exchange="NSE", run_cfg=cfg)
    after = export_training_window(sim_con, "NSE", run_cfg=cfg)
    assert (after["version"], after["content_sha256"], after["symbols"]) == (before["version"], before["content_sha256"], ["NIFTY"])
    bank = export_training_window(sim_con, "NSE", run_cfg=cfg, symbol="banknifty")
    frame, _ = load_dataset("NSE", bank["version"], cfg)
    assert bank["symbols"] == ["BANKNIFTY"] and set(frame.symbol) == {"BANKNIFTY"} and len(frame) == 750
    assert frame.timestamp.is_unique and bank["inputs"]["underlying_bars"]["sources"] == {"imported": 750}
    with pytest.raises(ValueError, match="no ml_features rows of FINNIFTY for NSE: NSE has BANKNIFTY 2025-08-01..2025-08-04, "
                                         r"NIFTY 2025-08-01..2025-08-04 \(IST\); pass one of BANKNIFTY, NIFTY as the symbol \(--symbol\)"):
        export_training_window(sim_con, "NSE", run_cfg=cfg, symbol="FINNIFTY")
    assert datasets.dataset_symbol(bank) == "BANKNIFTY"
    with pytest.raises(ValueError, match=r"dataset NSE/2025-08-04-2 holds 2 symbols \(BANKNIFTY, NIFTY\) but labels, training and "
                                         r"AutoML take one symbol per dataset: export one with `oi-ml export --exchange NSE --symbol BANKNIFTY`"):
        datasets.dataset_symbol({**bank, "symbols": ["BANKNIFTY", "NIFTY"]})


def test_a_window_mistake_is_not_reported_as_an_empty_warehouse(sim_con, cfg):
    """Review proof: a start after the end, or a window before the data, said 'no ml_features rows ... simulate or ingest
    first' of a warehouse holding two sessions. The first names both bounds, the second what the exchange holds; nothing is written."""
    with pytest.raises(ValueError, match="start 2025-08-04 is after end 2025-08-01: the window is empty"):
        export_training_window(sim_con, "NSE", start="2025-08-04", end="2025-08-01", run_cfg=cfg)
    with pytest.raises(ValueError, match=r"no ml_features rows for NSE between 2025-07-01 and 2025-07-31: NSE has NIFTY "
                                         r"2025-08-01..2025-08-04 \(IST\)$"):
        export_training_window(sim_con, "NSE", start="2025-07-01", end="2025-07-31", run_cfg=cfg)
    with pytest.raises(ValueError, match=r"no ml_features rows for BSE: BSE has no ml_features rows \(run `oi-ml simulate` or `oi-ml ingest` first\)"):
        export_training_window(sim_con, "BSE", run_cfg=cfg)
    assert folders(cfg) == [] and registry(sim_con) == []

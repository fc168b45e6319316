"""Integration and fault-injection tests of `oi_ml.registry`: deploy/rollback round trip (pointer, history, logs,
folders kept), tampered runs refused before any change, tampered versions caught on load, a kill at every deploy
and rollback step leaves a valid pointer and consistent logs, stale staging ignored, the lock serialises deploys,
horizon keys (NSE/15m) keep independent pointers and histories, and an exchange-only registry.json still works.
A gate report is bound to the run manifest it judged; a caller-built gate is refused or recorded as ungated; a refused
rollback writes nothing; a run of another index than the one its key serves is refused (one index per exchange and horizon).
Run folders and their manifests are built here with hashlib, independently of the registry's own hashing."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oi_ml.config import RunConfig
from oi_ml.registry import (
    CRASH_ENV,
    DEPLOY_CRASH_POINTS,
    ROLLBACK_CRASH_POINTS,
    ModelIntegrityError,
    RegistryError,
    RegistryLockedError,
    current_version,
    deploy_model,
    list_versions,
    load_version,
    load_version_manifest,
    record_signoff,
    registry_history,
    registry_lock,
    rollback,
    sync_logs,
    verify_run,
)

EXCHANGE = "NSE"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_run(cfg: RunConfig, run_id: str, payload: str, exchange: str = EXCHANGE, extra: dict | None = None,
             gate: dict | None = None, horizon_bars: int | None = None) -> Path:
    "A small run folder as training writes it: artefacts in subfolders and a manifest with their sha256."
    folder = Path(cfg.data_dir) / "models" / exchange / run_id
    report = {"auc": 0.56, "payload": payload}
    if horizon_bars is not None:   # as train_model writes it: config.labels.horizon_bars (1-minute bars)
        report["config"] = {"target": "triple_barrier", "labels": {"horizon_bars": horizon_bars, "profit_mult": 1.5}}
    files = {"models/regime_0.lgb.txt": f"tree 0 {payload}\n", "models/regime_1.lgb.txt": f"tree 1 {payload}\n",
             "regime_hmm.json": json.dumps({"n_regimes": 2, "payload": payload}),
             "model_features.json": json.dumps(["pcr_oi", "vix"]), "calibration.json": json.dumps({"a": 1.5}),
             "reports/training_report.json": json.dumps(report)}
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    manifest = {"run_id": run_id, "exchange": exchange, "dataset_version": f"2025-10-{len(payload):02d}",
                "dataset_sha256": sha(payload.encode()), "target": "tb_15m", "created_at": "2025-10-30T09:00:00+00:00",
                "metrics_summary": {"auc": 0.56}, "files": {rel: sha(text.encode()) for rel, text in files.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for rel, text in (extra or {}).items():   # written after training: not in the run manifest
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    if gate is not None:   # as oi_ml.gate writes it: bound to the manifest it judged (unless the test gives the field)
        write_gate(folder, gate)
    return folder


def write_gate(folder: Path, gate: dict) -> dict:
    "Write the run's reports/gate_report.json, with the sha256 of its manifest.json now unless `gate` names one."
    report = {"candidate_manifest_sha256": sha((folder / "manifest.json").read_bytes()), **gate}
    (folder / "reports" / "gate_report.json").write_text(json.dumps(report))
    return report


def read_gate(folder: Path) -> dict:
    return json.loads((folder / "reports" / "gate_report.json").read_text())


def deploy(*args, **kwargs) -> dict:
    """deploy_model allowing a run without a gate result (ungated): most tests here are about the registry's mechanics.
    A gate result passed in or found in the run's reports is still checked in full."""
    return deploy_model(*args, **{"ungated": True, **kwargs})


def passing_gate(run_id: str, baseline: str | None = None, **more) -> dict:
    "A gate result as oi_ml.gate writes it (the fields deploy checks) that passed, for `run_id` against `baseline`."
    return dict(candidate_run=run_id, baseline=baseline, passed=True, decision="PASS", failed=[], **more)


def tree_hashes(folder: Path) -> dict:
    "Reference: sha256 of every file under `folder` except the top-level manifest.json."
    return {p.relative_to(folder).as_posix(): sha(p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != "manifest.json"}


def models(cfg: RunConfig) -> Path:
    return Path(cfg.data_dir) / "models"


def jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def raw_registry(cfg: RunConfig) -> dict:
    return json.loads((models(cfg) / "registry.json").read_text())


def assert_logs_consistent(cfg: RunConfig) -> None:
    "Every registry event is in deployments.log and the change log exactly once; the markdown has a row per record."
    history_ids = sorted(e["event_id"] for ex in raw_registry(cfg)["exchanges"].values() for e in ex["history"])
    log_ids = [r["event_id"] for r in jsonl(models(cfg) / "deployments.log")]
    assert sorted(log_ids) == history_ids          # sorted: events of several keys interleave in time order
    change = jsonl(models(cfg) / "model_change_log.jsonl")
    assert sorted(r["event_id"] for r in change if r["kind"] != "signoff") == history_ids
    rows = [line for line in (models(cfg) / "MODEL_CHANGE_LOG.md").read_text().splitlines() if line.startswith("| 20")]
    assert len(rows) == len(change)


def leftovers(cfg: RunConfig) -> list[Path]:
    return sorted((models(cfg) / EXCHANGE).glob(".*.staging")) + sorted(models(cfg).glob(".*.tmp"))


@pytest.fixture
def cfg(tmp_path):
    return RunConfig(data_dir=str(tmp_path / "data"))


def test_round_trip(cfg):
    r1, r3 = (make_run(cfg, f"run-20251030-{c * 12}", p) for c, p in (("a", "one"), ("c", "three")))
    r2 = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two", gate=passing_gate("run-20251030-bbbbbbbbbbbb", "v0001", dsr=0.97))
    runs_before = {r: tree_hashes(r) for r in (r1, r2, r3)}
    m1 = deploy(EXCHANGE, r1.name, "asha", "first model", constraints=["paper only"], run_cfg=cfg)
    m2 = deploy_model(EXCHANGE, r2.name, "asha", "retrain", run_cfg=cfg)             # gated by the run's report
    assert (m1["version"], m2["version"], current_version(EXCHANGE, cfg)) == ("v0001", "v0002", "v0002")
    rollback(EXCHANGE, operator="ravi", reason="drawdown", run_cfg=cfg)
    assert current_version(EXCHANGE, cfg) == "v0001"
    deploy(EXCHANGE, r3.name, "asha", "third", run_cfg=cfg)
    rollback(EXCHANGE, operator="ravi", reason="bad fills", run_cfg=cfg)          # back to v0001, not v0002
    assert current_version(EXCHANGE, cfg) == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(EXCHANGE, reason="test", run_cfg=cfg)
    rollback(EXCHANGE, "v0002", operator="ravi", reason="roll forward", run_cfg=cfg)
    rollback(EXCHANGE, reason="test", run_cfg=cfg)                                                # pops back to v0001
    with pytest.raises(RegistryError, match="already the current version"):
        rollback(EXCHANGE, "v0001", reason="test", run_cfg=cfg)

    reg = raw_registry(cfg)["exchanges"][EXCHANGE]
    assert reg["current"] == "v0001"
    assert [(e["action"], e["version"], e["previous_version"]) for e in reg["history"]] == [
        ("deploy", "v0001", None), ("deploy", "v0002", "v0001"), ("rollback", "v0001", "v0002"),
        ("deploy", "v0003", "v0001"), ("rollback", "v0001", "v0003"), ("rollback", "v0002", "v0001"),
        ("rollback", "v0001", "v0002")]
    assert [e["run_id"] for e in reg["history"]][:4] == [r1.name, r2.name, r1.name, r3.name]
    assert list(registry_history(EXCHANGE, cfg).event_id) == [f"NSE-{i:04d}" for i in range(1, 8)]
    assert_logs_consistent(cfg)
    assert leftovers(cfg) == []

    # every version kept, byte-identical to its run, manifest covering every file, and verifiable
    for version, run in (("v0001", r1), ("v0002", r2), ("v0003", r3)):
        folder = models(cfg) / EXCHANGE / version
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["files"] == tree_hashes(folder)
        assert (folder / "run_manifest.json").read_bytes() == (run / "manifest.json").read_bytes()
        for rel in runs_before[run]:
            assert (folder / rel).read_bytes() == (run / rel).read_bytes()
            assert not os.access(folder / rel, os.W_OK) or os.geteuid() == 0      # published files are read-only
        assert manifest["run_id"] == run.name and manifest["dataset_sha256"] == json.loads((run / "manifest.json").read_text())["dataset_sha256"]
        assert load_version_manifest(EXCHANGE, version, run_cfg=cfg)["version"] == version
    assert {r: tree_hashes(r) for r in (r1, r2, r3)} == runs_before                 # runs untouched
    assert list(list_versions(EXCHANGE, cfg).status) == ["current", "archived", "archived"]

    change = jsonl(models(cfg) / "model_change_log.jsonl")
    assert change[0]["constraints"] == ["paper only"] and change[0]["dataset_version"] == "2025-10-03"
    assert change[1]["gate"] == passing_gate(r2.name, "v0001", candidate_manifest_sha256=sha((r2 / "manifest.json").read_bytes()))
    assert change[2]["kind"] == "rollback"                                         # the gate's summary fields, above
    assert (change[0]["ungated"], change[1]["ungated"]) == (True, False)
    assert (change[0]["gate_source"], change[1]["gate_source"]) == (None, "report") and m2["gate"] == read_gate(r2)
    assert change[2]["operator"] == "ravi" and change[2]["reason"] == "drawdown"
    md = (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert "| NSE | deploy | v0002 | run-20251030-bbbbbbbbbbbb |" in md and "| PASS | asha | retrain |" in md
    assert "| NSE | rollback | v0001 |" in md


def test_rollback_walks_back_through_deploys(cfg):
    for c, payload in (("a", "one"), ("b", "two"), ("c", "three")):
        deploy(EXCHANGE, make_run(cfg, f"run-20251030-{c * 12}", payload).name, "asha", "d", run_cfg=cfg)
    assert [rollback(EXCHANGE, reason="test", run_cfg=cfg)["version"] for _ in range(2)] == ["v0002", "v0001"]
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(EXCHANGE, reason="test", run_cfg=cfg)
    assert rollback(EXCHANGE, "v0003", reason="test", run_cfg=cfg)["previous_version"] == "v0001"
    assert rollback(EXCHANGE, reason="test", run_cfg=cfg)["version"] == "v0001"


def test_corrupted_copy_refused(cfg, monkeypatch):
    import oi_ml.registry as registry
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "base", run_cfg=cfg)
    run = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two")
    before, copy = snapshot(cfg), registry._copy_durable

    def flaky_copy(src, dst):   # a disk or copy fault: one byte flipped in one file
        copy(src, dst)
        if dst.name == "calibration.json":
            data = bytearray(dst.read_bytes()); data[0] ^= 1; dst.write_bytes(bytes(data))

    monkeypatch.setattr(registry, "_copy_durable", flaky_copy)
    with pytest.raises(ModelIntegrityError, match=r"\.v0002\.staging/calibration.json: sha256"):
        deploy(EXCHANGE, run.name, "asha", "flaky disk", run_cfg=cfg)
    assert snapshot(cfg) == before and leftovers(cfg) == [] and current_version(EXCHANGE, cfg) == "v0001"


def test_unlisted_run_files_are_copied_and_flagged(cfg):
    run = make_run(cfg, "run-20251030-dddddddddddd", "x", extra={"reports/backtest_summary.json": '{"sharpe": 1.1}'},
                   gate=passing_gate("run-20251030-dddddddddddd"))
    manifest = deploy(EXCHANGE, run.name, "asha", "with reports", run_cfg=cfg)
    assert manifest["unlisted_run_files"] == ["reports/backtest_summary.json", "reports/gate_report.json"]
    assert manifest["gate"] == read_gate(run) and not manifest["ungated"]            # read from the run's gate report
    assert manifest["gate_source"] == "report" and manifest["gate"]["candidate_manifest_sha256"] == sha((run / "manifest.json").read_bytes())
    folder, loaded = load_version(EXCHANGE, run_cfg=cfg)
    assert loaded["files"]["reports/backtest_summary.json"] == sha(b'{"sharpe": 1.1}')
    assert (folder / "reports/backtest_summary.json").read_text() == '{"sharpe": 1.1}'


def snapshot(cfg: RunConfig) -> dict:
    "Every file under data/models except the run folders, with its bytes."
    root = models(cfg)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "/run-" not in "/" + p.relative_to(root).as_posix() and p.name != ".registry.lock"}


@pytest.mark.parametrize("tamper, message", [
    (lambda run: (run / "calibration.json").write_text('{"a": 2.0}'), "calibration.json: sha256"),
    (lambda run: (run / "models/regime_1.lgb.txt").unlink(), "regime_1.lgb.txt: file listed in the manifest is missing"),
    (lambda run: (run / "models/regime_0.lgb.txt").write_text(""), "regime_0.lgb.txt: sha256"),
])
def test_tampered_run_refused_before_any_change(cfg, tamper, message):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "base", run_cfg=cfg)
    run = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two")
    before = snapshot(cfg)
    tamper(run)
    with pytest.raises(ModelIntegrityError, match=message):
        deploy(EXCHANGE, run.name, "asha", "tampered", run_cfg=cfg)
    with pytest.raises(ModelIntegrityError, match=message):
        verify_run(EXCHANGE, run.name, cfg)
    assert snapshot(cfg) == before and current_version(EXCHANGE, cfg) == "v0001"


def test_bad_runs_refused(cfg):
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "exchange": "BSE"}))
    with pytest.raises(RegistryError, match="exchange 'BSE' differs"):
        deploy(EXCHANGE, run.name, "asha", "x", run_cfg=cfg)
    (run / "manifest.json").write_text(json.dumps({**manifest, "files": {"../outside.txt": "0" * 64}}))
    with pytest.raises(ModelIntegrityError, match="unsafe path"):
        deploy(EXCHANGE, run.name, "asha", "x", run_cfg=cfg)
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "link.json").symlink_to(run / "calibration.json")
    with pytest.raises(ModelIntegrityError, match="symlinks are not allowed"):
        deploy(EXCHANGE, run.name, "asha", "x", run_cfg=cfg)
    (run / "link.json").unlink()
    with pytest.raises(RegistryError, match=r"gate did not pass \(deflated_sharpe\)"):
        deploy(EXCHANGE, run.name, "asha", "x", gate={**passing_gate(run.name), "passed": False, "failed": ["deflated_sharpe"]}, run_cfg=cfg)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        deploy(EXCHANGE, "run-20251030-ffffffffffff", "asha", "x", run_cfg=cfg)
    assert current_version(EXCHANGE, cfg) is None and not (models(cfg) / "registry.json").exists()
    assert deploy(EXCHANGE, run.name, "asha", "fine now", run_cfg=cfg)["version"] == "v0001"


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def test_tampered_version_detected_on_load(cfg):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "b", run_cfg=cfg)
    v1 = models(cfg) / EXCHANGE / "v0001"
    original = (v1 / "regime_hmm.json").read_bytes()
    writable(v1 / "regime_hmm.json").write_bytes(original + b" ")
    actual, expected = sha(original + b" "), sha(original)
    with pytest.raises(ModelIntegrityError, match=f"v0001/regime_hmm.json: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}"):
        load_version_manifest(EXCHANGE, "v0001", run_cfg=cfg)
    with pytest.raises(ModelIntegrityError, match="regime_hmm.json: sha256"):           # a tampered target is not rolled back to
        rollback(EXCHANGE, reason="test", run_cfg=cfg)
    assert current_version(EXCHANGE, cfg) == "v0002"
    (v1 / "regime_hmm.json").write_bytes(original)
    assert load_version_manifest(EXCHANGE, "v0001", run_cfg=cfg)["version"] == "v0001"

    (v1 / "models" / "regime_2.lgb.txt").write_text("sneaked in")                       # unlisted file
    with pytest.raises(ModelIntegrityError, match="regime_2.lgb.txt: file not listed"):
        load_version_manifest(EXCHANGE, "v0001", run_cfg=cfg)
    (v1 / "models" / "regime_2.lgb.txt").unlink()

    writable(v1 / "calibration.json").write_text('{"a": 99}')                            # file and manifest both edited
    manifest = json.loads((v1 / "manifest.json").read_text())
    manifest["files"]["calibration.json"] = sha(b'{"a": 99}')
    writable(v1 / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    with pytest.raises(ModelIntegrityError, match="v0001/manifest.json: sha256 .* does not match the registry's"):
        load_version(EXCHANGE, "v0001", run_cfg=cfg)

    v2 = models(cfg) / EXCHANGE / "v0002"
    (v2 / "models" / "regime_0.lgb.txt").unlink()
    with pytest.raises(ModelIntegrityError, match="v0002/models/regime_0.lgb.txt: file listed in the manifest is missing"):
        load_version(EXCHANGE, run_cfg=cfg)


# ---------------------------------------------------------------- fault injection: kill at every step

DEPLOY_EXPECTED = {  # crash point -> (pointer after the kill, version folder the kill left published)
    "deploy.verify_run": ("v0001", False), "deploy.stage": ("v0001", False), "deploy.stage_partial": ("v0001", False),
    "deploy.verify_copy": ("v0001", False), "deploy.publish": ("v0001", False), "deploy.switch": ("v0001", True),
    "deploy.switch_temp": ("v0001", True), "deploy.log": ("v0002", True), "deploy.log_partial": ("v0002", True),
    "deploy.done": ("v0002", True)}
ROLLBACK_EXPECTED = {"rollback.verify": "v0002", "rollback.switch": "v0002", "rollback.switch_temp": "v0002",
                     "rollback.log": "v0001", "rollback.log_partial": "v0001", "rollback.done": "v0001"}


def run_killed(cfg: RunConfig, call: str, crash_at: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = ("from oi_ml.config import RunConfig\nfrom oi_ml.registry import deploy_model, rollback\n"
            f"cfg = RunConfig(data_dir={cfg.data_dir!r})\n{call}\nprint('no crash')")
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, CRASH_ENV: crash_at}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_crash_points_cover_every_step():
    assert set(DEPLOY_EXPECTED) == set(DEPLOY_CRASH_POINTS) and set(ROLLBACK_EXPECTED) == set(ROLLBACK_CRASH_POINTS)


@pytest.mark.parametrize("crash_at", list(DEPLOY_EXPECTED))
def test_deploy_killed_at_each_step_leaves_valid_pointer(cfg, tmp_path, crash_at):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "base", run_cfg=cfg)
    run = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two")
    proc = run_killed(cfg, f"deploy_model('NSE', {run.name!r}, 'asha', 'killed', run_cfg=cfg, ungated=True)", crash_at, tmp_path)
    assert proc.returncode == 137, f"{crash_at} not reached:\n{proc.stdout}\n{proc.stderr}"
    pointer, published = DEPLOY_EXPECTED[crash_at]
    assert current_version(EXCHANGE, cfg) == pointer
    folder, manifest = load_version(EXCHANGE, run_cfg=cfg)                 # complete and verified
    assert folder.name == pointer and manifest["files"] == tree_hashes(folder)
    assert (models(cfg) / EXCHANGE / "v0002").is_dir() == published
    # the next deploy is neither blocked (the kernel released the dead process's lock) nor confused by leftovers
    again = deploy(EXCHANGE, run.name, "asha", "after the kill", run_cfg=cfg, lock_timeout=0.5)
    assert again["version"] == ("v0003" if published else "v0002") and current_version(EXCHANGE, cfg) == again["version"]
    assert leftovers(cfg) == []
    assert_logs_consistent(cfg)
    for version in list_versions(EXCHANGE, cfg).version:
        load_version_manifest(EXCHANGE, version, run_cfg=cfg)              # every folder on disk still verifies
    assert sync_logs(cfg) == 0                                             # nothing left to repair


@pytest.mark.parametrize("crash_at", list(ROLLBACK_EXPECTED))
def test_rollback_killed_at_each_step_leaves_valid_pointer(cfg, tmp_path, crash_at):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "b", run_cfg=cfg)
    proc = run_killed(cfg, "rollback('NSE', operator='ravi', reason='killed', run_cfg=cfg)", crash_at, tmp_path)
    assert proc.returncode == 137, f"{crash_at} not reached:\n{proc.stdout}\n{proc.stderr}"
    assert current_version(EXCHANGE, cfg) == ROLLBACK_EXPECTED[crash_at]
    load_version(EXCHANGE, run_cfg=cfg)
    if current_version(EXCHANGE, cfg) == "v0002":
        rollback(EXCHANGE, operator="ravi", reason="again", run_cfg=cfg, lock_timeout=0.5)
    else:
        sync_logs(cfg)
    assert current_version(EXCHANGE, cfg) == "v0001" and leftovers(cfg) == []
    assert_logs_consistent(cfg)
    assert [e["action"] for e in raw_registry(cfg)["exchanges"][EXCHANGE]["history"]] == ["deploy", "deploy", "rollback"]


# ---------------------------------------------------------------- leftovers, logs, lock, sign-off

def test_stale_staging_and_unreferenced_versions(cfg):
    root = models(cfg) / EXCHANGE
    (root / ".v0001.staging" / "models").mkdir(parents=True)
    (root / ".v0001.staging" / "models" / "half.txt").write_text("half a copy")
    (models(cfg) / ".registry.json.4242.deadbeef.tmp").write_text('{"format": 1, "exchanges": {"NSE": {"current": "v0009"')
    assert deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)["version"] == "v0001"
    assert leftovers(cfg) == []
    (root / "v0002").mkdir()                                                # unreferenced, e.g. a hand-made folder
    (root / "v0002" / "junk.txt").write_text("junk")
    (root / ".v0003.staging").mkdir()
    m = deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "b", run_cfg=cfg)
    assert m["version"] == "v0003" and (root / "v0002" / "junk.txt").read_text() == "junk"
    assert leftovers(cfg) == []
    assert dict(zip(list_versions(EXCHANGE, cfg).version, list_versions(EXCHANGE, cfg).status)) == {
        "v0001": "archived", "v0002": "unreferenced (manifest unreadable)", "v0003": "current"}
    with pytest.raises(RegistryError, match="v0002 was never deployed"):
        rollback(EXCHANGE, "v0002", reason="test", run_cfg=cfg)


def test_torn_log_line_is_skipped_and_repaired(cfg):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    with open(models(cfg) / "deployments.log", "a") as f:
        f.write('{"event_id": "NSE-00')                                    # a write cut short by a kill
    (models(cfg) / "MODEL_CHANGE_LOG.md").unlink()
    assert sync_logs(cfg) == 0
    assert (models(cfg) / "MODEL_CHANGE_LOG.md").exists()
    deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "b", run_cfg=cfg)
    assert_logs_consistent(cfg)


def test_held_lock_makes_a_second_deploy_fail_clearly(cfg):
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    with registry_lock(cfg, purpose="maintenance"):
        t0 = time.monotonic()
        with pytest.raises(RegistryLockedError, match=rf"locked by pid {os.getpid()} .*maintenance"):
            deploy(EXCHANGE, run.name, "asha", "blocked", run_cfg=cfg, lock_timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        with pytest.raises(RegistryError, match="nothing to roll back to"):   # refused at once: no wait for the lock
            rollback(EXCHANGE, reason="test", run_cfg=cfg, lock_timeout=0.1)
    assert current_version(EXCHANGE, cfg) is None and not list((models(cfg) / EXCHANGE).glob("*v0001*"))
    assert deploy(EXCHANGE, run.name, "asha", "free", run_cfg=cfg, lock_timeout=0.3)["version"] == "v0001"
    deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "second", run_cfg=cfg)
    with registry_lock(cfg, purpose="maintenance"):
        with pytest.raises(RegistryLockedError, match="maintenance"):         # a valid rollback waits, then says who holds it
            rollback(EXCHANGE, reason="test", run_cfg=cfg, lock_timeout=0.1)
    assert current_version(EXCHANGE, cfg) == "v0002"


def test_concurrent_deploys_are_serialised(cfg, tmp_path):
    runs = [make_run(cfg, f"run-20251030-{c * 12}", c) for c in "ab"]
    code = ("import sys\nfrom oi_ml.config import RunConfig\nfrom oi_ml.registry import deploy_model\n"
            f"print(deploy_model('NSE', sys.argv[1], 'bot', 'parallel', run_cfg=RunConfig(data_dir={cfg.data_dir!r}), ungated=True)['version'])")
    with registry_lock(cfg, purpose="hold while both start"):
        procs = [subprocess.Popen([sys.executable, "-c", code, r.name], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in runs]
        time.sleep(2.5)                                                   # both import and queue on the lock
        assert all(p.poll() is None for p in procs)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o[0].strip() for o in outs) == ["v0001", "v0002"]
    history = raw_registry(cfg)["exchanges"][EXCHANGE]["history"]
    assert [(e["version"], e["previous_version"]) for e in history] == [("v0001", None), ("v0002", "v0001")]
    assert {e["run_id"] for e in history} == {r.name for r in runs}
    assert_logs_consistent(cfg)


def test_signoff(cfg):
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    deploy(EXCHANGE, run.name, "asha", "a", run_cfg=cfg)
    s1 = record_signoff(EXCHANGE, run.name, "meera (risk)", "approved_with_constraints", "max 2 lots", date="2025-10-31", run_cfg=cfg)
    s2 = record_signoff("nse", "v0001", "li (model validation)", "approved", run_cfg=cfg)
    assert s1["manifest_sha256"] == sha((run / "manifest.json").read_bytes()) and s1["version"] is None
    assert s2["manifest_sha256"] == raw_registry(cfg)["exchanges"][EXCHANGE]["history"][0]["manifest_sha256"]
    with pytest.raises(ValueError, match="not one of"):
        record_signoff(EXCHANGE, "v0001", "meera", "lgtm", run_cfg=cfg)
    with pytest.raises(ValueError, match="reviewer must be given"):
        record_signoff(EXCHANGE, "v0001", " ", "approved", run_cfg=cfg)
    with pytest.raises(FileNotFoundError, match="v0007/manifest.json"):
        record_signoff(EXCHANGE, "v0007", "meera", "approved", run_cfg=cfg)
    change = jsonl(models(cfg) / "model_change_log.jsonl")
    assert [r["kind"] for r in change] == ["deploy", "signoff", "signoff"]
    md = (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert f"| 2025-10-31 | NSE | signoff | — | {run.name} |" in md and "| meera (risk) | approved_with_constraints | max 2 lots |" in md
    assert_logs_consistent(cfg)



def files_under(folder: Path) -> dict:
    "Bytes of every file under `folder` (lock files included): what a refused call must leave as it was."
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_signoff_dated_in_the_future_is_refused(cfg, capsys):
    "Review finding: `oi-ml signoff --date 2099-01-01` was recorded in the Model Change Log."
    import datetime as dt
    from oi_ml.cli import main
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    before = files_under(models(cfg))
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date()   # after today in UTC and in IST
    for date in ("2099-01-01", later, later.isoformat()):
        with pytest.raises(ValueError, match=rf"sign-off date {str(date)} is in the future \(today is "):
            record_signoff(EXCHANGE, "v0001", "meera", "approved", date=date, run_cfg=cfg)
    argv = ["--data-dir", cfg.data_dir, "signoff", "--exchange", "NSE", "--run", "v0001", "--reviewer", "carol",
            "--decision", "approved", "--date", "2099-01-01"]
    assert main(argv) == 1
    assert "sign-off date 2099-01-01 is in the future" in capsys.readouterr().err
    assert files_under(models(cfg)) == before                                  # nothing recorded
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert record_signoff(EXCHANGE, "v0001", "meera", "approved", date=today, run_cfg=cfg)["date"] == today
    assert_logs_consistent(cfg)


def test_a_rollback_without_a_reason_is_refused(cfg):
    "Review finding: rollback accepted an empty reason while deploy refused one; both need it for the Model Change Log."
    for c, p in (("a", "one"), ("b", "two")):
        deploy(EXCHANGE, make_run(cfg, f"run-20251030-{c * 12}", p).name, "asha", p, run_cfg=cfg)
    before = files_under(models(cfg))
    for reason in ("", "   ", None):
        with pytest.raises(ValueError, match="reason must be given"):
            rollback(EXCHANGE, operator="ravi", reason=reason, run_cfg=cfg)
        with pytest.raises(ValueError, match="reason must be given"):
            deploy_model(EXCHANGE, "run-20251030-aaaaaaaaaaaa", "asha", reason, run_cfg=cfg, ungated=True)
    assert files_under(models(cfg)) == before and current_version(EXCHANGE, cfg) == "v0002"
    assert rollback(EXCHANGE, operator="ravi", reason="  drawdown ", run_cfg=cfg)["reason"] == "drawdown"
    assert_logs_consistent(cfg)


# ---------------------------------------------------------------- horizon keys (NSE/15m) next to the exchange key

def test_two_horizons_side_by_side(cfg):
    r15, r30 = make_run(cfg, "run-20251031-aaaaaaaaaaaa", "fifteen", horizon_bars=15), make_run(cfg, "run-20251031-bbbbbbbbbbbb", "thirty", horizon_bars=30)
    r15b = make_run(cfg, "run-20251031-cccccccccccc", "fifteen again", horizon_bars=15)
    m1 = deploy(EXCHANGE, r15.name, "asha", "15m model", run_cfg=cfg, horizon="15m")
    m2 = deploy(EXCHANGE, r30.name, "asha", "30m model", run_cfg=cfg, horizon="30m")
    m3 = deploy(EXCHANGE, r15b.name, "asha", "15m retrain", run_cfg=cfg, horizon="15m")
    assert [m["version"] for m in (m1, m2, m3)] == ["v0001", "v0002", "v0003"]          # one numbering per exchange
    assert [m["horizon"] for m in (m1, m2, m3)] == ["15m", "30m", "15m"]
    assert (current_version(EXCHANGE, cfg, "15m"), current_version(EXCHANGE, cfg, horizon="30m"), current_version(EXCHANGE, cfg)) == ("v0003", "v0002", None)
    reg = raw_registry(cfg)["exchanges"]
    assert sorted(reg) == ["NSE/15m", "NSE/30m"]
    assert [(e["event_id"], e["version"], e["previous_version"], e["horizon"]) for e in reg["NSE/15m"]["history"]] == [
        ("NSE-15m-0001", "v0001", None, "15m"), ("NSE-15m-0002", "v0003", "v0001", "15m")]
    assert [(e["event_id"], e["version"], e["previous_version"]) for e in reg["NSE/30m"]["history"]] == [("NSE-30m-0001", "v0002", None)]
    assert load_version(EXCHANGE, run_cfg=cfg, horizon="30m")[1]["run_id"] == r30.name
    assert load_version(EXCHANGE, run_cfg=cfg, horizon="15m")[0] == models(cfg) / EXCHANGE / "v0003"
    with pytest.raises(RegistryError, match="no model deployed for NSE: run deploy first"):
        load_version(EXCHANGE, run_cfg=cfg)
    for version in ("v0001", "v0002", "v0003"):                                         # registered hash found across keys
        load_version_manifest(EXCHANGE, version, run_cfg=cfg)

    # rollback of one horizon walks back its own history only and leaves the other pointer alone
    r30_before = json.dumps(raw_registry(cfg)["exchanges"]["NSE/30m"], sort_keys=True)
    event = rollback(EXCHANGE, operator="ravi", reason="15m drawdown", run_cfg=cfg, horizon="15m")
    assert (event["version"], event["previous_version"], event["horizon"]) == ("v0001", "v0003", "15m")
    assert (current_version(EXCHANGE, cfg, "15m"), current_version(EXCHANGE, cfg, "30m")) == ("v0001", "v0002")
    assert json.dumps(raw_registry(cfg)["exchanges"]["NSE/30m"], sort_keys=True) == r30_before
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(EXCHANGE, reason="test", run_cfg=cfg, horizon="15m")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(EXCHANGE, reason="test", run_cfg=cfg, horizon="30m")
    with pytest.raises(RegistryError, match="NSE/30m: v0001 was never deployed"):      # a 15m version is not a 30m target
        rollback(EXCHANGE, "v0001", reason="test", run_cfg=cfg, horizon="30m")
    assert list(registry_history(EXCHANGE, cfg, "15m").action) == ["deploy", "deploy", "rollback"]
    assert registry_history(EXCHANGE, cfg).empty

    versions = list_versions(EXCHANGE, cfg).set_index("version")
    assert versions.status.to_dict() == {"v0001": "current", "v0002": "current", "v0003": "archived"}
    assert versions.current_for.to_dict() == {"v0001": "NSE/15m", "v0002": "NSE/30m", "v0003": ""}
    assert versions.horizon.to_dict() == {"v0001": "15m", "v0002": "30m", "v0003": "15m"}

    change = [r for r in jsonl(models(cfg) / "model_change_log.jsonl") if r["kind"] != "signoff"]
    assert [(r["exchange"], r["registry_key"], r["horizon"], r["version"]) for r in change] == [
        ("NSE", "NSE/15m", "15m", "v0001"), ("NSE", "NSE/30m", "30m", "v0002"), ("NSE", "NSE/15m", "15m", "v0003"),
        ("NSE", "NSE/15m", "15m", "v0001")]
    md = (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert "| Exchange | Event | Version | Run | Horizon |" in md
    assert f"| NSE/30m | deploy | v0002 | {r30.name} | 30m |" in md and f"| NSE/15m | rollback | v0001 | {r15.name} | 15m |" in md
    assert_logs_consistent(cfg)


def test_gate_report_of_another_horizon_key_is_refused(cfg):
    "A run gated against the NSE/15m production model cannot go under the NSE key (and the other way round)."
    keyed = make_run(cfg, "run-20251031-aaaaaaaaaaaa", "gated 15m", horizon_bars=15, gate=passing_gate("run-20251031-aaaaaaaaaaaa", horizon="15m"))
    plain = make_run(cfg, "run-20251031-bbbbbbbbbbbb", "gated plain", horizon_bars=15, gate=passing_gate("run-20251031-bbbbbbbbbbbb", horizon=None))
    for run, wrong in ((keyed, None), (plain, "15m")):
        before = snapshot(cfg)
        with pytest.raises(RegistryError, match=f"run {run.name}: its gate report is for horizon key .*re-run the gate"):
            deploy(EXCHANGE, run.name, "asha", "wrong key", run_cfg=cfg, horizon=wrong)
        assert snapshot(cfg) == before
    assert deploy(EXCHANGE, keyed.name, "asha", "15m line", run_cfg=cfg, horizon="15m")["gate"]["horizon"] == "15m"
    assert deploy(EXCHANGE, plain.name, "asha", "exchange line", run_cfg=cfg)["gate"]["horizon"] is None
    assert (current_version(EXCHANGE, cfg, "15m"), current_version(EXCHANGE, cfg)) == ("v0001", "v0002")


def test_horizon_mismatch_refused_before_anything_is_written(cfg):
    r15, r30 = make_run(cfg, "run-20251031-aaaaaaaaaaaa", "fifteen", horizon_bars=15), make_run(cfg, "run-20251031-bbbbbbbbbbbb", "thirty", horizon_bars=30)
    deploy(EXCHANGE, r15.name, "asha", "15m model", run_cfg=cfg, horizon="15m")
    registry_bytes, before = (models(cfg) / "registry.json").read_bytes(), snapshot(cfg)
    with pytest.raises(RegistryError, match=f"run {r30.name}: its label horizon is 30m .*not the requested horizon 15m"):
        deploy(EXCHANGE, r30.name, "asha", "wrong key", run_cfg=cfg, horizon="15m")
    assert (models(cfg) / "registry.json").read_bytes() == registry_bytes and snapshot(cfg) == before
    for bad in ("15", "15min", "015m", "m", "15m/x"):
        with pytest.raises(ValueError, match=f"invalid horizon {bad!r}"):
            deploy(EXCHANGE, r15.name, "asha", "bad key", run_cfg=cfg, horizon=bad)
        with pytest.raises(ValueError, match=f"invalid horizon {bad!r}"):
            current_version(EXCHANGE, cfg, bad)
    assert (models(cfg) / "registry.json").read_bytes() == registry_bytes and snapshot(cfg) == before
    # a run whose report does not give its horizon may go under any key; its horizon is recorded as unknown
    unknown = make_run(cfg, "run-20251031-cccccccccccc", "no config")
    m = deploy(EXCHANGE, unknown.name, "asha", "horizon unknown", run_cfg=cfg, horizon="15m")
    assert m["horizon"] is None and raw_registry(cfg)["exchanges"]["NSE/15m"]["history"][-1]["horizon"] is None
    # without a horizon key, the run's own horizon is still recorded
    assert deploy(EXCHANGE, r30.name, "asha", "exchange key", run_cfg=cfg)["horizon"] == "30m"
    assert raw_registry(cfg)["exchanges"][EXCHANGE]["history"][0]["horizon"] == "30m"


def test_old_style_registry_still_loads_and_deploys(cfg):
    "A registry.json written before horizon keys existed (exchange keys only, no `horizon` fields) keeps working."
    r1 = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    deploy(EXCHANGE, r1.name, "asha", "old deploy", run_cfg=cfg)
    v1 = models(cfg) / EXCHANGE / "v0001"                                  # make v0001 look as the old code wrote it
    manifest = json.loads((v1 / "manifest.json").read_text())
    del manifest["horizon"]
    raw = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    writable(v1 / "manifest.json").write_bytes(raw)
    old_entry = {"event_id": "NSE-0001", "action": "deploy", "version": "v0001", "previous_version": None, "run_id": r1.name,
                 "at": manifest["deployed_at"], "operator": "asha", "reason": "old deploy", "manifest_sha256": sha(raw)}
    old = {"format": 1, "exchanges": {"NSE": {"current": "v0001", "history": [old_entry]}}}
    (models(cfg) / "registry.json").write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    for name in ("deployments.log", "model_change_log.jsonl", "MODEL_CHANGE_LOG.md"):
        (models(cfg) / name).unlink()

    assert current_version(EXCHANGE, cfg) == "v0001" and load_version(EXCHANGE, run_cfg=cfg)[1]["run_id"] == r1.name
    assert list_versions(EXCHANGE, cfg).status.tolist() == ["current"]
    m2 = deploy(EXCHANGE, make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two").name, "asha", "new code", run_cfg=cfg)
    m3 = deploy(EXCHANGE, make_run(cfg, "run-20251031-cccccccccccc", "fifteen", horizon_bars=15).name, "asha", "15m",
                      run_cfg=cfg, horizon="15m")
    assert (m2["version"], m3["version"]) == ("v0002", "v0003")
    reg = raw_registry(cfg)["exchanges"]
    assert reg["NSE"]["history"][0] == old_entry and reg["NSE"]["history"][1]["event_id"] == "NSE-0002"
    assert (current_version(EXCHANGE, cfg), current_version(EXCHANGE, cfg, "15m")) == ("v0002", "v0003")
    assert rollback(EXCHANGE, operator="ravi", reason="back", run_cfg=cfg)["version"] == "v0001"
    assert current_version(EXCHANGE, cfg, "15m") == "v0003"
    change = jsonl(models(cfg) / "model_change_log.jsonl")
    assert change[0]["event_id"] == "NSE-0001" and change[0]["horizon"] is None and change[0]["registry_key"] == "NSE"
    assert "| NSE | deploy | v0001 | run-20251030-aaaaaaaaaaaa | — |" in (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert_logs_consistent(cfg)


def test_signoff_records_the_horizon(cfg):
    run = make_run(cfg, "run-20251031-aaaaaaaaaaaa", "fifteen", horizon_bars=15)
    deploy(EXCHANGE, run.name, "asha", "15m", run_cfg=cfg, horizon="15m")
    assert record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg)["horizon"] == "15m"
    assert record_signoff(EXCHANGE, run.name, "meera", "approved", run_cfg=cfg, horizon="15m")["horizon"] == "15m"
    logged = (models(cfg) / "model_change_log.jsonl").read_bytes()
    with pytest.raises(RegistryError, match=f"run {run.name}: its label horizon is 15m .*not the requested horizon 30m; "
                                            "not recording the sign-off of v0001$"):
        record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg, horizon="30m")
    with pytest.raises(RegistryError, match=f"not the requested horizon 30m; not recording the sign-off of {run.name}$"):
        record_signoff(EXCHANGE, run.name, "meera", "approved", run_cfg=cfg, horizon="30m")   # signed off by run id
    assert (models(cfg) / "model_change_log.jsonl").read_bytes() == logged                 # refused sign-offs leave no record
    with pytest.raises(ValueError, match="invalid horizon '30'"):
        record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg, horizon="30")
    assert "| NSE | signoff | v0001 | run-20251031-aaaaaaaaaaaa | 15m |" in (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()


# ---------------------------------------------------------------- corrupt JSON gives a RegistryError naming the file
@pytest.mark.parametrize("text, message", [('{"format": 1, "exchanges": {"NSE": {"cur', "registry.json: not valid JSON"),
                                           ('{"format": 1}', "registry.json: missing or malformed 'exchanges'"),
                                           # review finding: a hand-edited record of another shape was a TypeError
                                           ('{"format": 1, "exchanges": {"NSE": []}}',
                                            r"registry.json: exchanges\['NSE'\] must be an object with 'current'"),
                                           ('{"format": 1, "exchanges": {"NSE": {"current": 1, "history": []}}}',
                                            r"registry.json: exchanges\['NSE'\] must be an object"),
                                           ('{"format": 1, "exchanges": {"NSE": {"current": "v0001", "history": [5]}}}',
                                            r"registry.json: exchanges\['NSE'\]\['history'\]\[0\] must be an event object")])
def test_a_corrupt_registry_file_is_named(cfg, text, message):
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "first", run_cfg=cfg)
    (models(cfg) / "registry.json").write_text(text)
    for call in (lambda: current_version(EXCHANGE, cfg), lambda: load_version(EXCHANGE, run_cfg=cfg),
                 lambda: rollback(EXCHANGE, operator="ravi", reason="test", run_cfg=cfg)):
        with pytest.raises(RegistryError, match=message):
            call()
    assert (models(cfg) / "registry.json").read_text() == text                 # nothing rewritten over it


def test_a_corrupt_gate_report_is_named_and_nothing_is_deployed(cfg):
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one", extra={"reports/gate_report.json": '{"passed": tr'})
    with pytest.raises(RegistryError, match=r"reports/gate_report\.json: not valid JSON"):
        deploy(EXCHANGE, run.name, "asha", "try", run_cfg=cfg)
    assert not (models(cfg) / "registry.json").exists() and not list((models(cfg) / EXCHANGE).glob("v*"))


def test_deploy_needs_a_passing_gate_of_this_run_against_the_current_production(cfg):
    """No gate result, one that did not pass (or lacks `passed`), one written for another run, or one whose baseline is
    not the version the key serves now: refused, nothing written. The CLI's deploy never passes `ungated`."""
    base = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "base", gate=passing_gate("run-20251030-aaaaaaaaaaaa"))
    assert deploy_model(EXCHANGE, base.name, "asha", "first", run_cfg=cfg)["version"] == "v0001"   # gated against nothing
    run = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "cand")
    refusals = [
        (None, "no gate result"),
        ({"candidate_run": run.name, "baseline": "v0001", "decision": "FAIL", "failed": ["deflated_sharpe", "pbo"]},
         r"gate did not pass \(deflated_sharpe; pbo\)"),
        ({**passing_gate(run.name, "v0001"), "passed": "true"}, "gate did not pass"),
        (passing_gate(base.name, "v0001"), f"its gate report is for run '{base.name}'"),
        (passing_gate(run.name, None), "the gate compared it with no production model, but NSE serves v0001 now"),
        (passing_gate(run.name, "v0009"), "the gate compared it with v0009, but NSE serves v0001 now"),
        (passing_gate(run.name, "v0001"), "a gate result built by the caller cannot promote a run"),   # no report on disk
    ]
    for gate, message in refusals:
        before = snapshot(cfg)
        with pytest.raises(RegistryError, match=message):
            deploy_model(EXCHANGE, run.name, "asha", "try", gate=gate, run_cfg=cfg)
        assert snapshot(cfg) == before
    write_gate(run, passing_gate(run.name, "v0001"))
    assert deploy_model(EXCHANGE, run.name, "asha", "gated", run_cfg=cfg)["version"] == "v0002"
    later = make_run(cfg, "run-20251030-cccccccccccc", "later", gate=passing_gate("run-20251030-cccccccccccc", "v0002"))
    rollback(EXCHANGE, operator="ravi", reason="live drawdown", run_cfg=cfg)   # production is v0001 again
    with pytest.raises(RegistryError, match="the gate compared it with v0002, but NSE serves v0001 now"):
        deploy_model(EXCHANGE, later.name, "asha", "gated before the rollback", run_cfg=cfg)
    assert current_version(EXCHANGE, cfg) == "v0001"

def test_cli_deploy_refuses_an_ungated_run(cfg, capsys):
    from oi_ml import cli
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    assert cli.main(["--data-dir", cfg.data_dir, "deploy", "--exchange", "NSE", "--run", run.name, "--operator", "asha",
                     "--reason", "try"]) == 1
    assert f"run {run.name}: no gate result" in capsys.readouterr().err and current_version(EXCHANGE, cfg) is None


def test_ungated_deploys_and_signoffs_show_their_gate_in_the_change_log(cfg):
    "An ungated version reads UNGATED in the change log; a sign-off of a run carries the run's own gate result."
    ungated = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    assert deploy_model(EXCHANGE, ungated.name, "asha", "example", run_cfg=cfg, ungated=True)["ungated"] is True
    failed = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two",
                      gate={**passing_gate("run-20251030-bbbbbbbbbbbb", "v0001"), "passed": False, "decision": "FAIL",
                            "failed": ["deflated_sharpe"]})
    s1 = record_signoff(EXCHANGE, failed.name, "meera", "rejected", date="2025-10-31", run_cfg=cfg)
    s2 = record_signoff(EXCHANGE, "v0001", "meera", "approved_with_constraints", "paper only", date="2025-10-31", run_cfg=cfg)
    assert s1["gate"] == {"passed": False, "decision": "FAIL", "failed": ["deflated_sharpe"], "candidate_run": failed.name,
                          "baseline": "v0001", "candidate_manifest_sha256": sha((failed / "manifest.json").read_bytes())}
    assert not s1["ungated"]
    assert s2["gate"] is None and s2["ungated"]
    md = (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert f"| NSE | deploy | v0001 | {ungated.name} | — | " in md and md.count("| UNGATED |") == 2   # the deploy and s2
    assert f"| {failed.name} | — | {s1['manifest_sha256'][:12]} | 2025-10-03 | FAIL | meera | rejected |" in md


def test_a_gate_rerun_while_the_deploy_waits_for_the_lock_is_the_one_judged(cfg, tmp_path):
    "The run's gate report is read under the registry lock: a FAIL written while the deploy queued refuses it."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one", gate=passing_gate("run-20251030-aaaaaaaaaaaa"))
    code = ("from oi_ml.config import RunConfig\nfrom oi_ml.registry import deploy_model\nprint('calling', flush=True)\n"
            f"deploy_model('NSE', {run.name!r}, 'bot', 'queued', run_cfg=RunConfig(data_dir={cfg.data_dir!r}))")
    with registry_lock(cfg, purpose="a gate re-run in progress"):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "calling"               # imports done: deploy_model starts now
        time.sleep(1.5)                                                   # and queues on the lock
        (run / "reports" / "gate_report.json").write_text(
            json.dumps({**passing_gate(run.name), "passed": False, "decision": "FAIL", "failed": ["pbo"]}))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "the promotion gate did not pass (pbo)" in err
    assert current_version(EXCHANGE, cfg) is None


def test_signoff_of_a_model_copied_from_another_exchange_is_refused(cfg):
    "Review finding: an NSE run (or version) copied under models/BSE/ was signed off as BSE's; nothing may be recorded."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    deploy(EXCHANGE, run.name, "asha", "a", run_cfg=cfg)
    shutil.copytree(run, models(cfg) / "BSE" / run.name)
    shutil.copytree(models(cfg) / EXCHANGE / "v0001", models(cfg) / "BSE" / "v0001")
    logged = (models(cfg) / "model_change_log.jsonl").read_bytes()
    for copied in (run.name, "v0001"):
        with pytest.raises(RegistryError, match=rf"BSE/{copied}/manifest.json: manifest exchange 'NSE' differs from 'BSE'"):
            record_signoff("BSE", copied, "meera", "approved", run_cfg=cfg)
    assert (models(cfg) / "model_change_log.jsonl").read_bytes() == logged                 # no sign-off recorded
    assert record_signoff(EXCHANGE, run.name, "meera", "approved", run_cfg=cfg)["exchange"] == EXCHANGE   # in its own folder: fine


def test_signoff_of_a_run_with_an_unreadable_gate_report_is_recorded(cfg):
    "A torn or hand-broken gate report never blocks a reviewer's decision; the change log says UNREADABLE."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one", extra={"reports/gate_report.json": '{"passed": tr'})
    record = record_signoff(EXCHANGE, run.name, "meera", "rejected", date="2025-10-31", run_cfg=cfg)
    assert "gate_report.json: not valid JSON" in record["gate"]["unreadable"]
    assert f"| {run.name} | — | {record['manifest_sha256'][:12]} | 2025-10-03 | UNREADABLE | meera | rejected |" in \
        (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()


def test_a_gate_result_passed_in_cannot_override_the_runs_report(cfg):
    "With a reports/gate_report.json in the run, a gate result passed in must agree with it (passed, run, baseline, ...)."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one",
                   gate={**passing_gate("run-20251030-aaaaaaaaaaaa"), "passed": False, "decision": "FAIL", "failed": ["dsr"]})
    before = snapshot(cfg)
    with pytest.raises(RegistryError, match=r"the gate result passed in \(PASS, baseline None\) differs from its reports/gate_report\.json \(FAIL"):
        deploy_model(EXCHANGE, run.name, "asha", "override", gate=passing_gate(run.name), run_cfg=cfg)
    assert snapshot(cfg) == before
    report = write_gate(run, passing_gate(run.name))
    with pytest.raises(RegistryError, match=r"\(PASS, baseline None\) in candidate_manifest_sha256; not deploying"):
        deploy_model(EXCHANGE, run.name, "asha", "unbound copy", gate=passing_gate(run.name), run_cfg=cfg)   # not the report
    assert deploy_model(EXCHANGE, run.name, "asha", "agrees", gate=dict(report), run_cfg=cfg)["version"] == "v0001"


# ---------------------------------------------------------------- a verdict is bound to what it judged (review G1, C1)

def remanifest(run: Path, rel: str, text: str) -> None:
    "Change one file of a run and re-hash it into the run's manifest: the run verifies again, with other content."
    (run / rel).write_text(text)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"][rel] = sha(text.encode())
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_a_run_changed_after_its_gate_passed_is_refused(cfg):
    "A passing report names the manifest it judged; a model replaced and re-manifested afterwards does not deploy under it."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one", gate=passing_gate("run-20251030-aaaaaaaaaaaa"))
    judged = read_gate(run)["candidate_manifest_sha256"]
    remanifest(run, "calibration.json", "{}")
    now = sha((run / "manifest.json").read_bytes())
    verify_run(EXCHANGE, run.name, cfg)                                     # consistent again: only the binding can tell
    for call in (lambda: deploy_model(EXCHANGE, run.name, "asha", "gate passed earlier", run_cfg=cfg),
                 lambda: deploy_model(EXCHANGE, run.name, "asha", "ungated flag", run_cfg=cfg, ungated=True),
                 lambda: deploy_model(EXCHANGE, run.name, "asha", "same dict", gate=read_gate(run), run_cfg=cfg)):
        with pytest.raises(RegistryError, match=rf"run {run.name}: the gate judged run manifest sha256 {judged[:12]}…, but the "
                                                rf"run's manifest is {now[:12]}… now .*re-run the gate; not deploying"):
            call()
    assert not models(cfg).joinpath("registry.json").exists() and not (models(cfg) / "MODEL_CHANGE_LOG.md").exists()
    assert not list((models(cfg) / EXCHANGE).glob("*v0001*"))
    write_gate(run, passing_gate(run.name))                                 # the gate re-run on the new content
    m = deploy_model(EXCHANGE, run.name, "asha", "gated again", run_cfg=cfg)
    assert m["gate"]["candidate_manifest_sha256"] == now == sha((models(cfg) / EXCHANGE / "v0001" / "run_manifest.json").read_bytes())


def test_a_run_whose_walk_forward_evidence_changed_after_its_gate_passed_is_refused(cfg):
    """Review finding: deploy checked only the run manifest the gate judged, so a backtest re-run after the gate (its
    walk-forward windows rewritten) still deployed under the old PASS. The report's `walk_forward.files` must match."""
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one", extra={"reports/backtest_windows.json": "{}",
                                                                   "reports/equity_walk_forward_0.parquet": "first"})
    files = {rel: sha((run / rel).read_bytes()) for rel in ("reports/backtest_windows.json", "reports/equity_walk_forward_0.parquet")}
    write_gate(run, passing_gate(run.name, walk_forward=dict(available=True, files=files)))
    (run / "reports" / "equity_walk_forward_0.parquet").write_text("rewritten by a later backtest")
    with pytest.raises(RegistryError, match=rf"run {run.name}: the walk-forward evidence its gate report judged is gone or changed "
                                            r"since \(reports/equity_walk_forward_0.parquet\); re-run the gate; not deploying"):
        deploy_model(EXCHANGE, run.name, "asha", "gate passed earlier", run_cfg=cfg)
    (run / "reports" / "backtest_windows.json").unlink()
    with pytest.raises(RegistryError, match=r"\(reports/backtest_windows.json, reports/equity_walk_forward_0.parquet\)"):
        deploy_model(EXCHANGE, run.name, "asha", "gate passed earlier", run_cfg=cfg)
    assert not models(cfg).joinpath("registry.json").exists()
    (run / "reports" / "backtest_windows.json").write_text("{}")
    (run / "reports" / "equity_walk_forward_0.parquet").write_text("first")                 # the evidence judged, again
    assert deploy_model(EXCHANGE, run.name, "asha", "evidence as judged", run_cfg=cfg)["gate"]["walk_forward"]["files"] == files


def test_a_gate_report_that_does_not_say_what_it_judged_is_refused(cfg):
    "Reports written before the binding existed cannot prove what they judged: re-run the gate."
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    (run / "reports" / "gate_report.json").write_text(json.dumps(passing_gate(run.name)))   # an old-format PASS
    with pytest.raises(RegistryError, match=rf"run {run.name}: its gate report does not record which run manifest it judged "
                                            r"\(no candidate_manifest_sha256.*re-run the gate; not deploying"):
        deploy_model(EXCHANGE, run.name, "asha", "old report", run_cfg=cfg)
    assert current_version(EXCHANGE, cfg) is None and not (models(cfg) / "registry.json").exists()


def test_a_caller_built_gate_is_refused_or_recorded_as_ungated(cfg):
    """A gate dict passed in for a run without a report on disk is not evidence: refused unless ungated=True, and then the
    version, the change log record and its Gate column say it came from the caller."""
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    gate = passing_gate(run.name, backtest_config={"min_confidence": 0.55})
    with pytest.raises(RegistryError, match=rf"run {run.name}: a gate result passed in, but the run has no "
                                            r"reports/gate_report\.json: a gate result built by the caller cannot promote a run"):
        deploy_model(EXCHANGE, run.name, "asha", "hand-made PASS", gate=gate, run_cfg=cfg)
    assert not (models(cfg) / "registry.json").exists()
    m = deploy_model(EXCHANGE, run.name, "asha", "policy experiment", gate=gate, run_cfg=cfg, ungated=True)
    assert (m["gate"], m["gate_source"], m["ungated"]) == (gate, "caller", True)     # kept: its policy is what serving reads
    change = jsonl(models(cfg) / "model_change_log.jsonl")[-1]
    assert (change["gate_source"], change["ungated"], change["gate"]["decision"]) == ("caller", True, "PASS")
    s = record_signoff(EXCHANGE, "v0001", "meera", "rejected", date="2025-10-31", run_cfg=cfg)
    assert (s["gate_source"], s["ungated"]) == ("caller", True)
    md = (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()
    assert md.count("| UNGATED (caller: PASS) |") == 2 and "| PASS |" not in md   # the deploy and the sign-off


def test_a_refused_rollback_writes_nothing(cfg, tmp_path):
    "Nothing to roll back to on a fresh data folder: refused before the lock, no change log, no lock file, no folder."
    with pytest.raises(RegistryError, match="nothing to roll back to: versions in force none"):
        rollback(EXCHANGE, operator="ravi", reason="try", run_cfg=cfg)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(EXCHANGE, reason="test", run_cfg=cfg, horizon="15m")
    assert not Path(cfg.data_dir).exists()
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    (models(cfg) / "MODEL_CHANGE_LOG.md").unlink()                          # a log a registry change would repair
    before = {p: p.read_bytes() for p in sorted(models(cfg).rglob("*")) if p.is_file()}
    for target, message in ((None, "nothing to roll back to"), ("v0001", "already the current version"), ("v0007", "never deployed")):
        with pytest.raises(RegistryError, match=message):
            rollback(EXCHANGE, target, reason="test", run_cfg=cfg)
    assert {p: p.read_bytes() for p in sorted(models(cfg).rglob("*")) if p.is_file()} == before


# ---------------------------------------------------------------- hand-edited registry events are refused before any write
def every_file(cfg: RunConfig) -> dict:
    "Every file under data/models with its bytes: registry.json, the logs, the lock file, versions and runs."
    root = models(cfg)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _history(reg: dict) -> list:
    return reg["exchanges"][EXCHANGE]["history"]


def _drop_sha(reg):            # review: a KeyError in _registered_sha on rollback
    del _history(reg)[0]["manifest_sha256"]


def _add_minimal_rollback(reg):  # review: a KeyError in _change_entry on sign-off, after deployments.log was appended
    _history(reg).append({"event_id": "NSE-0003", "action": "rollback", "version": "v0001"})
    reg["exchanges"][EXCHANGE]["current"] = "v0001"


def _null_sha(reg):            # would make load_version skip the check against the registry's hash
    _history(reg)[1]["manifest_sha256"] = None


HAND_EDITS = {
    "manifest_sha256 missing": (_drop_sha, r"\['history'\]\[0\] \(event NSE-0001\) lacks the key 'manifest_sha256'"),
    "minimal rollback event": (_add_minimal_rollback, r"\['history'\]\[2\] \(event NSE-0003\) lacks the key 'previous_version'"),
    "manifest_sha256 null": (_null_sha, r"\['history'\]\[1\] \(event NSE-0002\) has 'manifest_sha256' = null, expected the sha256"),
    "previous_version a number": (lambda reg: _history(reg)[1].update(previous_version=1),
                                  r"\['history'\]\[1\] \(event NSE-0002\) has 'previous_version' = 1, expected a version id or null"),
    "at not a time": (lambda reg: _history(reg)[0].update(at="yesterday"), r"\['history'\]\[0\] \(event NSE-0001\) has 'at' = \"yesterday\""),
    "operator missing": (lambda reg: _history(reg)[1].pop("operator"), r"\['history'\]\[1\] \(event NSE-0002\) lacks the key 'operator'"),
    "pointer without an event": (lambda reg: reg["exchanges"][EXCHANGE].update(current="v0001"),
                                 r": 'current' is 'v0001' but the last history event sets 'v0002'"),
    "rollback to a version never deployed": (
        lambda reg: (_history(reg).append({**_history(reg)[1], "event_id": "NSE-0003", "action": "rollback", "version": "v0009",
                                           "previous_version": "v0002"}), reg["exchanges"][EXCHANGE].update(current="v0009")),
        r"\['history'\]\[2\] \(event NSE-0003\) rolls back to v0009, which no earlier deploy event of this key deployed"),
    "event id repeated": (lambda reg: _history(reg)[1].update(event_id="NSE-0001"),
                          r"\['history'\]\[1\] \(event NSE-0001\) repeats the event_id of exchanges\['NSE'\]\['history'\]\[0\]"),
}


def _deployed_twice_and_signed_off(cfg: RunConfig) -> Path:
    "v0001 and v0002 deployed, v0002 signed off; returns a third run, not deployed."
    for run_id, payload in (("run-20251030-aaaaaaaaaaaa", "one"), ("run-20251030-bbbbbbbbbbbb", "two")):
        deploy(EXCHANGE, make_run(cfg, run_id, payload).name, "asha", f"deploy {payload}", run_cfg=cfg)
    record_signoff(EXCHANGE, "v0002", "meera", "approved", run_cfg=cfg)
    return make_run(cfg, "run-20251030-cccccccccccc", "three")


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_a_hand_edited_registry_event_is_refused_before_anything_is_written(cfg, edit, tmp_path, capsys):
    """Review finding: _check_record required only event_id, action and version, so a hand-edited event passed validation
    and an operation crashed later with a KeyError (a sign-off after appending to deployments.log and the change-log
    JSONL, but not the markdown; a retry logged it twice). Every operation now refuses the file with a RegistryError
    naming registry.json, the key, the event and the field, and every file under data/models stays byte-identical."""
    from oi_ml import cli
    run3 = _deployed_twice_and_signed_off(cfg)
    edit_registry, message = HAND_EDITS[edit]
    reg = raw_registry(cfg)
    edit_registry(reg)
    (models(cfg) / "registry.json").write_text(json.dumps(reg, indent=1))
    before = every_file(cfg)
    calls = {"current_version": lambda: current_version(EXCHANGE, cfg), "load_version": lambda: load_version(EXCHANGE, run_cfg=cfg),
             "load v0002": lambda: load_version_manifest(EXCHANGE, "v0002", run_cfg=cfg),
             "history": lambda: registry_history(EXCHANGE, cfg), "list_versions": lambda: list_versions(EXCHANGE, cfg),
             "rollback": lambda: rollback(EXCHANGE, operator="ravi", reason="test", run_cfg=cfg),
             "rollback to v0001": lambda: rollback(EXCHANGE, "v0001", operator="ravi", reason="test", run_cfg=cfg),
             "signoff version": lambda: record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg),
             "signoff run": lambda: record_signoff(EXCHANGE, run3.name, "meera", "rejected", run_cfg=cfg),
             "deploy": lambda: deploy(EXCHANGE, run3.name, "asha", "third", run_cfg=cfg),
             "sync_logs": lambda: sync_logs(cfg)}
    for name, call in calls.items():
        with pytest.raises(RegistryError, match=r"models/registry\.json: exchanges\['NSE'\]" + message) as err:
            call()
        assert "edited by hand" in str(err.value) and "deployments.log" in str(err.value), name
        assert every_file(cfg) == before, f"{name} changed a file"
    base = ["--data-dir", cfg.data_dir, "--reports-dir", str(tmp_path / "reports")]
    for argv in (["rollback", "--exchange", "NSE", "--operator", "ravi", "--reason", "test"],
                 ["signoff", "--exchange", "NSE", "--run", "v0001", "--reviewer", "meera", "--decision", "approved"]):
        assert cli.main(base + argv) == 1
        err = capsys.readouterr().err
        assert f"oi-ml {argv[0]}: " in err and "Traceback" not in err and "KeyError" not in err
        assert re.search(message, err), err
    assert every_file(cfg) == before


def test_a_null_manifest_hash_does_not_skip_the_registry_check(cfg):
    """Review suspicion, confirmed on the old code: with `"manifest_sha256": null` on the deploy event, load_version skipped
    the check of the version manifest against the registry, so a tampered file covered by an edited manifest loaded."""
    _deployed_twice_and_signed_off(cfg)
    v2 = models(cfg) / EXCHANGE / "v0002"
    writable(v2 / "calibration.json").write_text('{"a": 9.0}')
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["files"]["calibration.json"] = sha(b'{"a": 9.0}')
    writable(v2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="does not match the registry's"):
        load_version(EXCHANGE, run_cfg=cfg)
    reg = raw_registry(cfg)
    _null_sha(reg)
    (models(cfg) / "registry.json").write_text(json.dumps(reg))
    with pytest.raises(RegistryError, match=r"\(event NSE-0002\) has 'manifest_sha256' = null"):
        load_version(EXCHANGE, run_cfg=cfg)


def test_a_refused_signoff_is_recorded_once_after_the_registry_is_repaired(cfg):
    """Review finding: the refused sign-off had already appended its record to the change-log JSONL (not to the markdown),
    and the retry appended a second copy. Now it writes nothing; once registry.json is restored, one record, one row."""
    _deployed_twice_and_signed_off(cfg)
    good = (models(cfg) / "registry.json").read_bytes()
    reg = raw_registry(cfg)
    _add_minimal_rollback(reg)
    (models(cfg) / "registry.json").write_text(json.dumps(reg, indent=1))
    before = every_file(cfg)
    for _ in range(2):
        with pytest.raises(RegistryError, match=r"\(event NSE-0003\) lacks the key 'previous_version'"):
            record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg)
        assert every_file(cfg) == before
    (models(cfg) / "registry.json").write_bytes(good)
    record_signoff(EXCHANGE, "v0001", "meera", "approved", run_cfg=cfg)
    change = jsonl(models(cfg) / "model_change_log.jsonl")
    assert [(r["kind"], r["version"]) for r in change if r["kind"] == "signoff"] == [("signoff", "v0002"), ("signoff", "v0001")]
    rows = [line for line in (models(cfg) / "MODEL_CHANGE_LOG.md").read_text().splitlines() if "| signoff |" in line]
    assert len(rows) == 2 and "| signoff | v0001 |" in rows[1]
    assert_logs_consistent(cfg)


def _signoff_argv(cfg: RunConfig, tmp_path: Path, run: str, decision: str, *more: str) -> list[str]:
    return ["--data-dir", cfg.data_dir, "--reports-dir", str(tmp_path / "reports"), "signoff", "--exchange", "NSE", "--run", run,
            "--reviewer", "risk", "--decision", decision, *more]


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"oi-ml {command}: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_signoff_dated_before_the_model_existed_is_refused(cfg, tmp_path, capsys):
    """Review finding (p9): `oi-ml signoff --date 2019-01-01` recorded an approval of a run created years later (exit 0);
    only a future date was refused. A date before the run's created_at is refused (for the run and for its version), the
    error naming the manifest and the creation date in IST and UTC, and nothing is written. The creation's UTC date is
    accepted: a run trained at 01:30 IST can be signed off at once with the default (UTC) date."""
    from oi_ml import cli
    run = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "created_at": "2025-10-30T20:00:00+00:00"}))   # 01:30 IST, 31 Oct
    deploy(EXCHANGE, run.name, "asha", "a", run_cfg=cfg)
    before = every_file(cfg)
    for target in (run.name, "v0001"):
        for date in ("2019-01-01", "2025-10-29"):
            with pytest.raises(ValueError, match=rf"sign-off date {date} is before run {run.name} was created: \S*/NSE/{target}/manifest"
                                                 r"\.json says created_at 2025-10-31 IST \(2025-10-30T20:00:00\+00:00 UTC\)"):
                record_signoff(EXCHANGE, target, "risk", "approved", date=date, run_cfg=cfg)
    assert cli.main(_signoff_argv(cfg, tmp_path, run.name, "approved", "--date", "2019-01-01")) == 1
    assert "sign-off date 2019-01-01 is before run" in _one_line_error(capsys, "signoff")
    assert every_file(cfg) == before                                               # nothing recorded
    assert record_signoff(EXCHANGE, run.name, "risk", "approved", date="2025-10-30", run_cfg=cfg)["date"] == "2025-10-30"
    assert_logs_consistent(cfg)


def test_approved_with_constraints_needs_the_constraints(cfg, tmp_path, capsys):
    """Review finding (p9): `--decision approved_with_constraints` without `--constraints` was recorded with exit 0, the
    change log's constraints column '—'. It is refused, whatever empty form the constraints take, with nothing written."""
    from oi_ml import cli
    deploy(EXCHANGE, make_run(cfg, "run-20251030-aaaaaaaaaaaa", "one").name, "asha", "a", run_cfg=cfg)
    before = every_file(cfg)
    for constraints in (None, "", "   ", [], ["", " "], {}, {"": None}):
        with pytest.raises(ValueError, match="decision approved_with_constraints needs the constraints it approves under"):
            record_signoff(EXCHANGE, "v0001", "risk", "approved_with_constraints", constraints, run_cfg=cfg)
    assert cli.main(_signoff_argv(cfg, tmp_path, "v0001", "approved_with_constraints")) == 1
    assert "needs the constraints" in _one_line_error(capsys, "signoff")
    assert every_file(cfg) == before
    assert record_signoff(EXCHANGE, "v0001", "risk", "approved_with_constraints", {"max_lots": 2}, run_cfg=cfg)["constraints"] == {"max_lots": 2}
    assert cli.main(_signoff_argv(cfg, tmp_path, "v0001", "approved_with_constraints", "--constraints", "max 2 lots")) == 0
    assert "| risk | approved_with_constraints | max 2 lots |" in (models(cfg) / "MODEL_CHANGE_LOG.md").read_text()


def test_plain_approval_of_a_run_whose_gate_failed_is_refused(cfg, tmp_path, capsys):
    """Review finding (p9): `approved` was recorded for a run whose gate report says FAIL, though the approval pack tells
    the reviewer a failed candidate gets a rejection. Refused naming the report and the failed criteria, with nothing
    written; `rejected`, or `approved_with_constraints` stating the conditions, are recorded."""
    from oi_ml import cli
    failed = make_run(cfg, "run-20251030-bbbbbbbbbbbb", "two",
                      gate={**passing_gate("run-20251030-bbbbbbbbbbbb"), "passed": False, "decision": "FAIL",
                            "failed": ["deflated_sharpe", "pbo"]})
    before = every_file(cfg)
    with pytest.raises(RegistryError, match=rf"NSE/{failed.name}/reports/gate_report\.json: the promotion gate FAILED "
                                            r"\(deflated_sharpe; pbo\), so plain 'approved' is not recorded; record "
                                            "approved_with_constraints with --constraints stating the conditions, or rejected"):
        record_signoff(EXCHANGE, failed.name, "risk", "approved", run_cfg=cfg)
    assert cli.main(_signoff_argv(cfg, tmp_path, failed.name, "approved")) == 1
    assert "the promotion gate FAILED" in _one_line_error(capsys, "signoff")
    assert every_file(cfg) == before
    assert record_signoff(EXCHANGE, failed.name, "risk", "rejected", run_cfg=cfg)["gate"]["passed"] is False
    assert record_signoff(EXCHANGE, failed.name, "risk", "approved_with_constraints", "paper only", run_cfg=cfg)["decision"] == \
        "approved_with_constraints"
    passed = make_run(cfg, "run-20251030-cccccccccccc", "three", gate=passing_gate("run-20251030-cccccccccccc"))
    assert record_signoff(EXCHANGE, passed.name, "risk", "approved", run_cfg=cfg)["gate"]["passed"] is True
    assert [r["decision"] for r in jsonl(models(cfg) / "model_change_log.jsonl")] == ["rejected", "approved_with_constraints", "approved"]


def test_deploy_of_a_run_that_does_not_exist_names_it_not_the_gate(cfg, tmp_path, capsys):
    """Review finding (p10): `oi-ml deploy --run <typo>` said "run `oi-ml gate --run <typo>` first", and the gate then failed
    on the missing run. The missing run is named first, with the exchange's newest run ids, or the exchange it belongs to;
    the invalid-id example looks like a real run id."""
    from oi_ml import cli
    runs = [make_run(cfg, f"run-2025-08-1{i}-{c * 12}", p) for i, (c, p) in enumerate((("a", "one"), ("b", "two")))]
    typo = runs[1].name[:-1]
    before = every_file(cfg)
    base = ["--data-dir", cfg.data_dir, "--reports-dir", str(tmp_path / "reports"), "deploy", "--operator", "me", "--reason", "x"]
    assert cli.main(base + ["--exchange", "NSE", "--run", typo]) == 1
    assert _one_line_error(capsys, "deploy") == (f"oi-ml deploy: {models(cfg) / 'NSE' / typo}: no manifest.json, so {typo} is not a "
                                                 f"training run of NSE; the newest NSE runs: {runs[1].name}, {runs[0].name}\n")
    assert cli.main(base + ["--exchange", "BSE", "--run", runs[0].name]) == 1
    assert f"not a training run of BSE; it is a run of NSE: give --exchange NSE; BSE has no runs yet" in _one_line_error(capsys, "deploy")
    with pytest.raises(ValueError, match=r"invalid run id 'run/\.\./x': expected a run folder name such as 'run-2025-08-12-b7f4134a6147'"):
        deploy_model(EXCHANGE, "run/../x", "me", "x", run_cfg=cfg)
    with pytest.raises(FileNotFoundError, match=f"no manifest.json, so {typo} is not a training run of NSE"):
        record_signoff(EXCHANGE, typo, "risk", "rejected", run_cfg=cfg)
    assert every_file(cfg) == before


def make_dataset(cfg: RunConfig, version: str, symbols: list[str]) -> Path:
    "A dataset version's manifest as export writes its keys (no files needed): what the registry reads the symbols from."
    folder = Path(cfg.data_dir) / "datasets" / EXCHANGE / version
    folder.mkdir(parents=True)
    manifest = {"version": version, "exchange": EXCHANGE, "window_start": "2025-08-01", "window_end": "2025-10-01", "row_count": 0,
                "files": {}, "content_sha256": "0" * 64, "source": "export", "symbols": symbols}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_run_of_another_index_is_not_deployed_over_the_served_one(cfg):
    """Review finding: a passing `retrain --symbol BANKNIFTY` run deployed over NSE's NIFTY model (the registry key is
    exchange + horizon), after which the live NIFTY stream was refused. Deploy refuses a run trained on other symbols
    than the version its key serves, naming both, with nothing written; a run of the same index deploys; its own
    horizon key (serving nothing) takes it; rollback is unaffected. Symbols are read from the runs' dataset manifests
    (make_run: dataset version 2025-10-<len(payload)>) and recorded in the version."""
    make_dataset(cfg, "2025-10-05", ["NIFTY"])
    make_dataset(cfg, "2025-10-09", ["BANKNIFTY"])
    nifty = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "nifty", gate=passing_gate("run-20251030-aaaaaaaaaaaa"))
    first = deploy_model(EXCHANGE, nifty.name, "asha", "NIFTY model", run_cfg=cfg)
    bank = make_run(cfg, "run-20251031-bbbbbbbbbbbb", "banknifty", gate=passing_gate("run-20251031-bbbbbbbbbbbb", "v0001"),
                    horizon_bars=15)                                   # a passing gate against v0001, as --promote would deploy it
    before = snapshot(cfg)
    with pytest.raises(RegistryError) as err:
        deploy_model(EXCHANGE, bank.name, "asha", "promote", run_cfg=cfg)
    assert str(err.value) == (
        f"run {bank.name} was trained on BANKNIFTY, but NSE serves v0001, trained on NIFTY: a registry key serves one index "
        "per exchange and horizon, so this deploy would replace the NIFTY model (and its live stream would be refused); "
        "retrain on NIFTY (`oi-ml retrain --exchange NSE --symbol NIFTY`) to replace v0001, or gate and deploy it under its "
        "horizon key NSE/15m (--horizon 15m) if that key serves BANKNIFTY or nothing; not deploying")
    assert snapshot(cfg) == before and current_version(EXCHANGE, cfg) == "v0001" and leftovers(cfg) == []
    assert (first["version"], first["symbols"]) == ("v0001", ["NIFTY"]) and "nothing served" in first["symbols_check"]
    # the same index deploys; a rollback returns to v0001 and the BANKNIFTY run is still refused against it
    again = make_run(cfg, "run-20251031-cccccccccccc", "NIFTY", gate=passing_gate("run-20251031-cccccccccccc", "v0001"))
    second = deploy_model(EXCHANGE, again.name, "asha", "NIFTY retrained", run_cfg=cfg)
    assert (second["version"], second["symbols"], second["symbols_check"]) == ("v0002", ["NIFTY"], "NIFTY, as v0001")
    assert rollback(EXCHANGE, operator="ravi", reason="back", run_cfg=cfg)["version"] == "v0001"
    with pytest.raises(RegistryError, match="trained on BANKNIFTY, but NSE serves v0001, trained on NIFTY"):
        deploy(EXCHANGE, bank.name, "asha", "ungated does not skip it", run_cfg=cfg)
    # gated again under its own horizon key, which serves nothing, it goes in there
    write_gate(bank, passing_gate(bank.name, None, horizon="15m"))
    assert deploy_model(EXCHANGE, bank.name, "asha", "BANKNIFTY 15m", run_cfg=cfg, horizon="15m")["symbols"] == ["BANKNIFTY"]
    assert (current_version(EXCHANGE, cfg), current_version(EXCHANGE, cfg, "15m")) == ("v0001", "v0003")
    assert_logs_consistent(cfg)


def test_a_served_version_of_unknown_symbols_is_not_compared(cfg):
    "A version whose dataset manifest is gone (deployed before symbols were recorded, its dataset pruned) does not block a deploy: recorded as not compared."
    old = make_run(cfg, "run-20251030-aaaaaaaaaaaa", "old")            # dataset 2025-10-03: not on disk
    first = deploy(EXCHANGE, old.name, "asha", "old", run_cfg=cfg)
    make_dataset(cfg, "2025-10-09", ["BANKNIFTY"])
    m = deploy(EXCHANGE, make_run(cfg, "run-20251031-bbbbbbbbbbbb", "banknifty").name, "asha", "new", run_cfg=cfg)
    assert first.get("symbols") is None and m.get("symbols") == ["BANKNIFTY"] and m.get("symbols_check") == (
        "not compared: the training symbols of v0001 are unknown (no readable dataset manifest)")

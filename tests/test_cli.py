"""Tests of `oi_ml.cli`, run in-process through `main` with the data and reports directories under tmp_path: the
run config (`--config`) supplies the defaults of the options that have a `RunConfig` counterpart while explicit flags
win (simulate's days/seed/signal strength/bar frequency, the train/automl/retrain seeds), and `pack --run` refuses a
`--dataset` other than the run's. Heavy steps (training, AutoML, the retrain pipeline, pack rendering) are replaced by
recorders: these tests check what the CLI hands them, the library functions have their own tests."""
import dataclasses
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from oi_ml import automl, cli, ingest, packs, pipeline, train
from oi_ml.config import RunConfig
from oi_ml.store import connect
from oi_ml.train import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")  # emitted inside duckdb's .df() on pandas 3.1

NARROW = "[simulation]\nstrikes_each_side = 4\n"   # a narrow option chain keeps each simulated day small


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    "The data and reports directories of the CLI, under tmp_path, set through the environment."
    monkeypatch.setenv("OI_ML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OI_ML_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


def write_config(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def make_run(dirs, exchange: str, run_id: str, manifest: dict | None = None):
    "A model run folder under the data directory (its manifest.json only, `{}` unless given): the run a command is asked about exists."
    folder = dirs / "data" / "models" / exchange / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest or {}))
    return folder


def bars(data_dir) -> list:
    "Rows of underlying_bars (batch_id names the seed and signal strength used), time-sorted."
    with connect(RunConfig(data_dir=str(data_dir)), read_only=True) as con:
        return con.execute("SELECT epoch_ns(timestamp), open, high, low, close, volume, futures_oi, batch_id "
                           "FROM underlying_bars ORDER BY timestamp").fetchall()


def test_simulate_defaults_come_from_the_config_file(tmp_path, capsys):
    config = write_config(tmp_path / "c.toml", "seed = 7\n[simulation]\ndays = 1\nsignal_strength = 0.0\nstrikes_each_side = 4\n")
    assert cli.main(["--data-dir", str(tmp_path / "a"), "--config", config, "simulate", "--exchange", "NSE"]) == 0
    assert "(1 days, seed 7, signal_strength 0)" in capsys.readouterr().out
    narrow = write_config(tmp_path / "narrow.toml", NARROW)   # reference: the same values as explicit flags
    assert cli.main(["--data-dir", str(tmp_path / "b"), "--config", narrow, "simulate", "--exchange", "NSE",
                     "--days", "1", "--seed", "7", "--signal-strength", "0"]) == 0
    from_config, from_flags = bars(tmp_path / "a"), bars(tmp_path / "b")
    assert len(from_config) == 375 and from_config == from_flags
    assert from_config[0][-1].endswith("-seed7-s0")


def test_explicit_flags_beat_the_config_file(tmp_path, capsys):
    config = write_config(tmp_path / "c.toml", "seed = 7\n[simulation]\ndays = 1\nsignal_strength = 0.0\nstrikes_each_side = 4\n")
    assert cli.main(["--data-dir", str(tmp_path / "a"), "--config", config, "simulate", "--exchange", "NSE",
                     "--seed", "3", "--signal-strength", "1", "--start", "2025-08-04"]) == 0
    assert "NSE 2025-08-04..2025-08-04 (1 days, seed 3, signal_strength 1)" in capsys.readouterr().out
    assert bars(tmp_path / "a")[0][-1].endswith("-seed3-s1")


def test_simulate_bar_frequency_defaults_to_the_config_bar_minutes(tmp_path):
    config = write_config(tmp_path / "c.toml", "bar_minutes = 5\n" + NARROW + "days = 1\n")
    assert cli.main(["--data-dir", str(tmp_path / "a"), "--config", config, "simulate", "--exchange", "NSE"]) == 0
    assert len(bars(tmp_path / "a")) == 375 // 5   # 75 five-minute bars in the 375-minute session


def test_simulate_refuses_bars_of_another_length_than_the_config(tmp_path, capsys):
    "Horizon keys, holding periods and annualisation read bar_minutes: 5-minute bars under bar_minutes = 1 would be mislabelled."
    assert cli.main(["--data-dir", str(tmp_path / "a"), "simulate", "--exchange", "NSE", "--days", "1", "--freq", "5min"]) == 1
    err = capsys.readouterr().err
    assert "--freq 5min makes 5-minute bars but the config's bar_minutes is 1; set bar_minutes = 5" in err, err
    assert not (tmp_path / "a" / "warehouse.duckdb").exists()          # refused before the warehouse is touched
    config = write_config(tmp_path / "c.toml", "bar_minutes = 5\n" + NARROW + "days = 1\n")
    assert cli.main(["--data-dir", str(tmp_path / "b"), "--config", config, "simulate", "--exchange", "NSE", "--freq", "5min"]) == 0


def test_without_a_config_file_the_dataclass_defaults_apply():
    "No --config: the simulate options resolve to RunConfig()'s values (the single source of the defaults)."
    args = cli.build_parser().parse_args(["simulate", "--exchange", "NSE"])
    assert (args.days, args.seed, args.signal_strength, args.freq, args.start) == (None, None, None, None, None)
    run = RunConfig()
    resolved = cli.apply_config_defaults(args, run)
    assert (resolved.days, resolved.seed, resolved.signal_strength, resolved.freq, resolved.start) == (
        run.simulation.days, run.seed, run.simulation.signal_strength, f"{run.bar_minutes}min", run.simulation.start)


def test_the_make_demo_commands_parse_unchanged():
    "The Makefile's demo commands: explicit simulate flags and the retrain defaults."
    args = cli.apply_config_defaults(cli.build_parser().parse_args(
        ["simulate", "--exchange", "nse", "--days", "60", "--seed", "0", "--signal-strength", "1.0"]), RunConfig(seed=9))
    assert (args.exchange, args.days, args.seed, args.signal_strength, args.freq) == ("NSE", 60, 0, 1.0, "1min")
    r = cli.build_parser().parse_args(["retrain", "--exchange", "BSE"])
    assert (r.exchange, r.promote, r.no_automl, cli.given_options(r, "retrain")) == ("BSE", False, False, {})  # RetrainConfig's defaults


def test_help_and_data_commands_do_not_import_the_model_libraries(tmp_path):
    """`oi-ml --help`, a subcommand's parse and the data commands (simulate, export, datasets, validate) run without importing LightGBM, XGBoost, scikit-learn
    or Optuna (about 3 s of imports before each command, when the CLI imported every step up front)."""
    import subprocess, sys
    script = f"""
import contextlib, io, sys
from oi_ml import cli
heavy = ("lightgbm", "xgboost", "sklearn", "optuna")
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): cli.main(["--help"])
cli.build_parser().parse_args(["retrain", "--exchange", "NSE"])
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
data = ["--data-dir", {str(tmp_path / "d")!r}, "--config", {write_config(tmp_path / "narrow.toml", NARROW)!r}]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for command in (["simulate", "--exchange", "NSE", "--days", "1"], ["export", "--exchange", "NSE"], ["datasets"], ["validate"]):
        assert cli.main(data + command) == 0, command
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit): cli.main(["automl", "--help"])
window_days = sys.modules["oi_ml.automl"].OrchestratorConfig.window_days   # a config-backed subcommand's help imports its class
assert f"training sessions per segment (default: {{window_days}})" in " ".join(out.getvalue().split())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_config_backed_options_pass_only_what_was_given():
    args = cli.build_parser().parse_args(["automl", "--exchange", "NSE", "--families", "lightgbm", "--step-days", "5"])
    assert cli.given_options(args, "automl") == {"families": ("lightgbm",), "step_days": 5}
    assert cli.option_defaults("automl")["window_days"] == automl.OrchestratorConfig.window_days
    args = cli.build_parser().parse_args(["train", "--exchange", "NSE", "--target", "direction"])
    assert cli.given_options(args, "train") == {"target": "direction"}


def test_train_seed_and_target_defaults(dirs, monkeypatch, capsys):
    calls = []
    def fake_train(exchange, dataset, target, cfg, run_cfg):
        calls.append((target, cfg))
        return dict(run_id="run-x", target=target, family="lightgbm", exchange=exchange, dataset_version="v", metrics_summary={})
    monkeypatch.setattr(train, "train_model", fake_train)
    config = write_config(dirs / "c.toml", "seed = 7\n")
    assert cli.main(["--config", config, "train", "--exchange", "NSE"]) == 0
    assert cli.main(["--config", config, "train", "--exchange", "NSE", "--seed", "2"]) == 0
    assert cli.main(["train", "--exchange", "NSE"]) == 0
    assert calls == [(TrainConfig().target, TrainConfig(seed=7)), (TrainConfig().target, TrainConfig(seed=2)),
                     (TrainConfig().target, TrainConfig(seed=0))]


def test_automl_takes_its_defaults_from_orchestrator_config_and_the_master_seed(dirs, monkeypatch, capsys):
    seen = []
    def fake_run(oc, run_cfg):
        seen.append(oc)
        return SimpleNamespace(summary=dict(run_id="automl-x", total_trials=0, segmentation=dict(n_segments=0)), run_dir=dirs)
    monkeypatch.setattr(automl, "run_orchestrator", fake_run)
    assert cli.main(["--config", write_config(dirs / "c.toml", "seed = 7\n"), "automl", "--exchange", "NSE"]) == 0
    default = automl.OrchestratorConfig(exchange="NSE")
    assert seen == [dataclasses.replace(default, seed=7, train=dataclasses.replace(default.train, seed=7))]


def test_retrain_trains_with_the_master_seed(dirs, monkeypatch, capsys):
    seen = []
    def fake_retrain(rc, run_cfg):
        seen.append(rc)
        return dict(deployed=None, manifest="m.json", gate_line="gate: PASS", pack="p.html")
    monkeypatch.setattr(pipeline, "run_retrain", fake_retrain)
    assert cli.main(["--config", write_config(dirs / "c.toml", "seed = 7\n"), "retrain", "--exchange", "NSE"]) == 0
    assert cli.main(["retrain", "--exchange", "NSE", "--optuna-trials", "2"]) == 0
    default = pipeline.RetrainConfig(exchange="NSE")
    assert seen == [dataclasses.replace(default, train=dataclasses.replace(default.train, seed=7)),
                    dataclasses.replace(default, automl_trials=2)]
    assert "gate: PASS" in capsys.readouterr().out


def test_a_bad_config_file_is_a_clear_error(dirs, capsys):
    assert cli.main(["--config", write_config(dirs / "c.toml", "[simulation]\ndayz = 1\n"), "simulate", "--exchange", "NSE"]) == 1
    assert "unknown config key 'simulation.dayz'" in capsys.readouterr().err
    assert cli.main(["--config", write_config(dirs / "w.toml", "[monitoring]\nlive_rows = 2000.5\n"), "simulate", "--exchange", "NSE"]) == 1
    assert "config key 'monitoring.live_rows' must be a whole number, got 2000.5" in capsys.readouterr().err


def test_a_whole_float_in_a_config_file_is_an_int():
    "TOML `live_rows = 2000.0` is the int 2000 the monitor slices and limits with (a float broke `iloc`)."
    import tempfile
    from pathlib import Path
    from oi_ml.config import load_run_config
    with tempfile.TemporaryDirectory() as d:
        path = write_config(Path(d) / "c.toml", "[monitoring]\nlive_rows = 2000.0\nfeedback_window = 150.0\npsi_alert = 1\n")
        cfg = load_run_config(path)
    assert (cfg.monitoring.live_rows, cfg.monitoring.feedback_window, cfg.monitoring.psi_alert) == (2000, 150, 1.0)
    assert type(cfg.monitoring.live_rows) is int and type(cfg.monitoring.psi_alert) is float


@pytest.fixture
def fake_run(dirs, monkeypatch):
    "A model run folder trained on dataset 2025-08-01 (manifest and gate report only); pack rendering is recorded, not run."
    run_dir = dirs / "data" / "models" / "NSE" / "run-abc"
    (run_dir / "reports").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": "run-abc", "dataset_version": "2025-08-01"}))
    (run_dir / "reports" / "gate_report.json").write_text(json.dumps({"baseline": "v0001", "automl_run": "automl-1"}))
    rendered = []
    monkeypatch.setattr(packs, "render_pack", lambda exchange, label, params, cfg: rendered.append((exchange, label, params)) or dirs / "pack.html")
    monkeypatch.setattr(packs, "render_index", lambda cfg: None)
    return rendered


@pytest.mark.parametrize("run", ["run-abc", "latest"])
def test_pack_refuses_a_dataset_other_than_the_runs(fake_run, capsys, run):
    assert cli.main(["pack", "--exchange", "NSE", "--dataset", "2025-09-15", "--run", run]) == 1
    err = capsys.readouterr().err
    assert "--dataset 2025-09-15 conflicts with run run-abc" in err and "dataset NSE/2025-08-01" in err
    assert fake_run == []   # nothing rendered


@pytest.mark.parametrize("dataset", [[], ["--dataset", "2025-08-01"]])
def test_pack_of_a_run_uses_the_runs_dataset(fake_run, capsys, dataset):
    assert cli.main(["pack", "--exchange", "NSE", "--run", "run-abc", *dataset]) == 0
    assert fake_run == [("NSE", "run-abc", dict(dataset_version="2025-08-01", candidate_run="run-abc",
                                                baseline_version="v0001", automl_run="automl-1"))]


def test_ingest_bhavcopy_takes_the_symbol_option(tmp_path, monkeypatch):
    "--symbol picks which index's options a bhavcopy import stores (it was ignored: the exchange's index was always asked for)."
    from oi_ml.ingest import write_example_bhavcopy   # a valid NIFTY-only file
    path = write_example_bhavcopy(tmp_path / "bhav.csv", "udiff")
    asked, real = [], ingest.import_bhavcopy
    monkeypatch.setattr(ingest, "import_bhavcopy", lambda con, p, ex, symbols=None, run_cfg=None: asked.append(symbols) or real(con, p, ex, symbols, run_cfg=run_cfg))
    assert cli.main(["--data-dir", str(tmp_path / "a"), "ingest", "--bhavcopy", str(path), "--symbol", "nifty"]) == 0
    assert cli.main(["--data-dir", str(tmp_path / "b"), "ingest", "--bhavcopy", str(path)]) == 0
    assert asked == [("NIFTY",), None]                        # None: the exchange's own index (NSE: NIFTY)
    chain = connect(RunConfig(data_dir=str(tmp_path / "a"))).execute("SELECT DISTINCT symbol FROM option_chain_snapshots").fetchall()
    assert chain == [("NIFTY",)]


def simulated_and_exported(tmp_path) -> str:
    "Data directory of a 1-day NSE simulation (narrow chain) exported as a dataset through the CLI."
    data = str(tmp_path / "d")
    narrow = write_config(tmp_path / "narrow.toml", NARROW)
    assert cli.main(["--data-dir", data, "--config", narrow, "simulate", "--exchange", "NSE", "--days", "1"]) == 0
    assert cli.main(["--data-dir", data, "export", "--exchange", "NSE"]) == 0
    return data


def test_validate_checks_each_dataset_version_against_the_warehouse(tmp_path, capsys):
    "A version whose files and manifest agree but that the warehouse never registered is reported (exit 1), naming it."
    data = simulated_and_exported(tmp_path)
    assert cli.main(["--data-dir", data, "validate", "--exchange", "NSE"]) == 0
    assert "hashes and registry ok" in capsys.readouterr().out
    with connect(RunConfig(data_dir=data)) as con: con.execute("DELETE FROM dataset_registry")
    assert cli.main(["--data-dir", data, "validate", "--exchange", "NSE"]) == 1
    assert "is not in the warehouse's dataset_registry" in capsys.readouterr().err


def test_the_cli_prints_oi_mls_own_warnings_as_one_line(tmp_path, capsys):
    "A dataset file restored on re-export is reported as `oi-ml export: warning: ...`, without Python's source-line format."
    data = simulated_and_exported(tmp_path)
    (path,) = (tmp_path / "d" / "datasets" / "NSE").glob("*/ml_features.parquet")
    good = path.read_bytes(); damaged = bytearray(good); damaged[len(damaged) // 2] ^= 1; path.write_bytes(bytes(damaged))
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "export", "--exchange", "NSE"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"oi-ml export: warning: dataset NSE/{path.parent.name} failed verification") and "restored ['ml_features.parquet']" in err
    assert "UserWarning" not in err and "cli.py" not in err and path.read_bytes() == good


def test_gate_prints_each_criterion_as_the_pack_shows_it(dirs, monkeypatch, capsys):
    "Review nit: `oi-ml gate` printed raw floats (walk_forward as a fraction beside its percent rule) and the threshold after the rule."
    from oi_ml import gate
    report = {"passed": False, "failed": ["walk_forward"], "criteria": [
        {"name": "deflated_sharpe", "value": 0.9926828375, "threshold": 0.95, "rule": ">=", "passed": True, "note": ""},
        {"name": "walk_forward", "value": -0.0162028636, "threshold": 0.0, "rule": "> 0 %: net return pooled", "passed": False, "note": "111 trades"}]}
    monkeypatch.setattr(gate, "evaluate_candidate", lambda *a, **k: report)
    make_run(dirs, "BSE", "run-x")
    assert cli.main(["gate", "--exchange", "BSE", "--run", "run-x"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PASS", "deflated_sharpe", "0.9927", "rule", ">=", "(threshold", "0.95)"]
    assert "FAIL  walk_forward" in lines[1] and "-1.620 %" in lines[1] and "rule > 0 %: net return pooled (threshold 0.000 %)  111 trades" in lines[1]
    assert lines[2] == "gate: FAIL (walk_forward)"


def test_gate_exits_3_when_the_candidate_fails(dirs, monkeypatch, capsys):
    "`oi-ml gate` exits 0 on PASS, 3 on FAIL (it exited 0 either way), 1 when the candidate cannot be evaluated."
    from oi_ml import gate
    reports = iter([{"criteria": [], "passed": False, "failed": ["pbo"]}, {"criteria": [], "passed": True, "failed": []}])
    monkeypatch.setattr(gate, "evaluate_candidate", lambda *a, **k: next(reports))
    make_run(dirs, "NSE", "run-x")
    assert cli.main(["gate", "--exchange", "NSE", "--run", "run-x"]) == 3
    assert capsys.readouterr().out.strip() == "gate: FAIL (pbo)"
    assert cli.main(["gate", "--exchange", "NSE", "--run", "run-x"]) == 0
    monkeypatch.setattr(gate, "evaluate_candidate", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("run-x: no such run")))
    assert cli.main(["gate", "--exchange", "NSE", "--run", "run-x"]) == 1
    with pytest.raises(SystemExit): cli.main(["gate", "--help"])
    assert "3 gate FAIL" in " ".join(capsys.readouterr().out.split())


def test_a_bad_signoff_date_names_the_option_and_the_value(dirs, capsys):
    "It printed `oi-ml signoff: month must be in 1..12`, naming neither `--date` nor what was given."
    argv = ["signoff", "--exchange", "NSE", "--run", "v0001", "--reviewer", "me", "--decision", "approved", "--date", "2025-13-01"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "argument --date: invalid date '2025-13-01': month must be in 1..12; expected YYYY-MM-DD" in capsys.readouterr().err
    assert not (dirs / "data" / "models").exists()            # refused before the registry is touched


@pytest.mark.parametrize("value", ["2025-08-04 10:00", "2025-08-04T00:00+05:30"])
def test_a_retrain_as_of_with_a_time_is_a_usage_error(dirs, monkeypatch, capsys, value):
    """`retrain --as-of` took any text: a time of day exported data up to the same time the next day (look-ahead), an offset
    crashed with a TypeError traceback, and both left a run folder named after the value."""
    monkeypatch.setattr(pipeline, "run_retrain", lambda *a, **k: pytest.fail("the retrain ran on a bad --as-of"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["retrain", "--exchange", "NSE", "--as-of", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --as-of: invalid date {value!r}: " in err and "; expected YYYY-MM-DD" in err
    assert not (dirs / "data").exists()                        # refused before anything is written
    assert cli.build_parser().parse_args(["retrain", "--exchange", "NSE", "--as-of", "2025-08-04"]).as_of == "2025-08-04"


def test_an_adhoc_backtest_goes_to_a_folder_named_by_its_window(tmp_path):
    "Not reports/ itself, whose backtest_summary.json is the retrain's holdout result (end to end: tests/test_pipeline.py)."
    from pathlib import Path
    run = Path("models/NSE/run-1")
    assert cli.adhoc_backtest_dir(run, "2025-08-05", "2025-08-06") == run / "reports" / "backtests" / "2025-08-05_2025-08-06"
    assert cli.adhoc_backtest_dir(run, None, None) == run / "reports" / "backtests" / "first_last"
    assert cli.adhoc_backtest_dir(run, "../../x", None).parent == run / "reports" / "backtests"


# ---------------------------------------------------------------- review findings: one-line errors, nothing half-written
def test_pack_refuses_a_path_or_a_damaged_dataset_in_one_line_before_a_kernel_starts(dirs, monkeypatch, capsys):
    """`oi-ml pack --dataset ../../x` wrote the pack outside reports/; a dataset whose Parquet fails its hash started a
    kernel and ended in a papermill traceback, leaving approval_pack.running.ipynb. Both are one line, exit 1, no files."""
    import papermill
    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda template, output, **kw: started.append(output))
    folder = dirs / "data" / "datasets" / "NSE" / "2025-08-01"; folder.mkdir(parents=True)
    (folder / "ml_features.parquet").write_bytes(b"PAR1 damaged PAR1")
    files = {"ml_features.parquet": {"sha256": "0" * 64, "rows": 3}}
    (folder / "manifest.json").write_text(json.dumps(dict(version="2025-08-01", exchange="NSE", window_start="", window_end="",
                                                          row_count=3, files=files, content_sha256="0" * 64, source="test")))
    for dataset, message in (("../../escaped_pack", "--dataset '../../escaped_pack' is not a dataset version id"),
                             ("2025-08-01", "ml_features.parquet: sha256 ")):
        assert cli.main(["pack", "--exchange", "NSE", "--dataset", dataset]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"oi-ml pack: ") and message in err and err.count("\n") == 1, err
    assert cli.main(["pack", "--exchange", "NSE", "--run", "../run-x"]) == 1
    assert "invalid pack label '../run-x'" in capsys.readouterr().err
    assert started == [] and not (dirs / "reports").exists() and not (dirs / "escaped_pack").exists()


def test_a_failed_pack_template_is_one_line(fake_run, monkeypatch, capsys):
    "The template's own error (after the inputs verified) is printed as one line with exit 1, not a papermill traceback."
    def failing(*a, **k): raise packs.PackError("reports/NSE/run-abc: the approval-pack template failed: KeyError: 'x'")
    monkeypatch.setattr(packs, "render_pack", failing)
    assert cli.main(["pack", "--exchange", "NSE", "--run", "run-abc"]) == 1
    assert capsys.readouterr().err == "oi-ml pack: reports/NSE/run-abc: the approval-pack template failed: KeyError: 'x'\n"


def test_backtest_refuses_a_model_of_another_exchange(dirs, monkeypatch, capsys):
    """An NSE run copied under models/BSE/ was backtested on BSE data (exit 0). It is refused, naming the manifest, before
    the dataset loads; a path or a version id as --run is refused too."""
    from oi_ml import datasets
    manifest = {"run_id": "run-abc", "exchange": "NSE", "dataset_version": "2025-08-01"}
    run = make_run(dirs, "BSE", "run-abc", manifest)
    monkeypatch.setattr(train, "load_bundle", lambda folder: SimpleNamespace(manifest=manifest, run_dir=folder))
    loaded = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: loaded.append(a))
    assert cli.main(["backtest", "--exchange", "BSE", "--run", "run-abc"]) == 1
    assert capsys.readouterr().err == (f"oi-ml backtest: {run}/manifest.json: manifest exchange 'NSE' differs from 'BSE'; "
                                       "a model trained on one exchange is not used on another's\n")
    for bad in ("../../etc", "v0001"):
        assert cli.main(["backtest", "--exchange", "BSE", "--run", bad]) == 1
        assert f"invalid run id '{bad}'" in capsys.readouterr().err
    assert loaded == []


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "x = [\n", "Invalid value (at end of document)"),
    ("list.yaml", "- 1\n", "a config file must hold a table of settings (key: value lines), got a list"),
    ("bad.yaml", "a: [\n", "ParserError: while parsing a flow node"),
    ("unknown.toml", "nonsense_field = 3\n", "unknown config key 'nonsense_field'")])
def test_a_broken_config_file_is_named_in_one_line(tmp_path, capsys, name, text, message):
    "`oi-ml --config bad.toml datasets` printed `oi-ml datasets: Invalid value (at end of document)`, naming no file (YAML: a traceback)."
    path = write_config(tmp_path / name, text)
    assert cli.main(["--data-dir", str(tmp_path / "d"), "--config", path, "datasets"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"oi-ml datasets: --config {path}: {message}") and err.count("\n") == 1, err


def test_a_truncated_warehouse_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """A warehouse cut short opens, then fails in a query reading a lost block: one line naming the file, exit 1 (was: a
    traceback). A bug of another kind in a command still raises."""
    data = str(tmp_path / "d")
    assert cli.main(["--data-dir", data, "--config", write_config(tmp_path / "narrow.toml", NARROW), "simulate", "--exchange", "NSE",
                     "--days", "1"]) == 0
    db = RunConfig(data_dir=data).db_path
    with open(db, "r+b") as f: f.truncate(db.stat().st_size // 2 // 4096 * 4096)
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "validate", "--exchange", "NSE"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"oi-ml validate: {db}: DuckDB failed on the warehouse (IOException: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "restore it from a backup" in err
    def buggy(args, cfg): raise TypeError("a bug")
    monkeypatch.setitem(cli.COMMANDS, "validate", buggy)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["--data-dir", data, "validate", "--exchange", "NSE"])



def test_gate_prints_figures_in_the_unit_the_report_gives(dirs, monkeypatch, capsys):
    """`oi-ml gate` took the unit from the pack's list of names: a new criterion stored as a fraction printed as -0.0123
    beside its percent rule. It now prints each figure in the criterion's `unit`; an unknown unit prints the number."""
    from oi_ml import gate
    report = {"passed": False, "failed": ["holdout_return"], "criteria": [
        {"name": "holdout_return", "value": -0.0123, "threshold": 0.0, "rule": "> 0 %: net return", "passed": False, "note": "",
         "unit": "fraction_percent", "direction": "min"},
        {"name": "spread", "value": 12.5, "threshold": 20, "rule": "<= 20 bps", "passed": True, "note": "", "unit": "basis_points",
         "direction": "max"}]}
    monkeypatch.setattr(gate, "evaluate_candidate", lambda *a, **k: report)
    make_run(dirs, "NSE", "run-x")
    assert cli.main(["gate", "--exchange", "NSE", "--run", "run-x"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert "FAIL  holdout_return" in lines[0] and "-1.230 %" in lines[0] and "rule > 0 %: net return (threshold 0.000 %)" in lines[0]
    assert lines[1].split()[:3] == ["PASS", "spread", "12.5"] and "(threshold 20)" in lines[1]
    assert lines[2] == "gate: FAIL (holdout_return)"


# ---------------------------------------------------------------- review: --dataset is a version id, a run manifest's keys, date options
def datasets_snapshot(data) -> dict:
    "Bytes of every file under the datasets folder of the data directory `data`, by relative path."
    from pathlib import Path
    root = Path(data) / "datasets"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_as_bse(data, version: str, name: str):
    "NSE's dataset version copied as BSE's version `name`, its manifest saying so; returns the folder."
    import shutil
    from pathlib import Path
    folder = Path(data) / "datasets" / "BSE" / name
    shutil.copytree(Path(data) / "datasets" / "NSE" / version, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "exchange": "BSE", "version": name, "derived": {}}))
    return folder


@pytest.fixture
def recorded_steps(monkeypatch):
    "train, AutoML and pack rendering replaced by recorders (each must never be reached with a bad --dataset)."
    called = []
    monkeypatch.setattr(train, "train_model", lambda *a, **k: called.append("train"))
    monkeypatch.setattr(automl, "run_orchestrator", lambda *a, **k: called.append("automl"))
    monkeypatch.setattr(packs, "render_pack", lambda *a, **k: called.append("pack"))
    return called


@pytest.mark.parametrize("command", ["features", "labels", "train", "automl", "pack"])
def test_dataset_option_that_is_a_path_is_refused_before_the_command_runs(tmp_path, capsys, recorded_steps, command):
    """Review finding: `oi-ml train --exchange NSE --dataset <data>/datasets/BSE/<v>` trained an NSE model on BSE data,
    and `oi-ml features` with it switched NSE's derived features to a SENSEX table. `--dataset` takes a version id only:
    anything else is one line naming the option, the value, the form expected and NSE's versions; nothing is written."""
    data = simulated_and_exported(tmp_path)
    assert cli.main(["--data-dir", data, "features", "--exchange", "NSE"]) == 0
    bse = copy_as_bse(data, "2025-08-01", "2025-08-05")
    before = datasets_snapshot(data)
    capsys.readouterr()
    for value in (str(bse), "../BSE/2025-08-05", str(tmp_path / "d" / "datasets" / "NSE" / "2025-08-01")):
        assert cli.main(["--data-dir", data, command, "--exchange", "NSE", "--dataset", value]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"oi-ml {command}: --dataset {value!r} is not a dataset version id: expected YYYY-MM-DD or "
                              "YYYY-MM-DD-n") and err.endswith("; NSE's versions: 2025-08-01\n") and err.count("\n") == 1, err
    assert recorded_steps == [] and datasets_snapshot(data) == before


@pytest.mark.parametrize("command", ["features", "labels", "train"])
def test_a_version_folder_whose_manifest_is_another_exchanges_is_refused(tmp_path, capsys, command):
    """BSE's version copied into NSE's folder under another name: its manifest says BSE, so reading it as NSE's is
    refused in one line naming the manifest and both (real steps: the check is in the dataset reader); nothing changes."""
    data = simulated_and_exported(tmp_path)
    assert cli.main(["--data-dir", data, "features", "--exchange", "NSE"]) == 0
    foreign = copy_as_bse(data, "2025-08-01", "2025-08-01").rename(tmp_path / "d" / "datasets" / "NSE" / "2025-08-05")
    before = datasets_snapshot(data)
    capsys.readouterr()
    assert cli.main(["--data-dir", data, command, "--exchange", "NSE", "--dataset", "2025-08-05"]) == 1
    assert capsys.readouterr().err == (f"oi-ml {command}: {foreign}/manifest.json: the manifest is of dataset BSE/2025-08-01, "
                                       "not of NSE/2025-08-05 (a version folder copied from another exchange or renamed by hand?); "
                                       "not read as that version\n")
    assert datasets_snapshot(data) == before and not (tmp_path / "d" / "models").exists()


@pytest.mark.parametrize("missing", ["holdout_window", "dataset_version", "run_id"])
def test_backtest_of_a_run_manifest_missing_a_key_is_one_line(dirs, monkeypatch, capsys, missing):
    """Review finding: a run manifest without `holdout_window` or `dataset_version` ended `oi-ml backtest` in a KeyError
    traceback. `load_bundle` itself now names the missing key (a real manifest, read by the real loader)."""
    from oi_ml import datasets
    run = dirs / "data" / "models" / "NSE" / "run-abc"; run.mkdir(parents=True)
    manifest = {"run_id": "run-abc", "exchange": "NSE", "dataset_version": "2025-08-01", "holdout_window": ["a", "b"],
                "train_window": ["a", "b"], "files": {}}
    del manifest[missing]
    (run / "manifest.json").write_text(json.dumps(manifest))
    loaded = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: loaded.append(a))
    assert cli.main(["backtest", "--exchange", "NSE", "--run", "run-abc"]) == 1
    assert capsys.readouterr().err == f"oi-ml backtest: {run}/manifest.json: missing key(s) '{missing}'\n"
    assert loaded == []


def test_backtest_of_a_run_whose_dataset_version_is_a_path_is_refused(dirs, monkeypatch, capsys):
    "A run manifest's dataset_version is read as a version id too, the error naming the manifest."
    from oi_ml import datasets
    manifest = {"run_id": "run-abc", "exchange": "NSE", "dataset_version": "../BSE/2025-08-01", "holdout_window": ["a", "b"]}
    run = make_run(dirs, "NSE", "run-abc", manifest)
    monkeypatch.setattr(train, "load_bundle", lambda folder: SimpleNamespace(manifest=manifest, run_dir=folder))
    loaded = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: loaded.append(a))
    assert cli.main(["backtest", "--exchange", "NSE", "--run", "run-abc"]) == 1
    assert capsys.readouterr().err.startswith(f"oi-ml backtest: {run}/manifest.json: dataset_version '../BSE/2025-08-01' is not "
                                              "a dataset version id")
    assert loaded == []


@pytest.mark.parametrize("command, message", [
    ("backtest", "invalid date '{}': {}; expected YYYY-MM-DD"),
    ("export", "invalid date or time '{}': {}; expected YYYY-MM-DD or YYYY-MM-DD HH:MM (IST unless an offset is given)")])
@pytest.mark.parametrize("option", ["--start", "--end"])
def test_a_bad_start_or_end_date_names_the_option(dirs, capsys, command, message, option):
    "It printed `oi-ml backtest: month must be in 1..12: 2025-13-01`, naming no option (export: the same)."
    argv = [command, "--exchange", "NSE", *(["--run", "run-abc"] if command == "backtest" else [])]
    bad = {"2025-13-01": "month must be in 1..12", "2025-08-05 25:00": "hour must be in 0..23"}
    for value, error in bad.items() if command == "export" else [("2025-13-01", bad["2025-13-01"])]:
        with pytest.raises(SystemExit) as exit_:
            cli.main([*argv, option, value])
        assert exit_.value.code == 2
        assert f"argument {option}: " + message.format(value, error) in capsys.readouterr().err
    assert not (dirs / "data").exists()                        # refused before anything is opened


def test_export_takes_a_date_or_an_ist_time():
    "export's bounds stay dates (normalised, so an `--end` date is still the whole day) or times as given (naive: IST, `store.to_utc`)."
    parse = lambda *bounds: cli.build_parser().parse_args(["export", "--exchange", "NSE", *bounds])
    args = parse("--start", "20250804", "--end", "2025-08-05 15:29")
    assert (args.start, args.end) == ("2025-08-04", "2025-08-05 15:29")
    assert parse("--start", "2025-08-05T09:15+05:30").start == "2025-08-05T09:15+05:30"


def test_automl_of_a_run_is_the_search_the_gate_accepts(tmp_path, capsys):
    """Review finding: `oi-ml automl` had no --before-day/--target/--run, so its search always covered the candidate's
    holdout and `oi-ml gate --automl` refused it, while the README documents that pairing. With --run the search takes
    the run's dataset, target and settings and stops before its holdout, and the gate evaluates it (exit 0 or 3, not 1);
    a --before-day past the holdout start or another --target is refused, naming both."""
    from oi_ml.simulate import simulate_market
    from oi_ml.datasets import export_training_window
    data = tmp_path / "data"
    cfg = dataclasses.replace(RunConfig(data_dir=str(data)), simulation=dataclasses.replace(RunConfig().simulation, strikes_each_side=4))
    with connect(cfg) as con:
        simulate_market(con, "NSE", "2025-08-01", n_days=12, seed=3, run_cfg=cfg)
        export_training_window(con, "NSE", run_cfg=cfg)
    tiny = TrainConfig(n_splits=2, max_rounds=40, min_regime_rows=10**6, top_k_features=15, shap_rows=50, min_embargo_bars=200)
    run = train.train_model("NSE", cfg=tiny, run_cfg=cfg)["run_id"]
    search = ["--data-dir", str(data), "automl", "--exchange", "NSE", "--run", run, "--window-days", "6", "--step-days", "2",
              "--families", "lightgbm", "--optuna-trials", "1"]
    assert cli.main(search + ["--before-day", "2025-08-30"]) == 1
    assert "--before-day 2025-08-30 is after run" in capsys.readouterr().err
    assert cli.main(search + ["--target", "direction"]) == 1 and "--target direction conflicts with run" in capsys.readouterr().err
    assert cli.main(search) == 0
    out = capsys.readouterr().out
    automl_run = out.split()[1].rstrip(":")
    assert automl_run.startswith("automl-") and f"--automl {automl_run}" in out
    summary = json.loads((data / "models" / "NSE" / automl_run / "reports" / "auto_ml_summary.json").read_text())
    assert summary["config"]["before_day"] == pipeline.holdout_start_day(json.loads((data / "models" / "NSE" / run / "manifest.json").read_text()))
    code = cli.main(["--data-dir", str(data), "gate", "--exchange", "NSE", "--run", run, "--automl", automl_run, "--baseline", "none"])
    captured = capsys.readouterr()
    assert code in (0, cli.GATE_FAIL_EXIT), captured.err
    assert "gate: " in captured.out and "reaches into" not in captured.err


def test_labels_of_daily_bars_cross_sessions_as_train_labels_them(dirs, capsys):
    """`oi-ml labels` on daily bars (bar_minutes = 375) wrote an all-missing labels table: it labelled inside each one-bar
    session, while train_model labels daily bars across sessions (labels_for_bars)."""
    import numpy as np
    import pandas as pd
    from oi_ml.datasets import export_training_window, load_derived
    n = 60
    close = 21000 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    pd.DataFrame({"Date": pd.bdate_range("2023-01-02", periods=n).strftime("%Y-%m-%d"), "Open": open_,
                  "High": np.maximum(open_, close) * 1.004, "Low": np.minimum(open_, close) * 0.996, "Close": close,
                  "Volume": 1000.0}).to_csv(dirs / "daily.csv", index=False)
    config = write_config(dirs / "daily.toml", "bar_minutes = 375\n")
    cfg = RunConfig(data_dir=str(dirs / "data"), bar_minutes=375)
    with connect(cfg) as con:
        ingest.import_ohlcv(con, dirs / "daily.csv", "NIFTY", exchange="NSE", run_cfg=cfg)
        version = export_training_window(con, "NSE", run_cfg=cfg)["version"]
    assert cli.main(["--config", config, "labels", "--exchange", "NSE", "--dataset", version]) == 0, capsys.readouterr().err
    labels = load_derived("NSE", version, "labels", cfg)
    assert labels["triple_barrier"].notna().sum() >= n // 2   # all but the volatility warm-up and the last horizon (it was 0)


def test_rollback_requires_a_reason_as_deploy_does(dirs, capsys):
    "A rollback without --reason was let through the parser (default '') and refused later; --reason is required, as on deploy."
    with pytest.raises(SystemExit) as stop:
        cli.main(["rollback", "--exchange", "NSE"])
    assert stop.value.code == 2 and "the following arguments are required: --reason" in capsys.readouterr().err
    assert not (dirs / "data" / "models").exists()   # nothing touched


# ---------------------------------------------------------------- review: simulate options, symbols, windows, tracebacks, run ids
@pytest.mark.parametrize("argv, message", [
    (["--start", "01/08/2025", "--days", "2"], "argument --start: invalid date '01/08/2025': Invalid isoformat string: '01/08/2025'; expected YYYY-MM-DD"),
    (["--end", "2025-13-01"], "argument --end: invalid date '2025-13-01': month must be in 1..12; expected YYYY-MM-DD"),
    (["--signal-strength", "nan"], "argument --signal-strength: invalid value 'nan': expected a finite number from 0 up (0 = pure noise)"),
    (["--seed", "-1"], "argument --seed: invalid value '-1': expected a whole number from 0 to 2147483647"),
    (["--days", "0"], "argument --days: invalid value '0': expected a whole number from 1 up"),
    (["--freq", "xyz"], "argument --freq: invalid bar frequency 'xyz': "),
    (["--freq", "90s"], "argument --freq: invalid bar frequency '90s': not a whole number of minutes above 0; expected a bar length such as 1min"),
    (["--start", "2025-08-01", "--end", "2025-08-14", "--days", "2"],
     "oi-ml simulate: error: --days 2 and --end 2025-08-14 both say where the simulation stops: give one of them"),
    (["--start", "2025-08-14", "--end", "2025-08-01"], "oi-ml simulate: error: --start 2025-08-14 is after --end 2025-08-01: the window is empty")])
def test_simulate_options_are_checked_naming_the_option(tmp_path, capsys, argv, message):
    """Review proof: `simulate --start 01/08/2025` simulated 8 January (the README says such dates are refused), `--days`
    beside `--end` was ignored, and nan / -1 / xyz ended in messages naming no option. Each is a usage error (exit 2)
    naming the option and the value; nothing is written."""
    narrow = write_config(tmp_path / "narrow.toml", NARROW)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--data-dir", str(tmp_path / "d"), "--config", narrow, "simulate", "--exchange", "NSE", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_window_mistakes_name_the_options_and_what_is_stored(tmp_path, capsys):
    """Review proof: `export --start 2025-08-08 --end 2025-08-05` said 'no ml_features rows ... simulate or ingest first' and
    `retrain --as-of` before the data 'no data for NSE in the warehouse', of a warehouse holding data."""
    data = simulated_and_exported(tmp_path)   # one session: 1 Aug 2025
    for command in (["export"], ["backtest", "--run", "run-x"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--data-dir", data, command[0], "--exchange", "NSE", *command[1:], "--start", "2025-08-08", "--end", "2025-08-05"])
        assert exit_.value.code == 2
        assert f"oi-ml {command[0]}: error: --start 2025-08-08 is after --end 2025-08-05: the window is empty" in capsys.readouterr().err
    assert cli.main(["--data-dir", data, "export", "--exchange", "NSE", "--start", "2025-07-01", "--end", "2025-07-31"]) == 1
    assert capsys.readouterr().err == ("oi-ml export: no ml_features rows for NSE between 2025-07-01 and 2025-07-31: "
                                       "NSE has NIFTY 2025-08-01..2025-08-01 (IST)\n")
    assert cli.main(["--data-dir", data, "retrain", "--exchange", "NSE", "--no-automl", "--as-of", "2025-07-31"]) == 1
    assert capsys.readouterr().err == ("oi-ml retrain: no data for NSE up to as_of 2025-07-31 (--as-of): NSE has underlying bars "
                                       "2025-08-01..2025-08-01 (IST); pass a day from 2025-08-01 on, or no --as-of for all data\n")


def test_a_second_index_on_an_exchange_is_exported_and_labelled_by_itself(tmp_path, capsys, monkeypatch):
    """Review proof: after `ingest --ohlcv ... --symbol BANKNIFTY --exchange NSE` every NSE export held both indices, `labels`
    failed on 'timestamp is not strictly increasing' and export had no --symbol. Export holds NIFTY unless --symbol says
    otherwise (and says what else the window holds); labels work on either; retrain takes --symbol."""
    from test_datasets import ohlcv_sessions_csv
    data = str(tmp_path / "d")
    assert cli.main(["--data-dir", data, "--config", write_config(tmp_path / "narrow.toml", NARROW), "simulate", "--exchange", "NSE",
                     "--days", "2"]) == 0
    assert cli.main(["--data-dir", data, "ingest", "--ohlcv", ohlcv_sessions_csv(tmp_path / "bank.csv"), "--symbol", "BANKNIFTY",
                     "--exchange", "NSE"]) == 0
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "export", "--exchange", "NSE"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dataset NSE/2025-08-04: 750 rows of NIFTY, ") and out[1] == (
        "NSE also holds BANKNIFTY in this window: a dataset holds one symbol; `oi-ml export --exchange NSE --symbol BANKNIFTY` exports it")
    assert cli.main(["--data-dir", data, "labels", "--exchange", "NSE"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "export", "--exchange", "NSE", "--symbol", "banknifty"]) == 0
    assert capsys.readouterr().out.startswith("dataset NSE/2025-08-04-2: 750 rows of BANKNIFTY, ")
    assert cli.main(["--data-dir", data, "labels", "--exchange", "NSE", "--dataset", "2025-08-04-2"]) == 0, capsys.readouterr().err
    seen = []
    monkeypatch.setattr(pipeline, "run_retrain", lambda rc, run_cfg: seen.append(rc.symbol) or dict(
        deployed=None, manifest="m.json", gate_line="gate: PASS", pack="p.html"))
    assert cli.main(["--data-dir", data, "retrain", "--exchange", "NSE", "--symbol", "banknifty"]) == 0
    assert cli.main(["--data-dir", data, "retrain", "--exchange", "NSE"]) == 0 and seen == ["BANKNIFTY", None]


def test_labels_refuse_a_version_holding_two_symbols_naming_them(tmp_path, capsys, monkeypatch):
    "A version an older export made of two indices: labels name both and the remedy (it was 'timestamp is not strictly increasing')."
    from oi_ml import datasets
    data = simulated_and_exported(tmp_path)
    raw, manifest = datasets.load_dataset("NSE", run_cfg=RunConfig(data_dir=data))
    two = pd.concat([raw, raw.assign(symbol="BANKNIFTY")], ignore_index=True).sort_values("timestamp", kind="mergesort")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (two, {**manifest, "symbols": ["BANKNIFTY", "NIFTY"]}))
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "labels", "--exchange", "NSE"]) == 1
    assert capsys.readouterr().err == (
        "oi-ml labels: dataset NSE/2025-08-01 holds 2 symbols (BANKNIFTY, NIFTY) but labels, training and AutoML take one symbol "
        "per dataset: export one with `oi-ml export --exchange NSE --symbol BANKNIFTY` (or another of them) and pass its version as --dataset\n")


@pytest.mark.parametrize("exchange", [[], ["--exchange", "NSE"]])
def test_ingest_refuses_another_exchanges_index(tmp_path, capsys, exchange):
    "`ingest --symbol SENSEX` without --exchange stored BSE's index as NSE's: refused (usage error, nothing written); with --exchange BSE it is stored."
    from test_datasets import ohlcv_sessions_csv
    data, csv = str(tmp_path / "d"), ohlcv_sessions_csv(tmp_path / "sensex.csv", start_price=80_000.0)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--data-dir", data, "ingest", "--ohlcv", csv, "--symbol", "sensex", *exchange])
    how = "--exchange NSE" if exchange else "no --exchange (ingest stores into NSE then)"
    assert exit_.value.code == 2
    assert f"oi-ml ingest: error: --symbol SENSEX is BSE's index, but {how}: pass --exchange BSE; nothing was stored" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert cli.main(["--data-dir", data, "ingest", "--ohlcv", csv, "--symbol", "sensex", "--exchange", "BSE"]) == 0


def test_a_folder_option_naming_a_file_is_one_line(tmp_path, capsys):
    "Review proof: `--data-dir <a file> simulate` and `--reports-dir <a file> pack` ended in FileExistsError / NotADirectoryError tracebacks."
    afile = tmp_path / "afile"; afile.write_text("x")
    assert cli.main(["--data-dir", str(afile), "simulate", "--exchange", "NSE", "--days", "1"]) == 1
    assert capsys.readouterr().err == f"oi-ml simulate: {afile}: File exists ({afile} is a file where a folder belongs: --data-dir must name a folder)\n"
    data = simulated_and_exported(tmp_path)
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "--reports-dir", str(afile), "pack", "--exchange", "NSE"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"oi-ml pack: {afile}/") and err.endswith(f"({afile} is a file where a folder belongs: --reports-dir must name a folder)\n")
    assert err.count("\n") == 1 and afile.read_text() == "x"


def test_automl_storage_that_cannot_be_opened_is_one_line(tmp_path, capsys):
    "Review proof: the README's PostgreSQL --storage without its driver, and an SQLite file in a missing folder, ended in tracebacks."
    import importlib.util
    data = simulated_and_exported(tmp_path)
    cases = [(f"sqlite:///{tmp_path}/no/such/dir/optuna.db", "OperationalError: unable to open database file")]
    if importlib.util.find_spec("psycopg2") is None:
        cases.append(("postgresql+psycopg2://user:secret@host/db", "postgresql+psycopg2://user:***@host/db (--storage): ModuleNotFoundError: "
                                                                     "No module named 'psycopg2'; for PostgreSQL install its driver: pip install psycopg2-binary"))
    capsys.readouterr()
    for storage, said in cases:
        code = cli.main(["--data-dir", data, "automl", "--exchange", "NSE", "--storage", storage, "--optuna-trials", "1"])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("oi-ml automl: cannot open the Optuna storage ") and said in err, err
        assert err.count("\n") == 1 and "secret" not in err


def test_a_wrong_run_id_names_the_exchanges_runs_and_where_it_is(dirs, monkeypatch, capsys):
    """Review proof: `pack --run <typo>` printed a raw '[Errno 2] ...', and `backtest --exchange BSE --run <an NSE run>` said
    'not a model run' without saying the run is NSE's. Each command checks the run first: a typo lists the exchange's
    newest runs, a run of the other exchange says so."""
    from oi_ml import gate
    for day, run in (("2025-08-11", "run-2025-08-11-0123456789ab"), ("2025-08-12", "run-2025-08-12-b7f4134a6147")):
        make_run(dirs, "NSE", run, {"run_id": run, "exchange": "NSE", "dataset_version": "2025-08-01", "created_at": f"{day}T10:00:00+00:00"})
    monkeypatch.setattr(packs, "render_pack", lambda *a, **k: pytest.fail("a pack was rendered"))
    monkeypatch.setattr(gate, "evaluate_candidate", lambda *a, **k: pytest.fail("the gate ran"))
    monkeypatch.setattr(automl, "run_orchestrator", lambda *a, **k: pytest.fail("AutoML ran"))
    for command in ("pack", "backtest", "gate", "automl"):
        assert cli.main([command, "--exchange", "NSE", "--run", "run-2025-08-12-b7f4134a614"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"oi-ml {command}: ") and "run-2025-08-12-b7f4134a614 is not a training run of NSE" in err, err
        assert "the newest NSE runs: run-2025-08-12-b7f4134a6147, run-2025-08-11-0123456789ab" in err and "Errno" not in err
        assert cli.main([command, "--exchange", "BSE", "--run", "run-2025-08-12-b7f4134a6147"]) == 1
        assert "it is a run of NSE: give --exchange NSE" in capsys.readouterr().err

"""Tests of `oi_ml.config`'s run configuration as a `--config` file reaches it: every field is held to its type and
range (`CONFIG_RULES`), so a value no stage can use fails at load time in one line naming the file and the key (was: a
ZeroDivisionError or TypeError traceback from deep inside a command, a numpy message naming no key, or silent
acceptance); a file that holds no table of settings says so; a UTF-8 byte-order mark is accepted."""
import math

import pytest

from oi_ml import cli
from oi_ml.config import RunConfig, StalenessConfig, load_run_config


def run_cli(tmp_path, capsys, name: str, text: str, *command: str) -> tuple[int, str]:
    "(exit code, stderr) of `oi-ml --config <name holding text> --data-dir ... <command>` (default: datasets)."
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    code = cli.main(["--config", str(path), "--data-dir", str(tmp_path / "d"), *(command or ("datasets",))])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name, text, message", [
    ("bm0.toml", "bar_minutes = 0\n", "config key 'bar_minutes' must be a whole number of minutes from 1 to 375 (the session's "
                                      "length: one bar a session), got 0"),
    ("bmneg.toml", "bar_minutes = -5\n", "config key 'bar_minutes' must be a whole number of minutes from 1 to 375"),
    ("bmbig.toml", "bar_minutes = 400\n", "config key 'bar_minutes' must be a whole number of minutes from 1 to 375"),
    ("dd.toml", "data_dir = 5\n", "config key 'data_dir' must be a non-empty path (text), got 5"),
    ("rd.toml", 'reports_dir = ["a"]\n', "config key 'reports_dir' must be a non-empty path (text), got ['a']"),
    ("list.yaml", "- a\n- b\n", "a config file must hold a table of settings (key: value lines), got a list: ['a', 'b']"),
    ("sim5.toml", "simulation = 5\n", "config key 'simulation' must be a table of settings ([simulation] in TOML"),
    ("qneg.toml", "[quality]\nmax_bar_move = -1\n", "config key 'quality.max_bar_move' must be a finite number above 0, got -1.0"),
    ("frac.toml", "[quality]\nmax_missing_frac = 2.0\n", "config key 'quality.max_missing_frac' must be a fraction from 0 to 1, got 2.0"),
    ("nan.toml", "[monitoring]\npsi_alert = nan\n", "config key 'monitoring.psi_alert' must be a finite number above 0, got nan"),
    ("days.toml", "[simulation]\ndays = -3\n", "config key 'simulation.days' must be a whole number from 1 up, got -3"),
    ("start.toml", '[simulation]\nstart = "01/08/2025"\n', "config key 'simulation.start' must be a date written YYYY-MM-DD"),
    ("seed.toml", "seed = -1\n", "config key 'seed' must be a whole number from 0 to 2147483647"),
    ("stale.toml", "[staleness]\nvix_max_minutes = -5\n", "config key 'staleness.vix_max_minutes' must be a number from 0 up"),
    ("age.toml", "[monitoring]\nmax_live_age_minutes = 0\n", "config key 'monitoring.max_live_age_minutes' must be a finite number of minutes above 0, got 0"),
    ("warn.toml", "[monitoring]\npsi_warn = 0.5\n", "config key 'monitoring.psi_warn' must not exceed monitoring.psi_alert (0.25)")])
def test_a_config_value_no_stage_can_use_is_one_line_naming_file_and_key(tmp_path, capsys, name, text, message):
    code, err = run_cli(tmp_path, capsys, name, text)
    assert code == 1 and err.startswith(f"oi-ml datasets: --config {tmp_path / name}: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err and "AttributeError" not in err


def test_bar_minutes_zero_stops_simulate_before_it_divides(tmp_path, capsys):
    "The reviewer's `simulate --days 2` with `bar_minutes = 0` raised ZeroDivisionError in simulate.py."
    code, err = run_cli(tmp_path, capsys, "bm0.toml", "bar_minutes = 0\n", "simulate", "--exchange", "NSE", "--days", "2")
    assert code == 1 and "config key 'bar_minutes' must be a whole number of minutes from 1 to 375" in err, err
    assert not (tmp_path / "d" / "warehouse.duckdb").exists()   # nothing was written


def test_a_bad_value_in_the_file_is_an_error_even_when_a_flag_overrides_it(tmp_path):
    "`data_dir = 5` in the file is reported although --data-dir replaces it (the file is wrong either way)."
    (tmp_path / "dd.toml").write_text("data_dir = 5\n")
    with pytest.raises(ValueError, match=r"config key 'data_dir' must be a non-empty path \(text\), got 5"):
        load_run_config(tmp_path / "dd.toml", data_dir=str(tmp_path / "d"))


def test_a_utf8_byte_order_mark_an_upper_case_suffix_and_a_toml_date_are_accepted(tmp_path):
    "A BOM (Windows editors) gave 'Invalid statement (at line 1, column 1)'; an unquoted TOML date reached the simulator as a date."
    path = tmp_path / "bom.TOML"
    path.write_bytes("\ufeffseed = 1\n[simulation]\nstart = 2025-09-01\n".encode("utf-8"))
    cfg = load_run_config(path)
    assert (cfg.seed, cfg.simulation.start) == (1, "2025-09-01")
    yaml_path = tmp_path / "bom.yaml"
    yaml_path.write_bytes("\ufeffseed: 2\n".encode("utf-8"))
    assert load_run_config(yaml_path).seed == 2


def test_overrides_are_checked_too():
    "The approval-pack template builds its config from JSON overrides: the same rules apply."
    with pytest.raises(ValueError, match="config key 'monitoring.live_rows' must be a whole number from 1 up, got 0"):
        load_run_config(overrides={"monitoring": {"live_rows": 0}})


def test_defaults_and_the_limits_of_each_range_are_valid():
    from oi_ml.config import check_run_config   # new: imported here so the other tests run on code without it
    assert check_run_config(RunConfig()) == RunConfig()
    assert load_run_config(overrides={"bar_minutes": 375, "quality": {"max_missing_frac": 1.0}, "monitoring": {"degrade_threshold": 0},
                                      "staleness": {"vix_max_minutes": math.inf}}).bar_minutes == 375
    assert check_run_config(RunConfig(staleness=StalenessConfig(book_max_minutes=0.0))).staleness.book_max_minutes == 0.0


# ---------------------------------------------------------------- dated exchange facts (fixcal)
def test_bse_weekly_expiry_follows_the_weekday_in_force_on_the_expiry_date():
    """DOMAIN.md: SENSEX weekly expiry is Tuesday during Jan-Aug 2025. The switch of Wed 1 Jan 2025 was read on the week's
    Monday (30 Dec 2024), so that week kept a Friday expiry on 3 Jan 2025; no 2025 expiry may fall on a Friday."""
    import datetime as dt
    from oi_ml.config import BSE, NSE, monthly_expiry, weekly_expiries
    got = weekly_expiries(BSE, dt.date(2024, 12, 16), dt.date(2025, 1, 20))
    assert got == [dt.date(2024, 12, 20), dt.date(2024, 12, 27), dt.date(2025, 1, 7), dt.date(2025, 1, 14)], got
    assert all(d.weekday() == 1 for d in weekly_expiries(BSE, dt.date(2025, 1, 1), dt.date(2025, 8, 31)))   # holidays aside: Tuesdays
    assert monthly_expiry(BSE, 2024, 12) == dt.date(2024, 12, 27) and monthly_expiry(BSE, 2025, 1) == dt.date(2025, 1, 28)
    # the Sep 2025 switches (dated Mon 1 Sep) are unchanged
    assert weekly_expiries(NSE, dt.date(2025, 8, 25), dt.date(2025, 9, 5)) == [dt.date(2025, 8, 28), dt.date(2025, 9, 2)]
    assert weekly_expiries(BSE, dt.date(2025, 8, 25), dt.date(2025, 9, 5)) == [dt.date(2025, 8, 26), dt.date(2025, 9, 4)]


def test_a_contract_lot_change_holds_only_from_its_start_date():
    """A NIFTY option expiring 25 Jun 2026 traded on 25 Apr 2024 was in lots of 50 (was: 65, the lot of contracts after the
    30 Dec 2025 expiry, with no start date on the rule)."""
    import datetime as dt
    from oi_ml.config import NSE
    assert NSE.contract_lot_size(dt.date(2024, 4, 25), dt.date(2026, 6, 25)) == 50 == NSE.lot_size(dt.date(2024, 4, 25))
    assert NSE.contract_lot_size(dt.date(2025, 6, 2), dt.date(2026, 6, 25)) == 75
    assert NSE.contract_lot_size(dt.date(2025, 12, 24), dt.date(2026, 1, 6)) == 65           # the change itself still holds
    assert NSE.contract_lot_size(dt.date(2025, 12, 24), dt.date(2025, 12, 30)) == 75


def test_the_muhurat_sessions_are_dated_special_sessions_of_both_exchanges():
    import datetime as dt
    from oi_ml.config import BSE, NSE
    for exchange in (NSE, BSE):
        assert exchange.special_session(dt.date(2024, 11, 1))[1:] == (dt.time(18, 0), dt.time(19, 0), "Muhurat trading")
        assert exchange.special_session(dt.date(2025, 10, 21))[1:] == (dt.time(13, 45), dt.time(14, 45), "Muhurat trading")
        assert exchange.special_session(dt.date(2025, 10, 20)) is None


def test_the_live_windows_staleness_limit_is_a_run_setting(tmp_path):
    "A monitoring run's staleness limit comes from the run's [monitoring] section (43_monitor had it only in MonitorConfig)."
    from oi_ml.monitor import monitor_config
    path = tmp_path / "age.toml"; path.write_text("[monitoring]\nmax_live_age_minutes = 90\n")
    cfg = load_run_config(path)
    assert cfg.monitoring.max_live_age_minutes == 90 and monitor_config(cfg.monitoring).max_live_age_minutes == 90
    assert monitor_config(load_run_config().monitoring).max_live_age_minutes is None   # default: reported, not judged

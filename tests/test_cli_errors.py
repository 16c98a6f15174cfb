"""User mistakes on the command line and in settings: one line on stderr saying what is wrong and what to
do, exit status 2; `personalize --debug` shows the traceback instead. Runs the installed `personalize`
command against real SQLite and PostgreSQL URLs and real (broken) model files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from personalize.config import REPO_ROOT, InvalidSettings, get_settings
from personalize.db.session import upgrade

CLI = str(Path(sys.executable).with_name("personalize"))
MODEL = REPO_ROOT / "models" / "transformer"


def _personalize(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONALIZE_")}
    env |= {"PERSONALIZE_DATA_DIR": str(tmp_path / "data"), **settings}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def _one_line_mistake(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("PERSONALIZE_STAGE_LEASE_S", "-5", "allowed: 10 to 86400"),
        ("PERSONALIZE_PROFILE_WINDOW_DAYS", "0", "allowed: 1 to 3650"),
        ("PERSONALIZE_PLAYLIST_SIZE", "-1", "allowed: 1 to 1000"),
        ("PERSONALIZE_INGEST_CHUNK_ROWS", "0", "allowed: 1 to 100000000"),
        ("PERSONALIZE_PUBLIC_BASE_URL", "evil.example", "allowed: an absolute http:// or https:// URL"),
    ],
)
def test_settings_out_of_range_are_refused_at_start(tmp_path, monkeypatch, variable, value, allowed):
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as refused:
        get_settings()
    assert str(refused.value).startswith(f"{variable}={value} ") and allowed in str(refused.value)
    monkeypatch.delenv(variable)
    result = _personalize(tmp_path, "run", "--date", "2026-11-24", **{variable: value})
    _one_line_mistake(result, f"{variable}={value}", allowed)


def test_settings_in_range_and_defaults_are_accepted(monkeypatch):
    monkeypatch.setenv("PERSONALIZE_PLAYLIST_SIZE", "12")
    monkeypatch.setenv("PERSONALIZE_PUBLIC_BASE_URL", "https://api.example.com/")
    settings = get_settings()
    assert settings.playlist_size == 12 and settings.public_base_url == "https://api.example.com"
    with pytest.raises(
        InvalidSettings, match="PERSONALIZE_CLUSTER_K_MIN=13 is above PERSONALIZE_CLUSTER_K_MAX=12"
    ):
        get_settings(cluster_k_min=13)
    with pytest.raises(InvalidSettings, match="PERSONALIZE_STAGE_LEASE_S=120 is under 3 beats"):
        get_settings(stage_heartbeat_s=60, stage_lease_s=120)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--date", "2026-11-24garbage"),
        ("run-release", "--date", "nope"),
        ("report", "--date", "24.11.2026"),
        ("profile", "--date", "2026-13-01"),
    ],
)
def test_a_bad_date_is_one_line_and_exit_2(tmp_path, args):
    line = _one_line_mistake(_personalize(tmp_path, *args), "--date", "YYYY-MM-DD")
    assert repr(args[-1]) in line


def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _personalize(tmp_path, "report", "--date", "2026-11-24", PERSONALIZE_DATABASE_URL=url)
    _one_line_mistake(result, "has no schema", "personalize db upgrade")


def test_an_empty_database_says_how_to_get_events(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    result = _personalize(tmp_path, "run", PERSONALIZE_DATABASE_URL=url)
    _one_line_mistake(result, "no listening events", "personalize ingest events", "personalize simulate")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_an_unreachable_database_is_one_line(tmp_path, engine):
    if engine == "sqlite":
        (tmp_path / "folder.db").mkdir()  # a folder where the file should be: it cannot be opened
        url = f"sqlite:///{tmp_path / 'folder.db'}"
    else:
        url = "postgresql+psycopg://postgres:secret@127.0.0.1:1/personalize"  # nothing listens on port 1
    result = _personalize(tmp_path, "run", "--date", "2026-11-24", PERSONALIZE_DATABASE_URL=url)
    line = _one_line_mistake(result, "does not answer", "PERSONALIZE_DATABASE_URL")
    assert "secret" not in line  # the password is never printed


GENERATE = ("generate", "--key", "C", "--tempo", "100", "--programs", "0", "--seconds", "8", "--out")


def test_a_corrupt_or_missing_model_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for part in MODEL.glob("*.json"):
        shutil.copy(part, corrupt / part.name)
    (corrupt / "model.pt").write_bytes((MODEL / "model.pt").read_bytes()[:50_000])  # a cut-off copy
    out = str(tmp_path / "x.mid")
    result = _personalize(tmp_path, *GENERATE, out, "--model-dir", str(corrupt))
    _one_line_mistake(result, f"{corrupt / 'model.pt'} cannot be read", "corrupt", "retrain")
    (corrupt / "model.pt").unlink()
    result = _personalize(tmp_path, *GENERATE, out, "--model-dir", str(corrupt))
    _one_line_mistake(result, f"{corrupt / 'model.pt'} is missing")


def test_debug_shows_the_traceback(tmp_path):
    result = _personalize(tmp_path, "--debug", "run-release", "--date", "nope")
    assert result.returncode not in (0, 2)
    assert "Traceback" in result.stderr or "UserError" in result.stderr
    assert "--date 'nope' is not a date" in result.stderr

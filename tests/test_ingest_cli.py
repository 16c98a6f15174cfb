"""`personalize ingest ...` exits 0 when the file was read (printing counts, quarantined rows included) and
non-zero with a clear message when the file itself cannot be read."""

from __future__ import annotations

from typer.testing import CliRunner

from personalize.cli import app

CATALOG = "track_id,title,duration_s,tempo_bpm,key,meter,programs\nt1,One,180,120,D minor,3/4,0\n"
EVENTS = (
    "event_id,listener_id,track_id,ts,ms_played,kind\n"
    "e1,l1,t1,2026-01-01T10:00:00Z,1000,play\n"
    "e2,l1,t404,2026-01-01T10:00:00Z,1000,play\n"
)


def _env(ctx) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "PERSONALIZE_DATABASE_URL": ctx.settings.resolved_database_url,
        "PERSONALIZE_DATA_DIR": str(ctx.settings.data_dir),
        "COLUMNS": "200",
    }


def test_cli_ingests_and_prints_counts(ctx, tmp_path):
    runner = CliRunner()
    (tmp_path / "catalog.csv").write_text(CATALOG)
    (tmp_path / "events.csv").write_text(EVENTS)

    result = runner.invoke(app, ["ingest", "catalog", str(tmp_path / "catalog.csv")], env=_env(ctx))
    assert result.exit_code == 0, result.output
    assert "ingested" in result.output

    result = runner.invoke(app, ["ingest", "events", str(tmp_path / "events.csv")], env=_env(ctx))
    assert result.exit_code == 0, result.output  # a quarantined row does not fail the command
    assert "quarantined: unknown_track" in result.output
    assert "t404" in result.output  # the first quarantined rows are shown with what to do

    result = runner.invoke(app, ["ingest", "events", str(tmp_path / "events.csv")], env=_env(ctx))
    assert result.exit_code == 0
    assert "already present" in result.output


def test_cli_unreadable_file_exits_non_zero(ctx, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "events", str(tmp_path / "nope.csv")], env=_env(ctx))
    assert result.exit_code == 2
    assert "no such file" in result.output

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["ingest", "catalog", str(tmp_path / "bad.csv")], env=_env(ctx))
    assert result.exit_code == 2
    assert "missing column" in result.output

    result = runner.invoke(app, ["ingest", "catalog"], env=_env(ctx))
    assert result.exit_code == 2

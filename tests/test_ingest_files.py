"""Files as people have them: compressed (.gz, .bz2, .zst, .zip), in Windows-1252, with spreadsheet
timestamps, or not events at all; every message short and naming the file; a file that is mostly bad
stops before anything is stored."""

from __future__ import annotations

import bz2
import gzip
import json
import zipfile

import pytest
import zstandard
from sqlalchemy import func, select
from typer.testing import CliRunner

from personalize.cli import app
from personalize.db.models import Listener, ListeningEvent, QuarantinedRow
from personalize.ingest import IngestFileError, ingest_catalog_frame, ingest_events
from personalize.ingest.report import MESSAGE_MAX_CHARS

HEADER = "event_id,listener_id,track_id,ts,ms_played,kind,comment"


def _catalog(ctx) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    frame = pd.DataFrame(
        {"track_id": ["t1"], "title": ["One"], "duration_s": [180.0], "tempo_bpm": [120.0],
         "key": ["D minor"], "meter": ["3/4"], "programs": ["0"]}
    )  # fmt: skip
    assert ingest_catalog_frame(ctx, frame, source="test-catalog").ingested == 1


def _events_text(n: int, ts: str = "2026-01-01T10:{m:02d}:00Z", listener: str = "l{i}") -> str:
    rows = [
        f"e{i},{listener.format(i=i)},t1,{ts.format(m=i % 60)},1000,play,café crème n°{i}" for i in range(n)
    ]
    return HEADER + "\n" + "\n".join(rows) + "\n"


def _count(ctx, model) -> int:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def _zip(path, text: str) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/events.csv", text)


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("events.csv.gz", gzip.compress),
        ("events.csv.bz2", bz2.compress),
        ("events.csv.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("events.zip", None),
    ],
)
def test_compressed_files_go_in_like_plain_ones(ctx, tmp_path, name, pack):
    _catalog(ctx)
    text = _events_text(30)
    path = tmp_path / name
    if pack is None:
        _zip(path, text)
    else:
        path.write_bytes(pack(text.encode()))
    report = ingest_events(ctx, path)
    assert (report.rows_read, report.ingested, report.quarantined) == (30, 30, {})
    assert any("unpacked from" in note for note in report.notes)
    assert ingest_events(ctx, path).already_present == 30  # idempotent, source = the archive's path


def test_a_cut_off_gzip_is_refused_naming_the_file_and_gzip(ctx, tmp_path):
    _catalog(ctx)
    data = gzip.compress(_events_text(2000).encode())
    path = tmp_path / "events.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestFileError, match="gzip data is corrupt or cut off") as err:
        ingest_events(ctx, path)
    assert str(path) in str(err.value) and _count(ctx, ListeningEvent) == 0


def test_windows_1252_is_detected_and_read_right(ctx, tmp_path):
    """Accents in an ignored column and in listener ids, in Windows-1252: every event goes in, the ids as
    written (before, 18 % of such a file was quarantined as bad_encoding)."""
    _catalog(ctx)
    path = tmp_path / "excel-export.csv"
    path.write_bytes(_events_text(200, listener="José Müller Très {i}").encode("cp1252"))  # cp1250: "Trčs"
    report = ingest_events(ctx, path)
    assert (report.ingested, report.quarantined) == (200, {}), report.examples
    with ctx.sessions() as session:
        assert "José Müller Très 7" in set(session.scalars(select(Listener.listener_id)))
    assert any("read as cp1252" in note for note in report.notes)
    # Given explicitly, the same
    again = ingest_events(ctx, path, encoding="cp1252", source="again")
    assert again.already_present == 200


def test_json_exports_handed_to_the_csv_reader_get_a_short_message_naming_the_importer(ctx, tmp_path):
    listens = [
        {"listened_at": 1700000000 + i, "track_metadata": {"artist_name": "A" * 40, "track_name": "T" * 40}}
        for i in range(8000)
    ]
    path = tmp_path / "listenbrainz.json"
    path.write_text(json.dumps(listens))  # one line, about a megabyte
    assert path.stat().st_size > 900_000
    with pytest.raises(IngestFileError) as err:
        ingest_events(ctx, path)
    message = str(err.value)
    assert len(message) <= MESSAGE_MAX_CHARS and str(path) in message
    assert "ListenBrainz" in message and "personalize ingest listenbrainz" in message


def test_a_huge_header_without_the_columns_is_quoted_short(ctx, tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"Column Number {i}" for i in range(50_000)) + "\n1\n")
    with pytest.raises(IngestFileError, match="missing column") as err:
        ingest_events(ctx, path)
    assert len(str(err.value)) <= MESSAGE_MAX_CHARS and "Column Number 0" in str(err.value)


def test_a_mostly_bad_file_stops_before_storing_anything_and_says_the_fix(ctx, tmp_path):
    _catalog(ctx)
    path = tmp_path / "excel.csv"
    path.write_text(_events_text(500, ts="11/20/2026 18:{m:02d}"))
    with pytest.raises(IngestFileError) as err:
        ingest_events(ctx, path)
    message = str(err.value)
    assert "500 of the first 500 rows" in message and "nothing was stored" in message
    assert "--ts-format '%m/%d/%Y %H:%M'" in message and "--accept-bad-rows" in message
    assert len(message) <= MESSAGE_MAX_CHARS
    assert (_count(ctx, ListeningEvent), _count(ctx, QuarantinedRow)) == (0, 0)

    report = ingest_events(ctx, path, ts_format="%m/%d/%Y %H:%M")
    assert (report.ingested, report.quarantined) == (500, {})
    with ctx.sessions() as session:
        first = session.get(ListeningEvent, "e5")
    assert (first.ts.month, first.ts.day, first.ts.hour, first.ts.minute) == (11, 20, 18, 5)


def test_accept_bad_rows_goes_on(ctx, tmp_path):
    _catalog(ctx)
    path = tmp_path / "half.csv"
    good = _events_text(10).splitlines()[1:]
    bad = _events_text(40).replace(",t1,", ",t404,").splitlines()[11:]
    path.write_text(HEADER + "\n" + "\n".join(good + bad) + "\n")
    with pytest.raises(IngestFileError, match="Ingest the catalog first"):
        ingest_events(ctx, path)
    report = ingest_events(ctx, path, accept_bad_rows=True)
    assert (report.ingested, report.quarantined) == (10, {"unknown_track": 30})


def test_cli_options_and_exit_status(ctx, tmp_path):
    _catalog(ctx)
    env = {
        "PERSONALIZE_DATABASE_URL": ctx.settings.resolved_database_url,
        "PERSONALIZE_DATA_DIR": str(ctx.settings.data_dir),
        "COLUMNS": "200",
    }
    path = tmp_path / "excel.csv.gz"
    path.write_bytes(gzip.compress(_events_text(100, ts="20/11/2026 18:{m:02d}").encode("cp1252")))
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "events", str(path)], env=env)
    assert result.exit_code == 2 and "--ts-format" in result.output, result.output
    result = runner.invoke(
        app, ["ingest", "events", str(path), "--ts-format", "%d/%m/%Y %H:%M", "--encoding", "cp1252"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "unpacked from gzip" in result.output and _count(ctx, ListeningEvent) == 100


def test_an_export_zip_given_as_events_names_its_importer(ctx, tmp_path):
    path = tmp_path / "my_spotify_data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for n in range(2):
            archive.writestr(
                f"Spotify Extended Streaming History/Streaming_History_Audio_2026_{n}.json", "[]"
            )
    with pytest.raises(IngestFileError, match="personalize ingest spotify") as err:
        ingest_events(ctx, path)
    assert str(path) in str(err.value)

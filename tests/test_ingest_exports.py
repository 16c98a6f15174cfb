"""Exports people have (Spotify extended and older history, ListenBrainz JSON and JSONL, Last.fm CSV), built
here from the services' public descriptions of their formats, imported as listening events: matched to the
catalog by external id, exact or fuzzy name; the rest quarantined and listed for the catalog."""

from __future__ import annotations

import csv
import json
import zipfile

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from personalize.cli import app
from personalize.db.models import ListeningEvent, QuarantinedRow, Track, TrackExternalId
from personalize.ingest import IngestFileError, ingest_catalog
from personalize.ingest.exports import import_export

LET_IT_BE = "7iN1s7xHE4ifF5povM6A48"
MYSTERY = "0000000000000000000042"
CLAIR_MBID = "b1a9c0e9-d987-4042-ae91-78d6a3267d69"
CATALOG = f"""track_id,title,artist,duration_s,tempo_bpm,key,meter,programs,spotify_uri,isrc,mbid
t-letitbe,Let It Be,The Beatles,243,72,C major,4/4,0;33,spotify:track:{LET_IT_BE},GBAYE0601690,
t-clair,Clair de lune,Claude Debussy,300,66,Db major,9/8,0,,,{CLAIR_MBID.upper()}
t-jolene,Jolene,Dolly Parton,162,111,C# minor,4/4,24;33,,,
"""


@pytest.fixture
def catalog(ctx, tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG)
    report = ingest_catalog(ctx, path)
    assert report.ingested == 3, report.examples
    return path


def _spotify_play(ts, ms, uri, artist, title, reason_end="trackdone", skipped=None, **extra):
    # Field names and value shapes as Spotify's "Understanding my data" describes the extended history.
    play = {
        "ts": ts,
        "username": "spotify-user-1",
        "platform": "android",
        "ms_played": ms,
        "conn_country": "DE",
        "ip_addr": "192.0.2.1",
        "master_metadata_track_name": title,
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": "Album",
        "spotify_track_uri": uri,
        "episode_name": None,
        "episode_show_name": None,
        "spotify_episode_uri": None,
        "reason_start": "clickrow",
        "reason_end": reason_end,
        "shuffle": False,
        "skipped": skipped,
        "offline": False,
        "offline_timestamp": 0,
        "incognito_mode": False,
    }
    play.update(extra)
    return play


def _extended_history():
    return [
        _spotify_play("2026-11-01T08:00:00Z", 243_000, f"spotify:track:{LET_IT_BE}", "Beatles", "Let It Be"),
        _spotify_play(
            "2026-11-01T08:05:00Z",
            20_000,
            "spotify:track:1111111111111111111111",
            "Dolly Parton",
            "Jolene - 2001 Remastered",
            reason_end="fwdbtn",
        ),
        _spotify_play(
            "2026-11-01T08:10:00Z", 280_000, None, "Claude Debusy", "Clair de Lune", reason_end="endplay"
        ),
        _spotify_play(
            "2026-11-01T08:20:00Z", 5_000, f"spotify:track:{MYSTERY}", "Nobody Known", "Mystery Song"
        ),
        _spotify_play(
            "2026-11-01T08:30:00Z",
            600_000,
            None,
            None,
            None,
            reason_end="endplay",
            episode_name="Episode 12",
            episode_show_name="A Podcast",
            spotify_episode_uri="spotify:episode:5555555555555555555555",
        ),
        _spotify_play(
            "2026-11-01T08:40:00Z",
            90_000,
            f"spotify:track:{LET_IT_BE}",
            "The Beatles",
            "Let It Be",
            reason_end="endplay",
            skipped=True,
        ),
    ]


def _stored_events(ctx):
    with ctx.sessions() as session:
        return {
            (e.ts.replace(tzinfo=None).isoformat(), e.track_id): e
            for e in session.scalars(select(ListeningEvent))
        }


def test_spotify_extended_history_zip(ctx, tmp_path, catalog):
    plays = _extended_history()
    export = tmp_path / "my_spotify_data.zip"
    with zipfile.ZipFile(export, "w") as archive:
        folder = "Spotify Extended Streaming History/"
        archive.writestr(folder + "Streaming_History_Audio_2026_0.json", json.dumps(plays[:3], indent=2))
        archive.writestr(folder + "Streaming_History_Audio_2026_1.json", json.dumps(plays[3:]))
        archive.writestr(folder + "ReadMeFirst_ExtendedStreamingHistory.pdf", b"%PDF-1.4")
    unmatched_csv = tmp_path / "unmatched.csv"
    report = import_export(
        ctx, export, "spotify", listener="anna+music@example.com", unmatched_csv=unmatched_csv
    )

    assert (report.rows_read, report.ingested) == (6, 4), report.examples
    assert report.quarantined == {"unmatched_track": 1, "not_a_track": 1}
    assert "matched by spotify 2, exact 1, fuzzy 1" in report.notes
    events = _stored_events(ctx)
    kinds = {k: (e.kind, e.ms_played, e.listener_id) for k, e in events.items()}
    assert kinds == {
        ("2026-11-01T08:00:00", "t-letitbe"): ("complete", 243_000, "anna+music@example.com"),
        ("2026-11-01T08:05:00", "t-jolene"): ("skip", 20_000, "anna+music@example.com"),
        ("2026-11-01T08:10:00", "t-clair"): ("play", 280_000, "anna+music@example.com"),
        ("2026-11-01T08:40:00", "t-letitbe"): ("skip", 90_000, "anna+music@example.com"),
    }
    with ctx.sessions() as session:
        reasons = {q.row_number: (q.reason, q.detail) for q in session.scalars(select(QuarantinedRow))}
    assert reasons[4][0] == "unmatched_track" and "Mystery Song" in reasons[4][1]
    assert "Streaming_History_Audio_2026_1.json" in reasons[4][1]
    assert reasons[5][0] == "not_a_track"

    with unmatched_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["artist"], r["title"], r["spotify_uri"], r["plays"]) for r in rows] == [
        ("Nobody Known", "Mystery Song", f"spotify:track:{MYSTERY}", "1")
    ]
    assert import_export(ctx, export, "spotify", listener="anna+music@example.com").already_present == 4

    # The unmatched CSV, filled in, becomes catalog rows; importing again brings the play in.
    filled = pd.read_csv(unmatched_csv, dtype=str)
    filled[["duration_s", "tempo_bpm", "key", "meter", "programs"]] = ["200", "100", "A minor", "4/4", "0"]
    filled.to_csv(tmp_path / "more-catalog.csv", index=False)
    assert ingest_catalog(ctx, tmp_path / "more-catalog.csv").ingested == 1
    again = import_export(ctx, export, "spotify", listener="anna+music@example.com")
    assert (again.ingested, again.already_present) == (1, 4)


def test_older_spotify_history_needs_a_listener_and_maps_short_plays_to_skips(ctx, tmp_path, catalog):
    # StreamingHistory0.json of the account data download: endTime (UTC, minutes), artistName, trackName, msPlayed
    path = tmp_path / "StreamingHistory0.json"
    path.write_text(
        json.dumps(
            [
                {
                    "endTime": "2026-10-30 21:14",
                    "artistName": "Dolly Parton",
                    "trackName": "Jolene",
                    "msPlayed": 161_000,
                },
                {
                    "endTime": "2026-10-30 21:15",
                    "artistName": "The Beatles",
                    "trackName": "Let It Be",
                    "msPlayed": 12_000,
                },
                {
                    "endTime": "2026-10-30 21:20",
                    "artistName": "Somebody",
                    "trackName": "Unknown Tune",
                    "msPlayed": 99_000,
                },
            ]
        )
    )
    with pytest.raises(IngestFileError, match="--listener"):
        import_export(ctx, path, "spotify")
    report = import_export(ctx, path, "spotify", listener="jürgen.müller", unmatched_csv=tmp_path / "u.csv")
    assert (report.ingested, report.quarantined) == (2, {"unmatched_track": 1})
    events = _stored_events(ctx)
    assert events[("2026-10-30T21:14:00", "t-jolene")].kind == "play"
    assert events[("2026-10-30T21:15:00", "t-letitbe")].kind == "skip"  # under 30 s


def _listen(ts, artist, title, **info):
    # A listen as ListenBrainz's data format documents it
    return {
        "listened_at": ts,
        "recording_msid": "7a2b7c1e-0000-4000-8000-000000000001",
        "user_name": "lb-user",
        "track_metadata": {
            "artist_name": artist,
            "track_name": title,
            "release_name": "Some Release",
            "additional_info": {"submission_client": "test", **info},
        },
    }


def test_listenbrainz_json_on_one_line_and_jsonl(ctx, tmp_path, catalog):
    listens = [
        _listen(
            1_793_000_000, "Claude Debussy", "Clair de lune (arr. for guitar)", recording_mbid=CLAIR_MBID
        ),
        _listen(1_793_000_400, "Beatles", "Let It Be", isrc="GB-AYE-06-01690"),
        _listen(1_793_000_800, "Someone Else", "Another Song"),
    ]
    one_line = tmp_path / "listens.json"
    one_line.write_text(json.dumps(listens))
    report = import_export(ctx, one_line, "listenbrainz", unmatched_csv=tmp_path / "u.csv")
    assert (report.ingested, report.quarantined) == (2, {"unmatched_track": 1}), report.examples
    assert "matched by isrc 1, mbid 1" in report.notes
    events = _stored_events(ctx)
    clair = next(e for (_, t), e in events.items() if t == "t-clair")
    assert (clair.listener_id, clair.kind, clair.ms_played) == ("lb-user", "play", 300_000)

    lines = tmp_path / "2026-11.jsonl"
    newer = dict(listens[2], listened_at=1_793_100_000)
    newer["track_metadata"] = dict(newer["track_metadata"], artist_name="Dolly Parton", track_name="Jolene")
    newer["track_metadata"]["mbid_mapping"] = {"recording_mbid": "00000000-0000-4000-8000-000000000000"}
    lines.write_text("\n".join(json.dumps(x) for x in [*listens, newer]) + "\n")
    report = import_export(ctx, lines, "listenbrainz", listener="O'Brien")
    assert (report.ingested, report.quarantined) == (3, {"unmatched_track": 1})


def test_lastfm_csv_with_and_without_header(ctx, tmp_path, catalog):
    plain = tmp_path / "scrobbles.csv"
    plain.write_text(
        "Dolly Parton,Jolene,Jolene,30 Oct 2026 21:14\n"
        '"The Beatles","Let It Be","Let It Be","30 Oct 2026 21:20"\n'
        "Claude Debussy,Suite bergamasque,Clair de lune,30 Oct 2026 21:30\n"
        "Nobody,Nothing,Nowhere,30 Oct 2026 21:40\n"
    )
    report = import_export(ctx, plain, "lastfm", listener="user 42", unmatched_csv=tmp_path / "u.csv")
    assert (report.ingested, report.quarantined) == (3, {"unmatched_track": 1})
    events = _stored_events(ctx)
    assert events[("2026-10-30T21:14:00", "t-jolene")].ms_played == 162_000

    headed = tmp_path / "lastfmstats.csv"
    headed.write_text(
        "uts,utc_time,artist,artist_mbid,album,album_mbid,track,track_mbid\n"
        f'1793100000,"31 Oct 2026, 10:00",Debussy,,Suite,,Clair de lune (Live),{CLAIR_MBID}\n'
    )
    report = import_export(ctx, headed, "lastfm", listener="user 42")
    assert report.ingested == 1 and "matched by mbid 1" in report.notes
    with pytest.raises(IngestFileError, match=r"not a Last\.fm scrobble CSV"):
        bad = tmp_path / "other.csv"
        bad.write_text("a,b\n1,2\n")
        import_export(ctx, bad, "lastfm", listener="x")


def test_catalog_keeps_artist_and_external_ids(ctx, catalog):
    with ctx.sessions() as session:
        assert session.get(Track, "t-letitbe").artist == "The Beatles"
        ids = {(x.scheme, x.value): x.track_id for x in session.scalars(select(TrackExternalId))}
    assert ids == {
        ("spotify", LET_IT_BE): "t-letitbe",
        ("isrc", "GBAYE0601690"): "t-letitbe",
        ("mbid", CLAIR_MBID): "t-clair",
    }


def test_cli_spotify_import(ctx, tmp_path, catalog):
    path = tmp_path / "Streaming_History_Audio_2026.json"
    path.write_text(json.dumps(_extended_history()))
    env = {
        "PERSONALIZE_DATABASE_URL": ctx.settings.resolved_database_url,
        "PERSONALIZE_DATA_DIR": str(ctx.settings.data_dir),
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(
        app, ["ingest", "spotify", str(path), "--unmatched-csv", str(tmp_path / "u.csv")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "quarantined: unmatched_track" in result.output and "u.csv" in result.output
    with ctx.sessions() as session:
        assert set(session.scalars(select(ListeningEvent.listener_id))) == {"spotify-user-1"}


def test_a_big_export_goes_in_as_one_bulk_load_with_the_same_outcome(ctx, tmp_path, catalog, monkeypatch):
    monkeypatch.setattr(ctx.settings, "ingest_bulk_min_rows", 1)  # this small export counts as big
    path = tmp_path / "Streaming_History_Audio_2026_0.json"
    path.write_text(json.dumps(_extended_history()))
    report = import_export(ctx, path, "spotify", listener="l1")
    assert (report.rows_read, report.ingested) == (6, 4)
    assert report.quarantined == {"unmatched_track": 1, "not_a_track": 1}
    assert import_export(ctx, path, "spotify", listener="l1").already_present == 4
    assert len(_stored_events(ctx)) == 4

"""The corpus builder on real music21 scores: parts, key, meter, manifest with licences, split, incremental rebuild."""

from __future__ import annotations

import json
from pathlib import Path

from personalize.corpus import COLLECTIONS, build_corpus, load_pieces
from personalize.generate import tokens as T


def _split_at_bars(notes: list[tuple[int, int, int]], bar_ticks: int) -> list[tuple[int, int, int]]:
    out = []
    for onset, dur, pitch in notes:
        t = onset
        while t < onset + dur:
            end = min(onset + dur, (t // bar_ticks + 1) * bar_ticks)
            out.append((t, end - t, pitch))
            t = end
    return out


def test_build_is_incremental_and_records_licences_and_splits(tmp_path: Path) -> None:
    first = build_corpus(tmp_path, ["bach_chorales"], workers=1, limit_per_collection=3, progress=False)
    assert first["source_files_parsed"] == 3 and first["pieces"] >= 2
    again = build_corpus(tmp_path, ["bach_chorales"], workers=1, limit_per_collection=3, progress=False)
    assert again["source_files_parsed"] == 0 and again["source_files_cached"] == 3
    assert again["pieces"] == first["pieces"]

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["collections"]["bach_chorales"]["licence"] == COLLECTIONS["bach_chorales"].licence
    for p in manifest["pieces"]:
        assert p["split"] in ("train", "val", "test")
        assert p["meter"] and p["bar_ticks"] > 0


def test_versions_of_a_piece_share_a_split() -> None:
    from personalize.corpus.build import _group_of, _split_of

    a = _group_of("bach_chorales", Path("bwv248.12-2.mxl"), "")
    b = _group_of("bach_chorales", Path("bwv248.33-3.mxl"), "")
    assert a == b and _split_of(a) == _split_of(b)
    assert _group_of("oneills1850", Path("x.abc"), "The Kesh Jig") == _group_of(
        "oneills1850", Path("y.abc"), "Kesh"
    )


def test_known_chorale_key_parts_and_token_round_trip(tmp_path: Path) -> None:
    # bwv66.6 is a short F-sharp minor chorale: parse just that one file.
    from personalize.corpus.build import _parse_source, music21_corpus_root

    src = music21_corpus_root() / "bach" / "bwv66.6.mxl"
    _, _, pieces, failures = _parse_source(("bach_chorales", str(src), str(tmp_path / "one.json")))
    assert not failures
    piece = pieces[0]
    assert (piece["key_pc"], piece["mode"]) == (6, "minor")
    assert (piece["found_key_pc"], piece["found_mode"]) == (6, "minor")
    assert piece["meter"] == "4/4" and len(piece["parts"]) == 4
    means = [sum(n[2] for n in part) / len(part) for part in piece["parts"]]
    assert means == sorted(means, reverse=True)  # soprano first, bass last

    parts = [[tuple(n) for n in part] for part in piece["parts"]]
    body = T.bars_tokens(parts, piece["bar_ticks"], 0, piece["n_bars"])
    decoded = T.decode_body(body, 4, piece["bar_ticks"])
    assert decoded == [_split_at_bars(p, piece["bar_ticks"]) for p in parts]


def test_load_pieces_reads_only_the_manifest(tmp_path: Path) -> None:
    build_corpus(tmp_path, ["bach_chorales"], workers=1, limit_per_collection=2, progress=False)
    pieces = load_pieces(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [p.piece_id for p in pieces] == [p["piece_id"] for p in manifest["pieces"]]
    assert all(p.parts and p.n_bars >= 4 for p in pieces)

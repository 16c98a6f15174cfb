"""The corpus build on real music21 scores: licences, incremental cache, groups and splits, the two views."""

from __future__ import annotations

import doctest
import itertools
import json
from pathlib import Path

import pytest

from personalize.corpus import (
    COLLECTIONS,
    TICKS_PER_QUARTER,
    USABLE_COLLECTIONS,
    V1_TICKS_PER_QUARTER,
    Note,
    annotate,
    build_corpus,
    licences,
    load_pieces,
    parse,
    split,
)
from personalize.corpus.licences import file_notice, music21_corpus_root
from personalize.corpus.split import assign_groups, group_keys, split_of, title_key, work_key
from personalize.generate import tokens as T


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three chorales and the first three files of O'Neill's (200 tunes), parsed in this process."""
    path = tmp_path_factory.mktemp("corpus")
    build_corpus(path, ["bach_chorales", "oneills1850"], workers=1, limit_per_collection=3, progress=False)
    return path


def test_every_collection_records_its_licence_text_and_a_decision_with_a_reason():
    assert set(USABLE_COLLECTIONS) == {
        "bach_chorales", "oneills1850", "ryans_mammoth", "monteverdi_madrigals", "trecento", "string_quartets"
    }  # fmt: skip
    for name in ("essen_folksong", "palestrina", "josquin"):
        assert not COLLECTIONS[name].usable and COLLECTIONS[name].reason
    assert "non-commercial" in COLLECTIONS["essen_folksong"].licence
    assert "licensing agreement" in COLLECTIONS["palestrina"].licence
    assert "GNU General Public License" in COLLECTIONS["josquin"].licence


def test_a_file_with_a_restrictive_notice_is_screened_out_and_a_clean_one_is_not():
    root = music21_corpus_root()
    assert file_notice(root / "bach" / "bwv277.krn") == "refers to a licensing agreement"
    assert file_notice(root / "josquin" / "milleRegrets.abc") == "GPL-licensed encoding"
    assert file_notice(root / "bach" / "bwv277.mxl") is None
    assert file_notice(root / "ryansMammoth" / "FishersHornpipe.abc") is None


def test_build_is_incremental_and_the_manifest_holds_licences_groups_and_splits(corpus_dir: Path):
    again = build_corpus(corpus_dir, ["bach_chorales", "oneills1850"], workers=1, limit_per_collection=3)
    assert again["source_files_parsed"] == 0 and again["source_files_cached"] == 6
    assert again["pieces"] > 100 and again["notes"] > 10_000

    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    for name, c in COLLECTIONS.items():
        entry = manifest["collections"][name]
        assert (entry["licence"], entry["usable"], entry["reason"]) == (c.licence, c.usable, c.reason)
    assert manifest["collections"]["bach_chorales"]["built"]
    assert not manifest["collections"]["palestrina"]["built"]
    for row in manifest["pieces"]:
        assert row["split"] == split_of(row["group"])
        assert row["meter"] and row["bar_ticks"] > 0 and row["n_notes"] > 0

    failures = json.loads((corpus_dir / "failures.json").read_text())
    assert all(
        f["reason"] and f["stage"] in ("parse", "score", "repeats", "licence", "duplicate") for f in failures
    )


def test_a_group_never_spans_two_splits(corpus_dir: Path):
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    splits_of_group: dict[str, set[str]] = {}
    for row in manifest["pieces"]:
        splits_of_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert {"train", "val", "test"} <= {r["split"] for r in manifest["pieces"]}


def test_versions_of_a_tune_and_movements_of_a_work_share_a_group():
    assert title_key("The Kesh Jig") == title_key("KESH -- JIG")
    assert title_key("Reel") is None  # says nothing about which tune
    assert work_key("bach_chorales", "bach/bwv248.12-2.mxl", "a") == work_key(
        "bach_chorales", "bach/bwv248.33-3.mxl", "b"
    )
    quartet = [work_key("string_quartets", f"mozart/k458/movement{i}.mxl", str(i)) for i in (1, 2, 3, 4)]
    assert len(set(quartet)) == 1
    melody = "2,2,1,-1,-2,-2,5,-3,2,2,1,-1,-2,-2,3,-7"
    groups = assign_groups(
        [
            ("oneill", group_keys("oneills1850", "oneills1850/a.abc", "oneill", "The Kesh Jig", None)),
            ("ryan", group_keys("ryans_mammoth", "ryansMammoth/KeshJig.abc", "ryan", "KESH -- JIG", melody)),
            ("other", group_keys("ryans_mammoth", "ryansMammoth/X.abc", "other", "Some Other Reel", melody)),
            ("alone", group_keys("ryans_mammoth", "ryansMammoth/Y.abc", "alone", "Lonely Reel", None)),
        ]
    )
    # The same title joins O'Neill's and Ryan's versions; the same melody under another name joins too.
    assert groups["oneill"] == groups["ryan"] == groups["other"] != groups["alone"]


def test_the_two_views_of_a_known_chorale():
    # bwv66.6 is a short F-sharp minor chorale with a pickup.
    pieces, problems = parse.parse_source(music21_corpus_root() / "bach" / "bwv66.6.mxl", "bach_chorales")
    assert not problems
    piece = pieces[0]
    assert (piece.key_pc, piece.mode, piece.found_key_pc, piece.found_mode) == (6, "minor", 6, "minor")
    assert piece.meter == "4/4" and piece.bar_ticks == 4 * TICKS_PER_QUARTER and len(piece.parts) == 4
    assert all(isinstance(n, Note) and n.velocity > 0 for part in piece.parts for n in part)
    means = [sum(n.pitch for n in part) / len(part) for part in piece.parts]
    assert means == sorted(means, reverse=True)  # soprano first, bass last

    v1 = piece.monophonic()
    assert v1.ticks_per_quarter == V1_TICKS_PER_QUARTER and v1.bar_ticks == 16 and v1.fits_v1()
    for line, full in zip(v1.parts, piece.parts, strict=True):
        assert all(len(n) == 3 for n in line)
        assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(line))  # one line
        assert [(o, p) for o, _, p in line] == [(n.onset // 3, n.pitch) for n in full]  # no chords in a voice
    body = T.bars_tokens(v1.parts, v1.bar_ticks, 0, v1.n_bars)
    assert T.decode_body(body, 4, v1.bar_ticks) == [_split_at_bars(p, v1.bar_ticks) for p in v1.parts]


def test_load_pieces_gives_either_view_in_manifest_order(corpus_dir: Path):
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    full = load_pieces(corpus_dir, view="v2")
    assert [p.piece_id for p in full] == [r["piece_id"] for r in manifest["pieces"]]
    assert all(p.ticks_per_quarter == TICKS_PER_QUARTER and p.chords and p.sections for p in full)
    v1 = load_pieces(corpus_dir, split="train")
    assert v1 and all(p.ticks_per_quarter == V1_TICKS_PER_QUARTER and p.split == "train" for p in v1)
    assert all(len(n) == 3 for p in v1 for part in p.parts for n in part)
    chorales = load_pieces(corpus_dir, view="v2", collections=["bach_chorales"])
    assert {p.collection for p in chorales} == {"bach_chorales"}


def test_corpus_docstring_examples_hold():
    for module in (annotate, licences, parse, split):
        failed, _ = doctest.testmod(module)
        assert failed == 0, module.__name__


def _split_at_bars(notes: list[tuple[int, int, int]], bar_ticks: int) -> list[tuple[int, int, int]]:
    out = []
    for onset, dur, pitch in notes:
        t = onset
        while t < onset + dur:
            end = min(onset + dur, (t // bar_ticks + 1) * bar_ticks)
            out.append((t, end - t, pitch))
            t = end
    return out

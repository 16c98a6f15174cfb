"""The originality search: a planted copy of a training melody is found in any key; a new melody is not."""

from __future__ import annotations

import numpy as np

from personalize.music.originality import MAX_SHARED_BARS, OriginalityIndex


def _tune(seed: int, bars: int = 16) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    notes, pitch = [], 67
    for bar in range(bars):
        t = 0
        while t < 16:
            dur = int(rng.choice([2, 4, 4, 8]))
            dur = min(dur, 16 - t)
            pitch = int(np.clip(pitch + rng.integers(-3, 4), 55, 84))
            notes.append((bar * 16 + t, dur, pitch))
            t += dur
    return notes


def test_a_planted_copy_is_found_transposed_and_a_new_tune_is_not(tmp_path):
    training = [(f"tune-{k}", _tune(k), 16, 16) for k in range(40)]
    index = OriginalityIndex.build(training)
    # Six bars of tune-7 (bars 4-9), a minor third higher, after two bars of new material.
    source = _tune(7)
    lifted = [(o - 4 * 16 + 2 * 16, d, p + 3) for o, d, p in source if 4 * 16 <= o < 10 * 16]
    planted = _tune(1000, 2) + lifted + [(o + 8 * 16, d, p) for o, d, p in _tune(1001, 4)]
    bars, piece = index.longest_run(planted, 16, 12)
    assert (bars, piece) == (6, "tune-7")
    assert bars > MAX_SHARED_BARS
    fresh = _tune(2024)
    assert index.longest_run(fresh, 16, 16)[0] <= 1
    # A piece searched against an index holding it finds itself, unless it is excluded.
    assert index.longest_run(source, 16, 16)[0] == 16
    assert index.longest_run(source, 16, 16, exclude="tune-7")[0] <= 1
    # The index survives a save and a load.
    path = tmp_path / "index.npz"
    index.save(path)
    assert OriginalityIndex.load(path).longest_run(planted, 16, 12) == (6, "tune-7")

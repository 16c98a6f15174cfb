"""Write melodies with the song model: every structural token forced, the notes sampled.

Each request is a script: the prefix, then for every written section its ``SEC``/``FINAL`` header and, bar
by bar, ``BAR_i`` and the section's chords (all forced), followed either by notes the model writes (it
decides each onset, pitch and length, and when the bar is done by emitting the next bar's token) or by
the notes of a bar written earlier (a varied repeat copies all but its new ending). Rows of a batch run
their own scripts in lock step through one KV cache, so a whole song's melody is one pass.

The decoding rules are only what makes a stream well formed (onsets move forward inside the bar, a note
ends by the bar line, pitches stay inside the instrument's range) plus, when ``scale`` is on, pitches
inside the key's scale (harmonic minor for minor keys). Nothing else steers the notes.

A song longer than the model's context slides it: the prefix and the latest half of the stream are fed
again into a fresh cache (the model was trained on windows that continue a piece the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from personalize.generate.model import MusicTransformer
from personalize.generate.sample import _top_p_filter
from personalize.generate.song import tokens as S
from personalize.music.chords import Chord

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}
MAX_NOTES_PER_BAR = 24


@dataclass
class Material:
    """One written section: its letter and flags for the model, its chords per bar, and which bars are
    copies of another material's bars (``copy_from`` and the first ``copy_bars`` bars)."""

    name: str
    letter: str
    chords: list[list[Chord]]
    final: bool = False
    copy_from: str | None = None
    copy_bars: int = 0

    @property
    def n_bars(self) -> int:
        return len(self.chords)


@dataclass
class MelodyRequest:
    mode: str
    meter: str
    density_bin: int
    style: str  # tune | chorale
    materials: list[Material]
    rel_lo: int  # lowest and highest pitch allowed, relative to 60 + tonic pitch class
    rel_hi: int
    scale: bool = True


@dataclass
class _Row:
    request: MelodyRequest
    script: list[object]  # list[int] forced runs, ("free", m, b) and ("copy", m, b) items
    item: int = 0
    offset: int = 0  # tokens of the current forced run already given
    phase: str = "free"  # free | pitch | dur
    tick: int = 0
    pos: int = 0
    notes_in_bar: int = 0
    done: bool = False
    stream: list[int] = field(default_factory=list)
    written: dict[tuple[str, int], list[int]] = field(default_factory=dict)


def _script(req: MelodyRequest) -> list[object]:
    script: list[object] = [S.prefix_tokens(req.mode, req.meter, req.density_bin, req.style)]
    for m, mat in enumerate(req.materials):
        for b, chords in enumerate(mat.chords):
            head = []
            if b == 0:
                head.append(S.section_token(mat.letter))
                if mat.final:
                    head.append(S.FINAL)
            head.append(S.BAR0 + b)
            head += [S.chord_token(c) for c in chords]
            script.append(head)
            copied = mat.copy_from is not None and b < mat.copy_bars
            script.append(("copy", mat.copy_from, b) if copied else ("free", m, b))
    script.append([S.EOS])
    return script


class MelodyWriter:
    """The song model plus its decoding loop (see the module docstring)."""

    def __init__(self, model: MusicTransformer, temperature: float = 1.0, top_p: float = 0.95) -> None:
        self.model = model.eval()
        self.temperature = temperature
        self.top_p = top_p
        v = S.VOCAB_SIZE
        self._dur_upto = torch.zeros(S.MAX_BAR_TICKS + 1, v, dtype=torch.bool)
        for r in range(1, S.MAX_BAR_TICKS + 1):
            self._dur_upto[r, S.DUR1 : S.DUR1 + r] = True

    def _pitch_mask(self, req: MelodyRequest) -> torch.Tensor:
        mask = torch.zeros(S.VOCAB_SIZE, dtype=torch.bool)
        for rel in range(max(S.REL_LO, req.rel_lo), min(S.REL_HI, req.rel_hi) + 1):
            if req.scale and rel % 12 not in SCALES[req.mode]:
                continue
            mask[S.PITCH0 + rel - S.REL_LO] = True
        if not mask.any():
            raise ValueError(f"no pitch allowed between {req.rel_lo} and {req.rel_hi} relative to the tonic")
        return mask

    def _resolve(self, row: _Row) -> None:
        """Move past finished runs; turn a copy item into the forced run of the copied bar."""
        while row.item < len(row.script):
            item = row.script[row.item]
            if isinstance(item, list):
                if row.offset < len(item):
                    return
                row.item, row.offset = row.item + 1, 0
                continue
            if item[0] == "copy":
                row.script[row.item] = list(row.written.get((item[1], item[2]), []))
                continue
            return
        row.done = True

    def _next_structural(self, row: _Row) -> int:
        nxt = row.script[row.item + 1]
        assert isinstance(nxt, list) and nxt
        return nxt[0]

    def _feed(self, row: _Row, tok: int) -> None:
        row.stream.append(tok)
        item = row.script[row.item]
        if isinstance(item, list):
            row.offset += 1
        if S.is_bar(tok):
            row.tick, row.phase, row.notes_in_bar = 0, "free", 0
        elif S.is_pos(tok):
            row.pos, row.phase = tok - S.POS0, "pitch"
        elif S.is_pitch(tok):
            row.phase = "dur"
        elif S.is_dur(tok):
            row.tick, row.phase = row.pos + tok - S.DUR1 + 1, "free"
            row.notes_in_bar += 1
        if isinstance(item, tuple) and item[0] == "free":
            if S.is_pos(tok) or S.is_pitch(tok) or S.is_dur(tok):
                mat = row.request.materials[item[1]]
                row.written.setdefault((mat.name, item[2]), []).append(tok)
            else:  # the model ended the bar with the next structural token: continue that forced run
                row.item, row.offset = row.item + 1, 1
        self._resolve(row)

    @torch.no_grad()
    def write(self, requests: list[MelodyRequest], seed: int) -> list[list[int]]:
        """The token stream of every request (see :func:`personalize.generate.song.tokens.decode_sections`)."""
        gen = torch.Generator().manual_seed(int(seed))
        rows = [_Row(r, _script(r)) for r in requests]
        pitch_masks = [self._pitch_mask(r).numpy() for r in requests]
        dur_upto = self._dur_upto.numpy()
        bar_ticks = [S.bar_ticks_of(r.meter) for r in requests]
        for row in rows:
            self._resolve(row)
        b = len(rows)
        block = self.model.config.block_size
        cache = self.model.new_cache(b)
        last = None
        v = S.VOCAB_SIZE
        fed: list[torch.Tensor] = []
        prefix_len = len(S.prefix_tokens("major", "4/4", 0, "tune"))
        # Masks are built in numpy (per-row slicing of a torch tensor costs microseconds a call).
        mask = np.zeros((b, v), dtype=bool)
        forced = np.full(b, -1, dtype=np.int64)
        while not all(r.done for r in rows):
            mask[:] = False
            forced[:] = -1
            for i, row in enumerate(rows):
                if row.done:
                    forced[i] = S.PAD
                    continue
                item = row.script[row.item]
                if isinstance(item, list):
                    forced[i] = item[row.offset]
                elif row.phase == "pitch":
                    mask[i] = pitch_masks[i]
                elif row.phase == "dur":
                    mask[i] = dur_upto[bar_ticks[i] - row.pos]
                else:
                    if row.notes_in_bar < MAX_NOTES_PER_BAR and row.tick < bar_ticks[i]:
                        mask[i, S.POS0 + row.tick : S.POS0 + bar_ticks[i]] = True
                    mask[i, self._next_structural(row)] = True
            forced_t = torch.from_numpy(forced.copy())
            if last is None or bool((forced >= 0).all()):
                tok = forced_t
            else:
                scores = last / max(self.temperature, 1e-4)
                scores = scores.masked_fill(~torch.from_numpy(mask), float("-inf"))
                scores[forced_t >= 0] = 0.0  # rows with a forced token: any finite row, replaced below
                scores = _top_p_filter(scores, self.top_p)
                cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1)
                u = torch.rand(b, 1, generator=gen) * cdf[:, -1:]
                sampled = (cdf < u).sum(dim=-1).clamp(max=v - 1)
                tok = torch.where(forced_t >= 0, forced_t, sampled)
            for row, t in zip(rows, tok.tolist(), strict=True):
                if not row.done:
                    self._feed(row, t)
            fed.append(tok)
            if cache.length < block:
                logits, _ = self.model(tok[:, None], cache=cache)
            else:
                # The context is full: keep every row's prefix and the latest half of its stream, and go on
                # from there in a fresh cache (rows advance in lock step, so the lengths agree).
                keep = (block - prefix_len) // 2
                history = torch.stack(fed, dim=1)
                ctx = torch.cat([history[:, :prefix_len], history[:, -keep:]], dim=1)
                cache = self.model.new_cache(b)
                logits, _ = self.model(ctx, cache=cache)
            last = logits[:, -1].float()
        return [row.stream for row in rows]

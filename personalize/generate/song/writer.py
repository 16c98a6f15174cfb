"""The song writer: controls in, a whole song out (form, harmony, melody, arrangement, performance).

``SongGenerator.generate(controls, seed)`` implements :class:`personalize.generate.Generator`. For every
request it plans a form (:mod:`~personalize.generate.song.form`), draws each distinct section's chords from
the corpus-learned harmony (:mod:`~personalize.generate.song.harmony`), has the melody model write every
distinct section once, in one pass for the whole batch (:mod:`~personalize.generate.song.sample`), lays the
sections out in playing order (repeats reuse what was written), arranges the parts
(:mod:`~personalize.generate.song.arrange`, :mod:`~personalize.generate.song.drums`) and performs them
(:mod:`~personalize.generate.song.perform`). ``controls.bars`` is the length asked for, in bars.

The MIDI carries its structure as text events (``section:<label>`` at each section's start,
``chord:<numeral>`` at each chord change), which the run report draws on its piano rolls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from personalize.generate.model import MusicTransformer, TransformerConfig
from personalize.generate.song import tokens as S
from personalize.generate.song.arrange import (
    Note,
    assign_roles,
    avoid_parallels,
    bass_line,
    chord_part,
    consonant_bass,
    counter_line,
    keep_under,
    melody_octave,
    passing_tones,
    timpani_part,
    voice_chorale,
)
from personalize.generate.song.drums import drum_part, meter_grid
from personalize.generate.song.form import (
    PHRASE_BARS,
    VARIED,
    Form,
    base_of,
    infill_mask,
    plan_form,
    texture_of,
)
from personalize.generate.song.harmony import HarmonyModel
from personalize.generate.song.perform import Part, Span, perform
from personalize.generate.song.prior import MelodyPrior
from personalize.generate.song.rhythm import BarCounts
from personalize.generate.song.sample import (
    DENSITY_GAIN,
    DENSITY_TARGETS,
    MAX_NOTES_PER_BAR,
    Material,
    MelodyRequest,
    MelodyWriter,
)
from personalize.generate.verify import ACCOMPANIMENT_SUFFIX, MELODY_SUFFIX
from personalize.music.chords import TONIC, Chord, spans_per_bar
from personalize.music.controls import DENSITY_EDGES, Controls
from personalize.music.gate import MusicGate
from personalize.music.gm import DRUMS, family_of, program_range
from personalize.music.originality import MAX_SHARED_BARS, OriginalityIndex
from personalize.music.score import score_from_midi

TPQ = S.TICKS_PER_QUARTER
# Weight of the corpus melody prior fused with the model's pitch choices (model card: 0.5 passed the music
# gate most often on the evaluation grid, against 1.0 and 0, with the shipped weights).
PRIOR_WEIGHT = 0.5
# Weight of the prior's note lengths in dance tunes (their dotted or even feel): at 0.5 the model still wrote
# a third of the corpus's dotted notes in dotted pieces; at 1.5 as many as the corpus (the model card).
DURATION_WEIGHT = 1.5
# Phrase ends of a song or chorale left open (the melody runs on): held-out chorales close a median of every
# phrase the four-bar grid finds, but 4 in 10 of them leave one or more open (a mean of 0.87 closed).
OPEN_PHRASE_END_SHARE = 0.2
# Landed phrase ends followed by a one-beat pickup into the next phrase (held-out chorales: 57 % of phrases
# start a quarter before the bar line, 26 % on it). At 0.6, 74 % of the planned chorales' inner phrase ends
# came out as a landing and an upbeat, against 62 % of the training chorales' (other plans' bars end so too).
PICKUP_SHARE = 0.5
# Pickups of two eighths instead of a quarter (training chorales: 9 % of their upbeats after a landing).
EIGHTH_PICKUP_SHARE = 0.1
# Tune strains whose second phrase opens as the first did, and for how many bars (training tunes' eight-bar
# strains: 60 % do; of those, 30 % for one bar, 42 % for two, 28 % for three or four).
INNER_REPEAT_SHARE = 0.6
INNER_REPEAT_BARS = {1: 0.30, 2: 0.42, 3: 0.28}
THIRD_BAR_REPEAT_SHARE = 0.15  # strains whose third bar is their first again (training tunes: 11-23 %)
# A dance tune's second strain often closes as the first strain's second ending did: in half the training
# tunes of 32 bars the B strain's last bars are the A strain's last bars again (one bar in 25 %, two in 13 %,
# three or more in 11 %), a rhyme the ear waits for; the piece's last bar is its own.
RHYME_SHARE = 0.5
RHYME_BARS = {1: 0.51, 2: 0.27, 3: 0.11, 4: 0.11}
DENSITY_MARGIN = 0.08  # the density aimed at stays this share inside its bin's edges
THROUGH_COMPOSED_SHARE = 0.3  # chorales without the Stollen repeat (held-out corpus chorales: 29 %)
# Dance-tune strains played twice as written, without a second ending: a quarter of the held-out tunes
# repeat their bars (near) exactly (bar self-similarity 0.98 and above), which takes both strains plain.
PLAIN_REPEAT_SHARE = 0.5
# What a chorale's lower voice earns in the voicing search for moving inside a held chord (arrange.py).
CHORALE_MOVING = 2.0
# What the tenor's sounding above the alto costs there: 1.1 % of the beats cross (the corpus: 2.1 %, in 44 %
# of its chorales; the ceiling: 2 %).
CHORALE_CROSSING = 0.25
# Share of a chorale's lower voices' leaps of a third filled with a passing tone (arrange.passing_tones).
CHORALE_PASSING = 0.7
# A chorale's voicing may let a fifth or octave through from one beat to the next where a note between the
# beats breaks it (arrange.voice_chorale's ``broken``), at most this many times, at this cost. Four in ten of
# Bach's chorales have such parallels (1.5 fifths and 0.6 octaves per 100 chord changes); the ceiling
# is 1 per 100, fifths and octaves together. At one a piece, about a third of the written chorales take one,
# 0.6 per 100 chord changes in all (at two, with the outer voices allowed: 1.0-1.2).
CHORALE_BROKEN_MAX = 1
CHORALE_BROKEN_COST = 2.0
CHORD_CEILING_MIN = 60  # the top of an accompaniment's chords may always reach middle C


def _close_on(chord: Chord, mode: str) -> str | Chord:
    """A drawn phrase-end chord as a cadence: the tonic is a full close, a chord on the dominant a half
    close, any other chord is closed on as it is."""
    return "authentic" if chord == TONIC[mode] else "half" if chord.root == 7 else chord


@dataclass
class SongPlan:
    """Everything decided before the melody is written."""

    controls: Controls
    form: Form
    roles: list[str]
    chords: dict[str, list[list[Chord]]]  # material (and "intro") -> chords per bar
    octave: int
    request: MelodyRequest
    swing: float


class SongGenerator:
    """The shipped generator (see the module docstring)."""

    name = "song"

    def __init__(
        self,
        melody: MelodyWriter,
        harmony: HarmonyModel,
        rhythm: BarCounts | None = None,
        version: str = "song",
        scale: bool = True,
        max_batch: int = 64,
        threads: int | None = None,
        originality: OriginalityIndex | None = None,
        gate: MusicGate | None = None,
    ) -> None:
        self.melody = melody
        self.harmony = harmony
        self.rhythm = rhythm
        self.originality = originality
        self.gate = gate
        self.version = version
        self.scale = scale
        self.max_batch = max_batch
        self.threads = threads

    @classmethod
    def load(cls, model_dir: Path, **kwargs: object) -> SongGenerator:
        """Load ``model.pt``, ``config.json`` and ``harmony.json`` from ``model_dir`` (and ``bar_counts.json``,
        which a model that reads bar note counts needs)."""
        model_dir = Path(model_dir)
        paths = [model_dir / n for n in ("config.json", "model.pt", "harmony.json")]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: train the song model with `personalize train song` "
                    "or point PERSONALIZE_MODEL_DIR at a folder holding one"
                )
        try:
            meta = json.loads(paths[0].read_text())
            if meta.get("vocab_size") not in (S.VOCAB_SIZE, S.NOTES0):
                raise ValueError(
                    f"vocabulary of {meta.get('vocab_size')} tokens, this code reads {S.NOTES0} (without bar "
                    f"note counts) or {S.VOCAB_SIZE}: retrain it"
                )
            model = MusicTransformer(TransformerConfig(**meta["model"]))
            state = torch.load(paths[1], map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(
                {k: v.float() for k, v in state.items()}, strict=False
            )
            if unexpected or set(missing) - {"head.weight"}:
                raise ValueError(
                    f"weights do not match the config: missing {missing}, unexpected {unexpected}"
                )
            harmony = HarmonyModel.load(paths[2])
            counts_path = model_dir / "bar_counts.json"
            if meta["vocab_size"] > S.NOTES0 and not counts_path.is_file():
                raise FileNotFoundError(f"{counts_path} is missing: the model reads bar note counts")
            rhythm = BarCounts.load(counts_path) if meta["vocab_size"] > S.NOTES0 else None
            index_path = model_dir / "originality.npz"
            originality = OriginalityIndex.load(index_path) if index_path.is_file() else None
            # The music gate ships beside the models (models/music_gate.json), calibrated on the corpus.
            gate_path = model_dir.parent / "music_gate.json"
            gate = MusicGate.load(gate_path) if gate_path.is_file() else None
        except Exception as exc:
            raise ValueError(f"{model_dir} does not hold a usable song model ({exc}); retrain it") from exc
        # A model can ship its own decoding settings (config.json "decoding"): a model that learned density
        # from its bar note counts needs no density steer ("density_gain": 0).
        decoding = meta.get("decoding") or {}
        temperature = float(kwargs.pop("temperature", decoding.get("temperature", 1.0)))  # type: ignore[arg-type]
        top_p = float(kwargs.pop("top_p", decoding.get("top_p", 0.95)))  # type: ignore[arg-type]
        prior_weight = float(kwargs.pop("prior_weight", decoding.get("prior_weight", PRIOR_WEIGHT)))  # type: ignore[arg-type]
        prior_path = model_dir / "melody_prior.json"
        prior = MelodyPrior.load(prior_path) if prior_path.is_file() else None
        density_gain = float(kwargs.pop("density_gain", decoding.get("density_gain", DENSITY_GAIN)))  # type: ignore[arg-type]
        duration_weight = kwargs.pop("duration_weight", decoding.get("duration_weight", DURATION_WEIGHT))
        version = f"song-{meta.get('steps', 0)}steps"
        writer = MelodyWriter(
            model,
            temperature,
            top_p,
            prior,
            prior_weight,
            density_gain,
            float(duration_weight),  # type: ignore[arg-type]
        )
        return cls(writer, harmony, rhythm, version=version, originality=originality, gate=gate, **kwargs)  # type: ignore[arg-type]

    # --- review (what verification adds to its control checks) ---------------------------------------

    def review(self, pm: pretty_midi.PrettyMIDI, controls: Controls) -> dict[str, object]:
        """Checks of a finished song beyond its controls: ``music_ok`` (the music gate finds it inside the
        corpus's bands for its texture; ``music_problems`` says where not) and ``original_ok`` (its melody
        shares at most ``MAX_SHARED_BARS`` consecutive bars with any training melody, in any key)."""
        out: dict[str, object] = {}
        if self.gate is not None:
            verdict = self.gate.judge(score_from_midi(pm), controls.key_pc, controls.mode)
            out.update(music_ok=verdict.passed, music_problems=verdict.reasons[:3], texture=verdict.texture)
        if self.originality is not None:
            bar_ticks = meter_grid(controls.meter, TPQ)[0]
            line = melody_line(pm)
            n_bars = max((o // bar_ticks for o, _, _ in line), default=0) + 1
            bars, piece = self.originality.longest_run(line, bar_ticks, n_bars)
            out.update(shared_bars=bars, shared_with=piece, original_ok=bars <= MAX_SHARED_BARS)
        return out

    # --- planning -------------------------------------------------------------------------------------

    def plan(self, controls: Controls, rng: np.random.Generator) -> SongPlan:
        # About three chorales in ten of the corpus are through-composed (no Stollen repeat).
        through = texture_of(controls) == "chorale" and rng.random() < THROUGH_COMPOSED_SHARE
        plain = frozenset(
            letter for letter in "AB" if texture_of(controls) == "tune" and rng.random() < PLAIN_REPEAT_SHARE
        )
        form = plan_form(controls, through_composed=through, plain_repeats=plain)
        pitched = controls.pitched_programs
        roles = assign_roles(pitched, form.texture)
        # Songs (band textures) are sung: their melodies are written in the hymn-tune style of the chorales
        # (stepwise, singable, phrases that close), dance tunes in the fiddle style; so are their chords.
        style = "tune" if form.texture == "tune" else "chorale"
        spans = spans_per_bar(controls.meter)
        L = form.section_bars
        chords: dict[str, list[list[Chord]]] = {}
        inner: dict[str, dict[int, tuple[str, int]]] = {}
        heads: dict[str, dict[int, tuple[str, int]]] = {}
        last_written = form.materials()[-1]
        for material in form.materials():
            first = next(s for s in form.sections if s.material == material)
            final_close = any(s.final for s in form.sections if s.material == material)
            closing = first.cadence == "authentic" or final_close
            cadence: str | Chord = "authentic" if closing else "half"
            base = base_of(material)
            # A chorale's inner phrases (all but the Stollen and the last) close where the corpus's do: on
            # the tonic or the dominant two times in three, else on another degree (vi, iii, IV, ii; III and
            # VII in minor), where Bach's phrases visit the related keys; the Stollen keeps its half close,
            # which leads back to its repeat. A song's open lines (a verse's or chorus's first) do the
            # same; its closing lines keep their full close.
            if form.texture == "chorale":
                drawn_close = not final_close and (through or base != "A")
            else:
                drawn_close = style == "chorale" and not closing
            if drawn_close:
                drawn = self.harmony.for_style(style).draw_phrase_end(controls.mode, rng)
                if drawn is not None:
                    cadence = _close_on(drawn, controls.mode)
            # An inner full close arrives on the third beat, the song's last one on the downbeat.
            late = style == "chorale" and not final_close
            if material.endswith(VARIED) and base in chords:
                chords[material] = chords[base]  # a varied return: its bars are rewritten, not its harmony
            elif material.endswith("'") and base in chords and form.second_endings and not final_close:
                # A second ending (a dance tune's strain, a chorale's Stollen): the section again over its
                # chords, the end of its last bar new (``Form.second_endings``).
                chords[material] = [list(c) for c in chords[base]]
                heads[material] = {L - 1: (base, L - 1)}
            elif material.endswith("'") and base in chords:
                keep = chords[base][: L - form.ending_bars]
                ending = self.harmony.progression(
                    controls.mode, form.ending_bars, spans, cadence, False, rng, style=style, arrive_late=late
                )
                chords[material] = keep + ending
            else:
                start_on_tonic = base == "A"
                # A later section goes on from the chord the one before it closed on.
                k = form.sections.index(first)
                before = form.sections[k - 1].material if k > 0 else ""
                after = chords[before][-1][-1] if before in chords else None
                # A chorale's section is two or more phrases: each inner one closes where the corpus's
                # phrases do (drawn), the last one as the section asks.
                P = form.phrase_bars if form.texture == "chorale" else L
                chords[material] = []
                for p0 in range(0, L, P):
                    last_phrase = p0 + P >= L
                    close: str | Chord = cadence
                    if not last_phrase:
                        drawn = self.harmony.for_style(style).draw_phrase_end(controls.mode, rng)
                        close = "half" if drawn is None else _close_on(drawn, controls.mode)
                    chords[material] += self.harmony.progression(
                        controls.mode,
                        min(P, L - p0),
                        spans,
                        close,
                        start_on_tonic and p0 == 0,
                        rng,
                        style=style,
                        arrive_late=late or not last_phrase,
                        after=after if p0 == 0 else chords[material][-1][-1],
                    )
                # A dance tune's eight-bar strain often starts its second phrase as it started its first
                # (a b a c): those bars repeat, over the same chords.
                if form.texture == "tune" and L == 2 * PHRASE_BARS and rng.random() < INNER_REPEAT_SHARE:
                    k = int(rng.choice(list(INNER_REPEAT_BARS), p=list(INNER_REPEAT_BARS.values())))
                    inner[material] = {PHRASE_BARS + b: (material, b) for b in range(k)}
                # ... and its third bar may be its first again (a b a c).
                if form.texture == "tune" and L == 2 * PHRASE_BARS and rng.random() < THIRD_BAR_REPEAT_SHARE:
                    inner.setdefault(material, {})[2] = (material, 0)
                # A later strain may close as an earlier strain's full close did (its second ending, or a
                # strain played twice as written): those last bars, over the same chords. Not the song's
                # last strain, whose last bar lands on its own.
                rhyme = [
                    m
                    for m in chords
                    if base_of(m) != base
                    and any(s.material == m and s.cadence == "authentic" for s in form.sections)
                ]
                if (
                    form.texture == "tune"
                    and L == 2 * PHRASE_BARS
                    and rhyme
                    and material != last_written
                    and rng.random() < RHYME_SHARE
                ):
                    r = int(rng.choice(list(RHYME_BARS), p=list(RHYME_BARS.values())))
                    own = inner.setdefault(material, {})
                    for b in range(L - r, L):
                        own[b] = (rhyme[-1], b)
                for b, (src, sb) in sorted(inner.get(material, {}).items()):  # a copy of a copy after it
                    chords[material][b] = list(chords[src][sb])
        intro = next((s for s in form.sections if s.role == "intro"), None)
        if intro is not None:
            chords["intro"] = self.harmony.progression(
                controls.mode, intro.bars, spans, "half", True, rng, style=style
            )
        land = form.texture != "tune"
        melody_program = pitched[roles.index("melody")]
        octave = melody_octave(melody_program, controls.key_pc)
        lo, hi = program_range(melody_program)
        tonic = 60 + controls.key_pc + octave
        written = form.materials()
        materials = []
        for k, material in enumerate(written):
            base = base_of(material)
            copy = material != base and base in written[:k]
            mask = infill_mask(material, len(chords[material])) if copy else None
            if copy and mask is None and form.texture == "band":
                # A verse's second line starts as its first did, for none to all of the bars a repeat would
                # keep, and goes elsewhere over the same chords; a chorus's keeps its hook, half of them or
                # more. How much is drawn per song: a fixed amount gave every song of a length the same
                # count of repeated bars (3 or 4 of 16 in 100 of 160 songs), a tell the corpus's spread
                # of counts does not have.
                most = L - form.ending_bars
                kept = int(rng.integers(0, most + 1) if base == "A" else rng.integers(most // 2, most + 1))
                mask = tuple(b < kept for b in range(len(chords[material])))
            materials.append(
                Material(
                    name=material,
                    letter=base if base in S.SECTION_LETTERS else "D",
                    chords=chords[material],
                    final=k == len(written) - 1,
                    copy_from=base if copy else None,
                    copy_bars=L - form.ending_bars if copy and mask is None else 0,
                    copy_mask=mask,
                    inner=inner.get(material, {}),
                    heads=heads.get(material, {}),
                    # Some phrases run on into the next instead of closing (never the song's last bar).
                    open_ends=frozenset(
                        b
                        for b in range(form.phrase_bars - 1, len(chords[material]), form.phrase_bars)
                        if land and rng.random() < OPEN_PHRASE_END_SHARE
                    ),
                )
            )
        # The register melodies of the corpus use (a fifth below the tonic to an octave and a half above),
        # inside the instrument's range.
        rel_lo, rel_hi = max(lo - tonic, -7), min(hi - tonic, 24)
        # The density asked for is measured over the whole song, the intro (no melody) included; the outro's
        # tag replays written bars, so it is melody.
        melodic_bars = sum(sec.bars for sec in form.sections if sec.material or sec.role == "outro")
        # The piece's feel: dotted (a hornpipe's pairs), or even and then plain (no sixteenths) as often as
        # the corpus's pieces of its style, meter and density are: most hymn tunes and a third of the jigs
        # (the model alone put a few sixteenths into nearly every song).
        prior = self.melody.prior
        own = prior.for_style(style) if prior is not None else None
        dotted = own is not None and own.draw_dotted(controls.meter, rng)
        # The densest bin is left free: running eighths alone, less its held phrase ends, fell short of it
        # (the verifier then rewrote a tenth of those songs).
        plain = (
            own is not None
            and not dotted
            and controls.density_bin < len(DENSITY_TARGETS) - 1
            and not own.draw_sixteenths(controls.meter, controls.density_bin, rng)
        )
        # The density aimed at is the one a corpus melody of this style and meter in the asked bin has (a
        # reel's even eighths, a chorale's quarters; one such piece's, drawn at random, so songs of one bin
        # differ as the corpus's do), kept inside the bin, not the bin's middle: a middle above a style's
        # own rate would be met by squeezing in sixteenths.
        bar_ticks = S.bar_ticks_of(controls.meter)
        aim = DENSITY_TARGETS[controls.density_bin]
        typical = (
            self.rhythm.draw_rate(style, controls.meter, controls.density_bin, rng) if self.rhythm else None
        )
        if typical is not None:
            edges = (0.0, *DENSITY_EDGES, float("inf"))
            low, high = edges[controls.density_bin], edges[controls.density_bin + 1]
            aim = float(
                np.clip(typical * TPQ / bar_ticks, low * (1 + DENSITY_MARGIN), high * (1 - DENSITY_MARGIN))
            )
        target = aim * form.bars / max(1, melodic_bars)
        # Each bar's note count, drawn from the corpus's bars of this style, meter and bin and scaled to
        # the target; a copied bar keeps its source's count (the model reads these as NOTES tokens).
        per_bar = target * bar_ticks / TPQ
        closing = [s.material for s in form.sections if s.material][-1]
        planned: dict[str, list[int]] = {}
        by_name = {mat.name: mat for mat in materials}
        for mat in materials if self.rhythm is not None and self.melody.counts else ():
            source = planned.get(mat.copy_from or "", [])
            fixed = [source[b] if mat.copies(b) and b < len(source) else None for b in range(mat.n_bars)]
            for b, (src, sb) in mat.heads.items():  # a second ending has as many notes as the first
                fixed[b] = planned[src][sb] if sb < len(planned.get(src, [])) else None
            most = min(MAX_NOTES_PER_BAR, bar_ticks // 2 if plain else bar_ticks)
            draw = self.rhythm.draw
            mat.counts = draw(
                style, controls.meter, controls.density_bin, mat.n_bars, per_bar, rng, most, fixed
            )
            if mat.inner:  # a bar that repeats an earlier one asks for its count; the others make up the aim
                for b, (src, sb) in sorted(mat.inner.items()):  # a copy of a copy after its source
                    if src == mat.name:
                        fixed[b] = fixed[sb] = mat.counts[sb] if fixed[sb] is None else fixed[sb]
                    else:
                        fixed[b] = planned[src][sb] if sb < len(planned.get(src, [])) else mat.counts[b]
                mat.counts = draw(
                    style, controls.meter, controls.density_bin, mat.n_bars, per_bar, rng, most, fixed
                )
            if mat.name == closing:  # the song's last bar lands: a note a beat at most, the last one held
                beats = bar_ticks // meter_grid(controls.meter, TPQ)[1]
                mat.counts[-1] = min(mat.counts[-1], beats)
            planned[mat.name] = mat.counts
            if land and meter_grid(controls.meter, TPQ)[1] == TPQ:
                # In simple meters most of the chorales' phrases after the first start on an upbeat: the
                # phrase before lands on its last bar's second-last beat and the last beat leads on.
                # A second ending lands as its first ending did: it repeats that bar up to its last beat.
                mat.pickups = frozenset(
                    b
                    for b in range(form.phrase_bars - 1, mat.n_bars, form.phrase_bars)
                    if b not in mat.open_ends
                    and not (mat.name == closing and b == mat.n_bars - 1)
                    and (
                        b in by_name[mat.heads[b][0]].pickups
                        if b in mat.heads
                        else mat.source(b) is None and mat.counts[b] >= 2 and rng.random() < PICKUP_SHARE
                    )
                )
                mat.eighth_pickups = frozenset(
                    b
                    for b in sorted(mat.pickups)
                    if (
                        b in by_name[mat.heads[b][0]].eighth_pickups
                        if b in mat.heads
                        else mat.counts[b] >= 3 and rng.random() < EIGHTH_PICKUP_SHARE
                    )
                )
        request = MelodyRequest(
            controls.mode,
            controls.meter,
            controls.density_bin,
            style,
            materials,
            rel_lo,
            rel_hi,
            self.scale,
            target,
            # Songs and chorales close their phrases on a held chord tone; reels and jigs run through theirs
            # (held-out corpus tunes: a median 1 phrase end in 8 lands).
            land_phrases=land,
            closing=closing,
            phrase_bars=form.phrase_bars,
        )
        swings = form.texture in ("band", "tune") and controls.density_bin <= 2 and controls.tempo_bpm < 150
        swing = 0.6 if swings and meter_grid(controls.meter, TPQ)[1] == TPQ and rng.random() < 0.35 else 0.5
        if dotted:
            # A hornpipe-like piece: its rhythm is dotted as written, so it is not swung on top.
            request.dotted, swing = True, 0.5
        request.sixteenths = not plain
        # Of the even pieces with sixteenths, some have a dotted eighth now and then, as the corpus's do.
        request.figures = (
            own is not None and not dotted and not plain and own.draw_figures(controls.meter, rng)
        )
        return SongPlan(controls, form, roles, chords, octave, request, swing)

    # --- generation -----------------------------------------------------------------------------------

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]:
        """One MIDI per request, parts in the order of ``controls[i].programs``; deterministic for a seed."""
        if self.threads:
            torch.set_num_threads(self.threads)
        rngs = [np.random.default_rng([int(seed), i]) for i in range(len(controls))]
        plans = [self.plan(c, rng) for c, rng in zip(controls, rngs, strict=True)]
        streams: list[list[int]] = []
        for start in range(0, len(plans), self.max_batch):
            chunk = plans[start : start + self.max_batch]
            streams += self.melody.write([p.request for p in chunk], seed=int(seed) * 7919 + start)
        return [self.realize(p, s, rng) for p, s, rng in zip(plans, streams, rngs, strict=True)]

    def realize(self, plan: SongPlan, stream: list[int], rng: np.random.Generator) -> pretty_midi.PrettyMIDI:
        """The written melody laid out in the form, arranged and performed."""
        c = plan.controls
        bar_ticks, beat_ticks, compound = meter_grid(c.meter, TPQ)
        spans = spans_per_bar(c.meter)
        span_ticks = bar_ticks // spans
        tonic = 60 + c.key_pc + plan.octave
        # What the model wrote, per material (a material cut short by the context keeps its bars so far).
        written: dict[str, list[list[tuple[int, int, int]]]] = {}
        names = [m.name for m in plan.request.materials]
        for name, (_, bars) in zip(names, S.decode_sections(stream), strict=False):
            written[name] = [b.notes for b in bars]
        melody: list[Note] = []
        timeline: list[Chord] = []
        spans_out: list[Span] = []
        markers: list[tuple[int, str]] = []
        heard: dict[str, int] = {}
        tick = 0
        closing = next((s.material for s in reversed(plan.form.sections) if s.material), "")
        for section in plan.form.sections:
            key = section.material or section.role
            if section.material or (section.role == "outro" and closing):
                # A section plays its material; the outro is a tag: the closing section's last bars again.
                material = section.material or closing
                chords = plan.chords[material]
                bars = written.get(material, [])
                first = 0 if section.material else max(0, len(chords) - section.bars)
                chords = chords[first:]
                for b in range(section.bars):
                    k = first + b
                    for pos, dur, rel in bars[k] if k < len(bars) else []:
                        melody.append(Note(tick + b * bar_ticks + pos, dur, tonic + rel))
            elif section.role == "intro":
                chords = plan.chords["intro"]
            else:
                chords = [[TONIC[c.mode]] * spans for _ in range(section.bars)]
            for bar in chords[: section.bars]:
                timeline += bar
            spans_out.append(Span(section.role, tick, section.bars * bar_ticks, heard.get(key, 0)))
            heard[key] = heard.get(key, 0) + 1
            markers.append((tick, f"section:{section.label}"))
            tick += section.bars * bar_ticks
        total = tick
        melody_program = plan.controls.pitched_programs[plan.roles.index("melody")]
        if plan.form.texture != "tune":
            melody = legato(melody, bar_ticks, beat_ticks, self._usual_length(plan.request.style, c.meter))
        melody = _end_on_tonic(melody, c, plan.form, total, program_range(melody_program))
        parts = self._arrange(plan, melody, timeline, span_ticks, beat_ticks, compound, rng)
        if plan.form.texture == "tune" and melody:
            # A dance tune stops on its last note, as long as a corpus tune of its meter and density ends on
            # (a reel's quarter, a 2/4 reel's eighth: their last bar is cut short by the upbeat they began
            # with); nothing sounds on after it.
            last = self.rhythm.draw_last("tune", c.meter, c.density_bin, rng) if self.rhythm else None
            parts = _end_together(parts, melody[-1].start + min(last or TPQ, melody[-1].duration))
        parts = _final_chord(parts, c)
        if c.has_drums:
            hits = drum_part(
                plan.form.sections, c.meter, c.density_bin, c.tempo_bpm, TPQ, int(rng.integers(1 << 30))
            )
            drum = Part(None, "drums", [n for n, _ in hits], [v for _, v in hits], "Drums")
        # Parts in the order of the programs asked for; a solo instrument's accompaniment track right after
        # its melody track.
        ordered: list[Part] = []
        pitched = [q for q in parts if not q.name.endswith(ACCOMPANIMENT_SUFFIX)]
        staves = {q.program: q for q in parts if q.name.endswith(ACCOMPANIMENT_SUFFIX)}
        pitched_iter = iter(pitched)
        for p in c.programs:
            if p == DRUMS:
                ordered.append(drum)
                continue
            part = next(pitched_iter)
            ordered.append(part)
            if part.role == "melody" and part.program in staves:
                ordered.append(staves.pop(part.program))
        pm = perform(ordered, spans_out, c.tempo_bpm, c.meter, TPQ, span_ticks, rng, swing=plan.swing)
        previous = None
        for s, chord in enumerate(timeline):
            if chord != previous:
                markers.append((s * span_ticks, f"chord:{chord.roman(c.mode)}"))
                previous = chord
        s_per_tick = 60.0 / c.tempo_bpm / TPQ
        pm.text_events = [pretty_midi.Text(text, t * s_per_tick) for t, text in sorted(markers)]
        return pm

    def _arrange(
        self,
        plan: SongPlan,
        melody: list[Note],
        timeline: list[Chord],
        span_ticks: int,
        beat_ticks: int,
        compound: bool,
        rng: np.random.Generator,
    ) -> list[Part]:
        c = plan.controls
        pitched = c.pitched_programs
        melody_low = min((n.pitch for n in melody), default=60)
        # Chords are voiced under the melody, but never lower than up to middle C: under a low melody (a
        # cello's) they would crowd the bass. A tone that then reaches the tune is moved an octave down or
        # left out afterwards (``_keep_order``), so they share its register without climbing over it.
        chord_ceiling = max(melody_low - 1, CHORD_CEILING_MIN)
        parts: list[Part] = []
        if plan.form.texture == "chorale":
            lower = [i for i, r in enumerate(plan.roles) if r != "melody"]
            lower.sort(key=lambda i: ("alto", "tenor", "bass").index(plan.roles[i]))
            voices = voice_chorale(
                melody,
                timeline,
                c.key_pc,
                span_ticks,
                [pitched[i] for i in lower],
                beat_ticks=beat_ticks,
                moving=CHORALE_MOVING,
                crossing=CHORALE_CROSSING,
                broken=CHORALE_BROKEN_COST,
                broken_max=CHORALE_BROKEN_MAX,
            )
            # The bass moves under the tune's passing tones (the voicing sees the tune only on the beats).
            voices[-1] = consonant_bass(
                voices[-1],
                melody,
                timeline,
                c.key_pc,
                span_ticks,
                beat_ticks,
                pitched[lower[-1]],
                voices[:-1],
            )
            sub = beat_ticks // 3 if compound else beat_ticks // 2
            voices = passing_tones(voices, melody, c.key_pc, c.mode, beat_ticks, sub, CHORALE_PASSING, rng)
            by_index = dict(zip(lower, voices, strict=True))
        for i, (program, role) in enumerate(zip(pitched, plan.roles, strict=True)):
            name = pretty_midi.program_to_instrument_name(program)
            if role == "melody":
                parts.append(Part(program, role, list(melody), name=name + MELODY_SUFFIX))
                if len(pitched) == 1 and (
                    family_of(program) in ("piano", "guitar", "organ") or program == 46
                ):
                    # A chordal instrument alone plays its own accompaniment under the melody, on a second
                    # track of the same program (a pianist's left hand): played softer than the tune, and
                    # never mistaken for it by whoever reads the melody track.
                    notes = chord_part(
                        timeline,
                        c.key_pc,
                        span_ticks,
                        beat_ticks,
                        c.density_bin,
                        program,
                        melody_low - 1,  # one instrument: its own chords stay under its tune
                        compound,
                    )
                    parts.append(Part(program, "chords", notes, name=name + ACCOMPANIMENT_SUFFIX))
            elif plan.form.texture == "chorale":
                parts.append(Part(program, role, by_index[i], name=name))
            elif role == "bass":
                line = bass_line(
                    timeline, c.key_pc, span_ticks, beat_ticks, c.density_bin, program, rng, melody
                )
                line = consonant_bass(line, melody, timeline, c.key_pc, span_ticks, beat_ticks, program)
                parts.append(Part(program, role, line, name=name))
            elif role == "timpani":
                bar_ticks = span_ticks * spans_per_bar(c.meter)
                parts.append(
                    Part(
                        program,
                        role,
                        timpani_part(timeline, c.key_pc, span_ticks, bar_ticks, c.density_bin),
                        name=name,
                    )
                )
            elif role in ("chords", "pad"):
                density = 0 if role == "pad" else c.density_bin
                notes = chord_part(
                    timeline, c.key_pc, span_ticks, beat_ticks, density, program, chord_ceiling, compound
                )
                parts.append(Part(program, role, notes, name=name))
            else:
                parts.append(
                    Part(
                        program,
                        role,
                        counter_line(melody, timeline, c.key_pc, span_ticks, beat_ticks, program),
                        name=name,
                    )
                )
        if plan.form.texture != "chorale":
            # The tune stays on top and the bass at the bottom: chords, pads and counter-lines go under
            # the melody, the bass under them too (an octave down where the instrument reaches, else a rest).
            # Then bass, counter-lines and the chords' top tones are re-pitched where they would move in
            # parallel fifths or octaves with another part (the chorale voicing already avoids them), and
            # kept under once more.
            self._keep_order(parts)
            for k, part in enumerate(parts):
                if part.role in ("bass", "counter", "chords", "pad"):
                    others = [q.notes for j, q in enumerate(parts) if j != k and q.role != "timpani"]
                    fixed = avoid_parallels(
                        part.notes, others, timeline, c.key_pc, span_ticks, beat_ticks, part.program
                    )
                    parts[k] = Part(part.program, part.role, fixed, part.velocities, part.name)
            self._keep_order(parts)
        return parts

    def _usual_length(self, style: str, meter: str) -> Callable[[int, int], bool] | None:
        """Whether the corpus's melodies of ``style`` in ``meter`` hold a note for a length at a place in
        the bar (:data:`USUAL_LENGTH` of the notes starting there or more), or None without a prior."""
        prior = self.melody.prior
        if prior is None or prior.for_style(style).duration_log_probs(meter, 0) is None:
            return None
        own = prior.for_style(style)

        def usual(pos: int, length: int) -> bool:
            table = own.duration_log_probs(meter, pos)
            return (
                table is not None and 1 <= length <= len(table) and table[length - 1] >= np.log(USUAL_LENGTH)
            )

        return usual

    @staticmethod
    def _keep_order(parts: list[Part]) -> None:
        """Chords, pads and counter-lines under the melody; the bass under the melody (a rest where it
        cannot go under) and under the chords where its range lets it go an octave down."""
        tune = [q.notes for q in parts if q.role == "melody"]
        middle = [k for k, q in enumerate(parts) if q.role in ("chords", "pad", "counter")]
        for k in middle:
            q = parts[k]
            lo = program_range(q.program)[0] if q.program is not None else 0
            parts[k] = Part(q.program, q.role, keep_under(q.notes, tune, lo), q.velocities, q.name)
        for k, q in enumerate(parts):
            if q.role == "bass" and q.program is not None:
                lo = program_range(q.program)[0]
                line = keep_under(q.notes, tune, lo)
                line = keep_under(line, [parts[j].notes for j in middle], lo, drop=False)
                parts[k] = Part(q.program, q.role, line, q.velocities, q.name)


def melody_line(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, int, int]]:
    """The melody track of a song as ``(onset, duration, pitch)`` on the sixteenth grid (performance timing
    rounded away)."""
    track = next((i for i in pm.instruments if i.name.endswith(MELODY_SUFFIX)), None)
    if track is None:
        return []
    per_tick = pm.resolution / TPQ  # through the tempo map: a written ritardando keeps notes on their beats
    out = []
    for n in track.notes:
        on, off = pm.time_to_tick(n.start) / per_tick, pm.time_to_tick(n.end) / per_tick
        out.append((round(on), max(1, round(off) - round(on)), n.pitch))
    return out


def _end_on_tonic(
    melody: list[Note], c: Controls, form: Form, total: int, playable: tuple[int, int]
) -> list[Note]:
    """The melody's last note on the tonic, held through the ending (a phrase that ends the song comes to
    rest; the model usually does this itself, this makes sure): the nearest tonic the instrument can play
    (``playable``, its lowest and highest pitch), above or below."""
    if not melody:
        return melody
    last = melody[-1]
    pitch = last.pitch
    lo, hi = playable
    if pitch % 12 != c.key_pc % 12:  # the tonic itself: the corpus's tunes and hymns end on it
        tonics = [p for p in range(pitch - 11, pitch + 12) if p % 12 == c.key_pc % 12 and lo <= p <= hi]
        if tonics:
            pitch = min(tonics, key=lambda p: (abs(p - last.pitch), p))
    # A song's or chorale's last note is held to the end (a fermata; the corpus's hymns never stop short of
    # their last bar line); a dance tune's is cut later, to the length its corpus tunes end on.
    held_to = (
        total if form.sections[-1].role == "outro" or form.texture != "tune" else last.start + last.duration
    )
    melody[-1] = Note(last.start, max(last.duration, held_to - last.start), pitch)
    return melody


# Note lengths a sung line holds a note for, in sixteenths, where no prior says which are usual.
SUNG_LENGTHS = frozenset({1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24})
USUAL_LENGTH = 0.01  # a length is usual at a place in the bar where the corpus gives it this share of notes


def legato(
    melody: list[Note],
    bar_ticks: int,
    beat_ticks: int,
    usual: Callable[[int, int], bool] | None = None,
) -> list[Note]:
    """A sung melody without the model's stray rests: a note stops short of the next only for a rest of one
    beat that starts on a beat (the only rest the corpus's hymn tunes take, a breath between phrases).

    Any other rest is filled by holding the note before it on, to the next note or else to the latest beat
    before it, as far as ``usual(onset in the bar, length)`` allows (the prior's lengths at that place in
    the bar: a quarter on the second beat of 4/4 is not held as a half). Without ``usual``, a hymnal's
    lengths (:data:`SUNG_LENGTHS`) are allowed, and a note off the beat ends by the next beat. What cannot
    be filled stays a rest. Held-out chorales rest after 1 % of their melody notes, every time for one beat;
    the model's songs rested after 2.5 %, for anything from a sixteenth to a whole bar.
    """
    out = list(melody)
    for k in range(len(out) - 1):
        note, nxt = out[k], out[k + 1]
        end = note.start + note.duration
        gap = nxt.start - end
        if gap <= 0 or (gap == beat_ticks and end % beat_ticks == 0):
            continue
        limit = nxt.start
        if usual is None and note.start % beat_ticks:
            limit = min(limit, note.start - note.start % beat_ticks + beat_ticks)
        ends = [limit] + [t for t in range(limit - limit % beat_ticks, end, -beat_ticks) if t < limit]
        for new_end in ends:
            length = new_end - note.start
            ok = usual(note.start % bar_ticks, length) if usual else length in SUNG_LENGTHS
            if new_end > end and ok:
                out[k] = Note(note.start, length, note.pitch)
                break
    return out


def _end_together(parts: list[Part], end: int) -> list[Part]:
    """Every part stops by ``end``: notes that start after it are dropped, notes that sound past it cut."""
    out = []
    for part in parts:
        velocities = part.velocities if part.velocities is not None else [None] * len(part.notes)
        kept = [(n, v) for n, v in zip(part.notes, velocities, strict=True) if n.start < end]
        notes = [Note(n.start, min(n.duration, end - n.start), n.pitch) for n, _ in kept]
        heard = None if part.velocities is None else [v for _, v in kept]
        out.append(Part(part.program, part.role, notes, heard, part.name))
    return out


def _final_chord(parts: list[Part], c: Controls) -> list[Part]:
    """The last chord of the song is the tonic chord with the tonic in the bass: every pitched part's last
    notes moved to the nearest tone of the tonic triad in its range, and the lowest of them to the tonic."""
    triad = TONIC[c.mode].pitch_classes(c.key_pc)
    finals: list[tuple[int, int]] = []  # (part index, note index) of every last-onset note
    out = []
    for k, part in enumerate(parts):
        if part.program is None or not part.notes:
            out.append(part)
            continue
        lo, hi = program_range(part.program)
        end = max(n.start for n in part.notes)
        notes = list(part.notes)
        for j, n in enumerate(notes):
            if n.start != end:
                continue
            finals.append((k, j))
            if n.pitch % 12 not in triad:
                options = [p for p in range(n.pitch - 4, n.pitch + 5) if p % 12 in triad and lo <= p <= hi]
                if options:
                    notes[j] = Note(n.start, n.duration, min(options, key=lambda p: (abs(p - n.pitch), p)))
        out.append(Part(part.program, part.role, notes, part.velocities, part.name))
    if finals:
        k, j = min(finals, key=lambda kj: out[kj[0]].notes[kj[1]].pitch)
        n = out[k].notes[j]
        lo, hi = program_range(out[k].program)
        options = [p for p in range(n.pitch - 7, n.pitch + 8) if p % 12 == c.key_pc % 12 and lo <= p <= hi]
        if options and n.pitch % 12 != c.key_pc % 12:
            # Down to the tonic where the range allows (the bass stays the lowest part), else up.
            out[k].notes[j] = Note(
                n.start, n.duration, min(options, key=lambda p: (p > n.pitch, abs(p - n.pitch)))
            )
    return out

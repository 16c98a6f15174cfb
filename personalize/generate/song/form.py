"""The form of a song: sections with roles, lengths and cadences, sized to the requested length.

Three textures, chosen from the instruments asked for (:func:`texture_of`):

- ``tune`` (one or two instruments): a dance-tune form, strains of 8 bars played twice, closing on the
  tonic both times: with first and second endings that part at the last eighth or quarter of the strain's
  last bar (``A A' B B'``), or as written (``A A``: a plain repeat), the whole repeated to length, with a
  short intro when something can accompany and a four-bar tag to end on (see below). A short tune (under
  32 bars) plays its strains once each (``A B``, ``A B A``; 8-bar strains from 16 bars up), as the corpus's
  short tunes are written: a 16-bar corpus tune repeats a 2-bar unit in 64 % of cases and its bars at a
  median of 0.63 self-similarity, where ``A A B B`` in 4-bar strains sat at 0.95.
- ``band`` (drums, or three or more parts with a bass or a chordal instrument): verse / chorus song form,
  ``intro A A' B B' A A' B B' C B B' outro`` cut to length (A = verse, B = chorus, C = bridge).
- ``chorale`` (three or four melodic instruments, no drums, no bass or chordal instrument): a hymn in the
  chorale's bar form, 4-bar sections ``A A' B C ...`` of two 2-bar phrases each (``Form.phrase_bars``): the
  first section sung twice (the *Stollen*; the second time differs on its last beat, where it leads on),
  then new sections to the stanza's end (the *Abgesang*, up to eight in all), stanzas repeated to length;
  or, as about three hymns in ten of the corpus go, through-composed (``A B C D ...``, every section new).

Material is written once per distinct letter and reused: ``A'`` keeps all but the last two bars of ``A``
and writes a new ending (that is where the cadence changes), so a section returns at least four bars after
it was first heard (a dance tune's strain and a chorale's Stollen keep all but the end of the last bar); a
band song's verse line ``A'`` keeps none to all of those bars (drawn per song: it starts as the first line
did and goes elsewhere), while its chorus keeps its hook, half of them or more. In band songs the second
verse and the later choruses are varied returns (``A~``, ``B~``): the same chords, the same phrase openings
and landings, and the bar before each landing written anew in context (as a singer's second verse goes, the
words changing the line). Tunes and chorales repeat their strains and stanzas as fiddlers and hymnals do:
note for note, or up to a second ending.

Tunes and band songs end with a **tag**: the outro plays the last four bars of the closing section once
more (its final cadence heard twice, as bands end songs), the drums closing on a final hit. A short piece
(one pass through its form) has no intro and no tag where leaving them out comes nearer the length asked
for: the length is a control like the others. Every phrase of the melody is four bars long, so phrase ends
fall every four bars counted back from the end of the song.
"""

from __future__ import annotations

from dataclasses import dataclass

from personalize.music.controls import Controls, bar_quarters
from personalize.music.gm import family_of

TEXTURES = ("tune", "band", "chorale")
CHORDAL_FAMILIES = ("piano", "guitar", "organ", "chromatic_percussion", "synth_pad", "ensemble")
ENDING_BARS = 2  # bars a varied repeat writes anew
TUNE_ENDING_BARS = 1  # a dance tune's second ending: the strain's last bar (held-out reels and jigs repeat
# their strains all but a bar or so; two new bars of eight left their tracks repeating less than the corpus)
# The second ending of a dance tune's eight-bar strain is its first ending up to the bar's last eighth (2/4
# and compound meters) or last quarter (the others), then new: in the training tunes 84-90 % of first and
# second endings part there (the first leads back with a pickup, the second rests or leads on). Both end the
# strain on the tonic. A chorale's Stollen parts on its last beat the same way (``Form.second_endings``).
SECOND_ENDING_TAIL_TICKS = {"2/4": 2, "6/8": 2, "9/8": 2, "12/8": 2}
TAG_BARS = 4  # the outro of a tune or a band song: the closing section's last phrase again
PHRASE_BARS = 4  # a melody phrase: it lands (a long chord tone) on its last bar
# A chorale's phrases are two bars long, two to a written section: of the training chorales' phrases in 4/4,
# 68 % are two bars (a median of 7 phrases in 16 bars), 6 % three and 4 % one. Four-bar phrases left the
# written chorales with half the corpus's phrase ends, and their held notes spread over every bar instead.
CHORALE_PHRASE_BARS = 2


def texture_of(controls: Controls) -> str:
    """``tune``, ``band`` or ``chorale`` for the instruments of ``controls`` (see the module docstring)."""
    pitched = controls.pitched_programs
    families = [family_of(p) for p in pitched]
    has_bass = "bass" in families
    has_chordal = any(f in CHORDAL_FAMILIES for f in families) or any(p in (46,) for p in pitched)  # harp
    if controls.has_drums or (47 in pitched and len(pitched) > 1):  # drums, or timpani keeping time
        return "band"
    if len(pitched) >= 3:
        return "band" if (has_bass or has_chordal) else "chorale"
    return "tune"


@dataclass
class FormSection:
    """One section in playing order. ``material`` names the written melody it plays (``A``, ``A'``, ``B``,
    ...; empty for an intro or outro, which the accompaniment carries)."""

    role: str  # intro | verse | chorus | bridge | strain | phrase | outro
    material: str
    bars: int
    cadence: str | None  # authentic | half | None
    final: bool = False

    @property
    def label(self) -> str:
        return self.material or self.role


@dataclass
class Form:
    texture: str
    sections: list[FormSection]
    section_bars: int  # bars of one written section

    @property
    def bars(self) -> int:
        return sum(s.bars for s in self.sections)

    @property
    def second_endings(self) -> bool:
        """Whether a repeat's new ending keeps the first ending's notes up to the bar's last eighth or quarter
        (``SECOND_ENDING_TAIL_TICKS``): a dance tune's eight-bar strains, and a chorale's Stollen (in the
        training chorales the longest exact repeat is 3 bars and the last beat of the next bar in 68 of 200,
        a whole 4-bar phrase in 37)."""
        return (self.texture == "tune" and self.section_bars >= 8) or self.texture == "chorale"

    @property
    def ending_bars(self) -> int:
        """Bars a repeat with a new ending (``A'``) writes anew: an eight-bar strain's second ending is one
        bar (a short tune's four-bar strains, like the corpus's short tunes, change two)."""
        return TUNE_ENDING_BARS if self.texture == "tune" and self.section_bars >= 8 else ENDING_BARS

    @property
    def phrase_bars(self) -> int:
        """Bars of one melody phrase (it lands on its last bar): two in a chorale, else four."""
        return CHORALE_PHRASE_BARS if self.texture == "chorale" else PHRASE_BARS

    def materials(self) -> list[str]:
        """Distinct written materials in order of first appearance (what the melody model writes)."""
        seen: list[str] = []
        for s in self.sections:
            if s.material and s.material not in seen:
                seen.append(s.material)
        return seen

    def describe(self) -> str:
        return " ".join(f"{s.label}({s.bars})" for s in self.sections)


def _cadence(material: str, closing: bool) -> str:
    return "authentic" if closing or material.endswith("'") else "half"


def _nearest(target: int, *candidates: list[FormSection]) -> list[FormSection]:
    """The candidate form whose length is nearest ``target`` (the first of equals)."""
    return min(candidates, key=lambda c: abs(sum(s.bars for s in c) - target))


def _tune(
    section_bars: int,
    target: int,
    accompanied: bool,
    plain: frozenset[str] = frozenset(),
    once: bool = False,
) -> list[FormSection]:
    # A strain in ``plain`` is played twice as written (no second ending); it closes on the tonic both times.
    # ``once``: each strain played once (a short tune: A B, then A again where there is room).
    if once:
        cycle = [("strain", "A"), ("strain", "B")]
    else:
        cycle = [
            ("strain", m) for letter in "AB" for m in (letter, letter if letter in plain else letter + "'")
        ]

    eight = section_bars >= 8 and not once

    def body(room: int) -> list[FormSection]:
        cycle_bars = len(cycle) * section_bars
        full, rest = divmod(max(0, room), cycle_bars)
        if rest >= 0.75 * cycle_bars:
            full, rest = full + 1, 0
        out = [
            # An eight-bar strain closes on the tonic both times; its endings differ only at the bar's end.
            FormSection(role, material, section_bars, _cadence(material, material in plain or eight))
            for _ in range(max(1, full))
            for role, material in cycle
        ]
        if full >= 1 and rest >= 0.75 * cycle_bars / 2:  # half a cycle more: the first strain once again
            half = cycle[: len(cycle) // 2]
            out += [FormSection(r, m, section_bars, _cadence(m, m in plain or eight)) for r, m in half]
        return out

    intro = [FormSection("intro", "", 2, "half")] if accompanied else []
    framed = intro + body(target - sum(s.bars for s in intro) - TAG_BARS)
    framed.append(FormSection("outro", "", TAG_BARS, "authentic"))
    return _nearest(target, framed, body(target))


_BAND_ORDER = (
    ("verse", "A"), ("verse", "A'"), ("chorus", "B"), ("chorus", "B'"),
    ("verse", "A~"), ("verse", "A'"), ("chorus", "B~"), ("chorus", "B'"),
    ("bridge", "C"), ("chorus", "B~"), ("chorus", "B'"), ("chorus", "B"), ("chorus", "B'"),
)  # fmt: skip
VARIED = "~"  # a return with bars rewritten inside it: ``A~`` is ``A`` again, its INFILL_BARS written anew
INFILL_BARS = (2,)  # of every four-bar phrase: the bar before the landing (the phrase's start and end stay)


def base_of(material: str) -> str:
    """The section a material belongs to: ``A`` for ``A``, ``A'`` and ``A~``."""
    return material.rstrip("'" + VARIED)


def infill_mask(material: str, bars: int) -> tuple[bool, ...] | None:
    """For a varied return (``A~``), which of its bars repeat the first statement (True) and which are
    written anew (the ``INFILL_BARS`` of each phrase); None for any other material."""
    if not material.endswith(VARIED):
        return None
    return tuple(b % PHRASE_BARS not in INFILL_BARS for b in range(bars))


def _band(section_bars: int, target: int) -> list[FormSection]:
    intro_bars = 4 if section_bars >= 8 else 2
    candidates: list[list[FormSection]] = []
    # Cut the song after a closing chorus (B') at the length nearest the target, at least verse + chorus;
    # framed by an intro and a tag, or (one pass, where that fits better) on its own.
    for end in range(4, len(_BAND_ORDER) + 1):
        if _BAND_ORDER[end - 1][1] != "B'":
            continue
        body = [FormSection(r, m, section_bars, _cadence(m, False)) for r, m in _BAND_ORDER[:end]]
        candidates.append(
            [
                FormSection("intro", "", intro_bars, "half"),
                *body,
                FormSection("outro", "", TAG_BARS, "authentic"),
            ]
        )
        if end == 4:
            candidates.append(body)
    return _nearest(target, *candidates)


CHORALE_PHRASES = 8  # the most phrases in one stanza: a longer hymn sings its stanza again


def _chorale(section_bars: int, target: int, through_composed: bool = False) -> list[FormSection]:
    phrases = max(3, round(target / section_bars))
    per_stanza = min(phrases, CHORALE_PHRASES)
    if through_composed:
        # Every phrase new, half and full closes alternating, the last one full.
        letters = [chr(ord("A") + k) for k in range(per_stanza)]
        cadences = ["half" if (per_stanza - k) % 2 == 0 else "authentic" for k in range(per_stanza)]
        stanza = list(zip(["phrase"] * per_stanza, letters, cadences, strict=True))
        stanzas = max(1, round(phrases / per_stanza))
        return [FormSection(r, m, section_bars, c) for _ in range(stanzas) for r, m, c in stanza]
    # The Stollen twice (it closes on the dominant, and the repeat leads back to its start), then the
    # Abgesang's new phrases, half and full closes alternating, the last one full. The Stollen's second
    # time differs from its first only on its last beat, where it leads on instead of back
    # (``Form.second_endings``).
    later = [chr(ord("B") + k) for k in range(per_stanza - 2)]
    cadences = ["half" if (per_stanza - 2 - k) % 2 == 0 else "authentic" for k in range(len(later))]
    stanza = [
        ("phrase", "A", "half"),
        ("phrase", "A'", "half"),
        *zip(["phrase"] * len(later), later, cadences, strict=True),
    ]
    stanzas = max(1, round(phrases / per_stanza))
    return [FormSection(r, m, section_bars, c) for _ in range(stanzas) for r, m, c in stanza]


def plan_form(
    controls: Controls,
    accompanied: bool | None = None,
    through_composed: bool = False,
    plain_repeats: frozenset[str] = frozenset(),
) -> Form:
    """The form of a song for ``controls``; ``controls.bars`` is the length asked for, in bars.
    ``through_composed`` writes a chorale's stanza without the Stollen repeat (every phrase new), as about
    three hymns in ten of the corpus's are; ``plain_repeats`` names a dance tune's strains (``A``, ``B``)
    played twice as written, without a second ending; other textures ignore them."""
    texture = texture_of(controls)
    seconds_per_bar = bar_quarters(controls.meter) * 60.0 / controls.tempo_bpm
    # Phrases of about 10-25 s: 8-bar sections, or 4-bar ones where bars are long (slow or long meters).
    # (A short piece asked for, under 32 bars, also gets 4-bar sections: one pass through its form; a short
    # dance tune of 16 bars or more keeps its 8-bar strains and plays each once, as the corpus's tunes of
    # that length are written: A B, then A again.)
    short = int(controls.bars) < 32
    once = texture == "tune" and short  # a short dance tune plays each strain once
    eight = (
        texture != "chorale" and seconds_per_bar * 8 <= 30 and (not short or (once and controls.bars >= 16))
    )
    section_bars = 8 if eight else 4
    target = max(int(controls.bars), section_bars * 2)
    if texture == "band":
        sections = _band(section_bars, target)
    elif texture == "chorale":
        sections = _chorale(section_bars, target, through_composed)
    else:
        if accompanied is None:
            accompanied = len(controls.pitched_programs) > 1 or any(
                family_of(p) in CHORDAL_FAMILIES or p == 46 for p in controls.pitched_programs
            )
        sections = _tune(section_bars, target, accompanied, frozenset(plain_repeats), once=once)
    melodic = [s for s in sections if s.material]
    melodic[-1].final = True
    melodic[-1].cadence = "authentic"
    return Form(texture, sections, section_bars)

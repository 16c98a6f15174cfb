"""General MIDI programs, their 16 families plus drums, and playable ranges."""

from __future__ import annotations

DRUMS = "drums"
FAMILIES = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects",
    DRUMS,
)  # fmt: skip

Program = int | str  # 0..127, or "drums"


def family_of(program: Program) -> str:
    """GM family name of a program number (``33 -> "bass"``) or ``"drums"``."""
    if program == DRUMS:
        return DRUMS
    p = int(program)
    if not 0 <= p <= 127:
        raise ValueError(f"GM program {p} is outside 0..127")
    return FAMILIES[p // 8]


def family_index(program: Program) -> int:
    return FAMILIES.index(family_of(program))


def parse_programs(text: str, sep: str = ";") -> list[Program]:
    """``"0;33;drums" -> [0, 33, "drums"]``; raises ``ValueError`` naming the bad part."""
    parts = [p.strip() for p in str(text).replace(",", sep).split(sep) if p.strip()]
    if not parts:
        raise ValueError(f"no programs in {text!r} (expected GM numbers 0-127 or 'drums', separated by ';')")
    out: list[Program] = []
    for part in parts:
        if part.lower() in (DRUMS, "drum", "percussion"):
            out.append(DRUMS)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"program {part!r} in {text!r} is not a GM number 0-127 or 'drums'") from None
        if not value.is_integer() or not 0 <= value <= 127:
            raise ValueError(f"program {part!r} in {text!r} is outside 0..127")
        out.append(int(value))
    return out


def format_programs(programs: list[Program]) -> str:
    return ";".join(str(p) for p in programs)


# Playable range in sounding pitch (MIDI note numbers, inclusive) per program. Orchestral instruments follow
# the range charts of S. Adler, *The Study of Orchestration*, 4th ed. (W. W. Norton, 2016), converted from
# written to sounding pitch where the instrument transposes (glockenspiel two octaves up, xylophone and
# celesta one octave up, guitar and contrabass one octave down); the rest share their family's range.
_FAMILY_RANGE = {
    "piano": (21, 108), "chromatic_percussion": (53, 96), "organ": (36, 96), "guitar": (40, 84),
    "bass": (28, 60), "strings": (55, 100), "ensemble": (36, 96), "brass": (52, 84), "reed": (49, 90),
    "pipe": (60, 96), "synth_lead": (48, 96), "synth_pad": (36, 96), "synth_effects": (36, 96),
    "ethnic": (48, 84), "percussive": (48, 84), "sound_effects": (36, 84),
}  # fmt: skip
_PROGRAM_RANGE = {
    6: (29, 89), 8: (60, 108), 9: (79, 108), 11: (53, 89),  # harpsichord, celesta, glockenspiel, vibraphone
    12: (36, 96), 13: (65, 108), 14: (60, 77), 21: (53, 93),  # marimba, xylophone, tubular bells, accordion
    40: (55, 103), 41: (48, 91), 42: (36, 76), 43: (28, 60),  # violin, viola, cello, contrabass
    46: (24, 103), 47: (38, 57),  # harp, timpani (a set of four drums, D2-A3)
    56: (54, 84), 57: (40, 72), 58: (28, 58), 60: (34, 77),  # trumpet, trombone, tuba, horn
    64: (56, 87), 65: (49, 81), 66: (44, 76), 67: (36, 69),  # soprano/alto/tenor/baritone sax
    68: (58, 93), 69: (52, 84), 70: (34, 75), 71: (50, 91),  # oboe, english horn, bassoon, clarinet
    72: (74, 108), 73: (60, 96), 74: (65, 98), 75: (55, 86),  # piccolo, flute, recorder (alto + soprano), pan flute
    79: (69, 89), 109: (67, 81), 110: (55, 100),  # ocarina (alto in C), bagpipe chanter (G4-A5), fiddle
    32: (28, 60), 33: (28, 60), 34: (28, 60), 35: (28, 60),  # basses
    52: (40, 84), 53: (48, 81), 54: (48, 84),  # choir (SATB together), voice oohs, synth voice
}  # fmt: skip

# Programs that carry no pitched line in a song (percussive and sound-effect patches) are played by the
# nearest instrument that does; what was asked and what was played are both recorded.
SUBSTITUTES = {
    112: 9,
    113: 13,
    114: 12,
    115: 13,
    116: 47,
    117: 47,
    118: 47,
    119: 50,  # bells, agogo, steel drum, woodblock,
    # taiko, melodic tom, synth drum, reverse cymbal -> glockenspiel, xylophone, marimba, xylophone, timpani, ...
    120: 24,
    121: 73,
    122: 88,
    123: 72,
    124: 80,
    125: 89,
    126: 48,
    127: 47,  # fret noise -> nylon guitar,
    # breath -> flute, seashore -> new age pad, bird -> piccolo, telephone -> square lead, helicopter -> warm
    # pad, applause -> string ensemble, gunshot -> timpani
}


def playable_program(program: Program) -> Program:
    """``program`` itself, or the melodic instrument that plays its part (see ``SUBSTITUTES``).

    >>> playable_program(116), playable_program(40), playable_program("drums")
    (47, 40, 'drums')
    """
    if program == DRUMS:
        return DRUMS
    return SUBSTITUTES.get(int(program), int(program))


def program_range(program: Program) -> tuple[int, int]:
    """Inclusive MIDI pitch range an instrument plays comfortably (drums: the GM percussion map 27-87)."""
    if program == DRUMS:
        return 27, 87
    p = int(program)
    return _PROGRAM_RANGE.get(p, _FAMILY_RANGE[family_of(p)])

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


# Comfortable written range (MIDI note numbers, inclusive) per program. Families share ranges;
# a few instruments get their own where the family range would mislead (flute vs tuba, violin vs cello).
_FAMILY_RANGE = {
    "piano": (21, 108), "chromatic_percussion": (53, 96), "organ": (36, 96), "guitar": (40, 84),
    "bass": (28, 60), "strings": (55, 100), "ensemble": (36, 96), "brass": (52, 84), "reed": (49, 90),
    "pipe": (60, 96), "synth_lead": (48, 96), "synth_pad": (36, 96), "synth_effects": (36, 96),
    "ethnic": (48, 84), "percussive": (48, 84), "sound_effects": (36, 84),
}  # fmt: skip
_PROGRAM_RANGE = {
    40: (55, 103), 41: (48, 91), 42: (36, 76), 43: (28, 60),  # violin, viola, cello, contrabass
    56: (54, 84), 57: (40, 72), 58: (28, 58), 60: (34, 77),  # trumpet, trombone, tuba, horn
    64: (56, 87), 65: (49, 81), 66: (44, 76), 67: (36, 69),  # soprano/alto/tenor/baritone sax
    68: (58, 93), 69: (52, 84), 70: (34, 75), 71: (50, 91),  # oboe, english horn, bassoon, clarinet
    72: (74, 108), 73: (60, 96), 74: (60, 91), 75: (55, 86),  # piccolo, flute, recorder, pan flute
    32: (28, 60), 33: (28, 60), 34: (28, 60), 35: (28, 60),  # basses
    52: (48, 84), 53: (48, 81), 54: (48, 84),  # choir, voice oohs, synth voice
}  # fmt: skip


def program_range(program: Program) -> tuple[int, int]:
    """Inclusive MIDI pitch range an instrument plays comfortably (drums: the GM percussion map 27-87)."""
    if program == DRUMS:
        return 27, 87
    p = int(program)
    return _PROGRAM_RANGE.get(p, _FAMILY_RANGE[family_of(p)])

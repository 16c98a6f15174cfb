"""Key names, pitch classes and circle-of-fifths geometry."""

from __future__ import annotations

import math
import re

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(r"^\s*([A-Ga-g])\s*(#|b|♯|♭|sharp|flat)?\s*[-_ ]?\s*(major|minor|maj|min|m)?\s*$", re.I)
MODES = ("major", "minor")


def parse_key(text: str) -> tuple[int, str]:
    """Parse ``"D minor"``, ``"F# major"``, ``"Bb"``, ``"c#m"`` into ``(tonic pitch class, mode)``.

    Raises ``ValueError`` with the offending text when it is not a key.
    """
    m = _KEY_RE.match(str(text))
    if not m:
        raise ValueError(f"not a key: {text!r} (expected e.g. 'D minor' or 'F# major')")
    letter, accidental, mode = m.groups()
    pc = _LETTER_PC[letter.upper()]
    if accidental:
        pc += 1 if accidental.lower() in ("#", "♯", "sharp") else -1
    mode_l = (mode or "major").lower()
    if mode_l in ("minor", "min") or (mode == "m"):
        return pc % 12, "minor"
    return pc % 12, "major"


def key_name(key_pc: int, mode: str) -> str:
    """``(2, "minor") -> "D minor"``."""
    return f"{PITCH_NAMES[int(key_pc) % 12]} {mode}"


def fifths_position(key_pc: int, mode: str) -> int:
    """Position 0..11 on the circle of fifths; a minor key sits with its relative major (A minor = C major)."""
    major_pc = (key_pc + 3) % 12 if mode == "minor" else key_pc % 12
    return (major_pc * 7) % 12


def fifths_angle(key_pc: int, mode: str) -> tuple[float, float]:
    """``(cos, sin)`` of the key's angle on the circle of fifths, so neighbouring keys lie close together."""
    theta = 2 * math.pi * fifths_position(key_pc, mode) / 12
    return math.cos(theta), math.sin(theta)


def parse_meter(text: str) -> tuple[int, int]:
    """``"3/4" -> (3, 4)``; raises ``ValueError`` naming the text otherwise."""
    m = re.match(r"^\s*(\d{1,2})\s*/\s*(\d{1,2})\s*$", str(text))
    if not m:
        raise ValueError(f"not a meter: {text!r} (expected e.g. '3/4' or '6/8')")
    num, den = int(m.group(1)), int(m.group(2))
    if num < 1 or den not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"not a meter: {text!r} (numerator >= 1, denominator a power of two up to 32)")
    return num, den

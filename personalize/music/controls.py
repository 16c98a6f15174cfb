"""What a listener cluster asks the generator for: key, mode, tempo, meter, note density and instruments.

Density is rhythmic activity independent of tempo and of the number of parts: **notes per quarter note per
pitched part** (a chorale line in quarter notes is 1.0, a reel in running eighths is 2.0). It is controlled
by a bin:

===  ===========================  ===========================================
bin  notes per quarter per part   sounds like
===  ===========================  ===========================================
0    below 0.9                    long notes, hymn-like with held chords
1    0.9 to 1.35                  mostly quarter notes (chorale, ballad)
2    1.35 to 1.8                  quarters and eighths mixed (song, march)
3    1.8 and above                running eighths and sixteenths (reel, jig)
===  ===========================  ===========================================

Taste profiles measure density in notes per second over all parts; ``density_bin_for`` converts.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field

from personalize.music.gm import DRUMS, Program, program_range
from personalize.music.keys import key_name, parse_meter

DENSITY_EDGES = (0.9, 1.35, 1.8)  # notes per quarter note per pitched part; bin i is [edge i-1, edge i)
N_DENSITY_BINS = len(DENSITY_EDGES) + 1
TEMPO_EDGES_BPM = (60.0, 72.0, 84.0, 96.0, 108.0, 120.0, 140.0)
N_TEMPO_BINS = len(TEMPO_EDGES_BPM) + 1
METERS = ("2/4", "3/4", "4/4", "2/2", "3/2", "6/4", "3/8", "6/8", "9/8", "12/8")
MAX_PITCHED_PARTS = 4


def density_bin(notes_per_quarter_per_part: float) -> int:
    """Bin (0..3) of a density in notes per quarter note per pitched part."""
    return bisect.bisect_right(DENSITY_EDGES, float(notes_per_quarter_per_part))


def density_bin_for(notes_per_s: float, tempo_bpm: float, n_pitched_parts: int) -> int:
    """Bin for a density measured in notes per second over all pitched parts (as taste profiles store it)."""
    quarters_per_s = float(tempo_bpm) / 60.0
    return density_bin(notes_per_s / quarters_per_s / max(1, n_pitched_parts))


def tempo_bin(tempo_bpm: float) -> int:
    return bisect.bisect_right(TEMPO_EDGES_BPM, float(tempo_bpm))


def bar_quarters(meter: str) -> float:
    num, den = parse_meter(meter)
    return num * 4 / den


@dataclass
class Controls:
    """One piece to write.

    ``programs`` lists one General MIDI program (0-127) per part, or ``"drums"`` for a drum part; the
    generated MIDI has exactly these parts in this order. Up to four pitched parts and one drum part.
    ``density_bin`` follows the table in this module's docstring; ``bars`` counts bars of ``meter``.
    """

    key_pc: int
    mode: str
    tempo_bpm: float
    meter: str = "4/4"
    density_bin: int = 1
    programs: list[Program] = field(default_factory=lambda: [0])
    bars: int = 16

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= int(self.key_pc) <= 11:
            problems.append(f"key_pc {self.key_pc} is outside 0..11")
        if self.mode not in ("major", "minor"):
            problems.append(f"mode {self.mode!r} is not 'major' or 'minor'")
        if not 20 <= float(self.tempo_bpm) <= 300:
            problems.append(f"tempo_bpm {self.tempo_bpm} is outside 20..300")
        if self.meter not in METERS:
            problems.append(f"meter {self.meter!r} is not one of {', '.join(METERS)}")
        if not 0 <= int(self.density_bin) < N_DENSITY_BINS:
            problems.append(f"density_bin {self.density_bin} is outside 0..{N_DENSITY_BINS - 1}")
        pitched = [p for p in self.programs if p != DRUMS]
        if not pitched:
            problems.append("programs has no pitched part (a piece needs at least one melodic instrument)")
        if len(pitched) > MAX_PITCHED_PARTS:
            problems.append(f"{len(pitched)} pitched parts; at most {MAX_PITCHED_PARTS} are supported")
        if sum(p == DRUMS for p in self.programs) > 1:
            problems.append("more than one drum part")
        for p in pitched:
            try:
                program_range(p)
            except (ValueError, TypeError):
                problems.append(f"program {p!r} is not a GM number 0-127 or 'drums'")
        if int(self.bars) < 1:
            problems.append(f"bars {self.bars} must be at least 1")
        if problems:
            raise ValueError(f"invalid controls {self.describe()}: " + "; ".join(problems))
        self.key_pc = int(self.key_pc)
        self.tempo_bpm = float(self.tempo_bpm)
        self.density_bin = int(self.density_bin)
        self.bars = int(self.bars)

    @property
    def pitched_programs(self) -> list[int]:
        return [int(p) for p in self.programs if p != DRUMS]

    @property
    def has_drums(self) -> bool:
        return DRUMS in self.programs

    def describe(self) -> str:
        try:
            key = key_name(int(self.key_pc), str(self.mode))
        except (ValueError, TypeError):
            key = f"{self.key_pc} {self.mode}"
        progs = ",".join(str(p) for p in self.programs)
        return (
            f"[{key}, {self.tempo_bpm} bpm, {self.meter}, density bin {self.density_bin}, "
            f"programs {progs}, {self.bars} bars]"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

"""The demo world's latent taste segments: who likes what, before any listener is drawn.

Each segment has a tempo centre, a few keys, three instrument families with weights and a source collection.
By default they are well separated (distinct tempo bands, disjoint keys and families); ``overlap=True``
pulls tempi together, shares keys and mixes families between neighbouring segments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from personalize.music.keys import parse_key


@dataclass
class Segment:
    segment_id: int
    name: str
    tempo_bpm: float  # centre of the segment's preferred tempo
    keys: list[str]  # e.g. ["D minor", "G minor"]; each listener prefers one of them
    family_weights: dict[str, float]  # GM families (and "drums") the segment enjoys, weights sum to 1
    collection: str  # source pieces: "chorale" (four voices) or "tune" (fiddle melody + bass line)
    sparse_share: float = 0.0  # share of its tracks that drop inner voices (fewer notes per second)
    tempo_spread: float = 0.05  # individual variation, std of log(tempo)
    density: float = field(default=0.0)  # notes/s, set from the segment's measured catalog tracks

    @property
    def key_tuples(self) -> list[tuple[int, str]]:
        return [parse_key(k) for k in self.keys]

    @property
    def has_drums(self) -> bool:
        return "drums" in self.family_weights

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _base_segments() -> list[Segment]:
    return [
        Segment(0, "nocturne strings", 62.0, ["D minor", "G minor", "C minor"],
                {"strings": 0.5, "piano": 0.3, "pipe": 0.2}, "chorale", sparse_share=0.5),
        Segment(1, "organ and choir hymns", 80.0, ["F major", "C major", "Bb major"],
                {"organ": 0.45, "ensemble": 0.35, "brass": 0.2}, "chorale"),
        Segment(2, "folk fiddle", 98.0, ["G major", "D major", "A major"],
                {"strings": 0.4, "guitar": 0.35, "pipe": 0.25}, "tune"),
        Segment(3, "reeds and groove", 116.0, ["A minor", "E minor", "B minor"],
                {"reed": 0.45, "bass": 0.3, "drums": 0.25}, "chorale"),
        Segment(4, "brass band", 136.0, ["Eb major", "Ab major", "E major"],
                {"brass": 0.5, "chromatic_percussion": 0.25, "drums": 0.25}, "tune"),
        Segment(5, "synth drive", 158.0, ["F# minor", "C# minor", "F minor"],
                {"synth_lead": 0.45, "synth_pad": 0.3, "drums": 0.25}, "chorale"),
    ]  # fmt: skip


def make_segments(overlap: bool = False) -> list[Segment]:
    """The segments of a world. ``overlap`` makes neighbours share tempo range, keys and instruments."""
    segments = _base_segments()
    if not overlap:
        return segments
    n = len(segments)
    for i, seg in enumerate(segments):
        nxt = _base_segments()[(i + 1) % n]
        # Tempo centres pulled to within ~10 BPM of each other, and wider individual spread.
        seg.tempo_bpm = round(100.0 + (seg.tempo_bpm - 100.0) * 0.3, 1)
        seg.tempo_spread = 0.10
        seg.keys = [*seg.keys[:2], nxt.keys[0]]
        mixed = {f: 0.6 * w for f, w in seg.family_weights.items()}
        for f, w in nxt.family_weights.items():
            mixed[f] = mixed.get(f, 0.0) + 0.4 * w
        seg.family_weights = mixed
    return segments

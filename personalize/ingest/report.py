"""What an ingest run did (counts per outcome and per quarantine reason), and the reason codes it can give."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rich.table import Table

# Short codes stored in quarantined_rows.reason, with what each means (the README and --help quote these).
REASONS: dict[str, str] = {
    "bad_encoding": "the row holds bytes that are not UTF-8",
    "truncated_row": "the file ends in the middle of this row (the last line was cut off)",
    "malformed_row": "the row has a different number of fields than the header",
    "missing_field": "a required field is empty, null or NaN",
    "unparseable_field": "a field has the wrong type or cannot be parsed (timestamp, number, id, key, meter, programs)",
    "unknown_kind": "kind is not one of play, skip, like, dislike, complete, save",
    "negative_ms_played": "ms_played is below zero",
    "ts_before_2000": "the timestamp is before 2000-01-01 UTC",
    "ts_future": "the timestamp lies in the future",
    "duplicate_event_id": "the event_id appeared earlier in the same file",
    "unknown_track": "track_id is not in the catalog",
    "absurd_ms_played": "ms_played is longer than the track plus the allowed slack",
    "out_of_range": "a catalog number is outside its sensible range (duration, tempo, density)",
    "duplicate_track_id": "the track_id appeared earlier in the same file",
    "midi_too_large": "the MIDI file is bigger than the size cap",
    "midi_unreadable": "the MIDI file is corrupt, truncated or not MIDI at all",
    "midi_timeout": "parsing the MIDI file took longer than the time limit",
    "midi_no_notes": "the MIDI file holds no notes (zero length)",
    "midi_no_pitched_notes": "the MIDI file holds only drums, so it has no key",
    "unmatched_track": "an exported play names a track the catalog has no match for (see the unmatched CSV)",
    "not_a_track": "an exported play is a podcast episode, audiobook or video, not a music track",
}


DETAIL_MAX_CHARS = 400  # a quarantine detail quotes values, never a whole row or file
MESSAGE_MAX_CHARS = 600  # an error message: what is wrong with the file, a summary and the fix


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, the cut marked (messages quote values, never whole files)."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


class IngestFileError(Exception):
    """The file itself cannot be read (missing, empty, not CSV/Parquet, lacking required columns), or most of
    its first rows are bad. The message names the file and is at most :data:`MESSAGE_MAX_CHARS` long."""

    def __init__(self, message: str) -> None:
        super().__init__(clip(message, MESSAGE_MAX_CHARS))


class MostlyBadError(IngestFileError):
    """Most of a file's first chunk would be quarantined: stopped before anything was stored."""


@dataclass
class IngestReport:
    """Counts of one ingest. ``rows_read == ingested + already_present + sum(quarantined.values())``."""

    source: str
    rows_read: int = 0
    ingested: int = 0
    already_present: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    # A few quarantined rows (row_number, reason, detail) so a person sees what to fix without SQL.
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    # How the file was read when that was not plain UTF-8 CSV ("unpacked from gzip", "read as cp1252").
    notes: list[str] = field(default_factory=list)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add_quarantined(self, reason: str, n: int = 1) -> None:
        self.quarantined[reason] = self.quarantined.get(reason, 0) + n

    def merge(self, other: IngestReport) -> None:
        """Add another report's counts to this one (chunks of the same source)."""
        self.rows_read += other.rows_read
        self.ingested += other.ingested
        self.already_present += other.already_present
        for reason, n in other.quarantined.items():
            self.add_quarantined(reason, n)
        room = 5 - len(self.examples)
        if room > 0:
            self.examples.extend(other.examples[:room])

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["quarantined"] = dict(sorted(self.quarantined.items()))
        out["examples"] = [list(e) for e in self.examples]
        out["quarantined_total"] = self.quarantined_total
        out["rows_per_s"] = round(self.rows_per_s, 1)
        return out

    def to_table(self, title: str | None = None) -> Table:
        table = Table(title=title or f"ingest {self.source}", show_header=True, header_style="bold")
        table.add_column("outcome")
        table.add_column("rows", justify="right")
        table.add_row("read", f"{self.rows_read:,}")
        table.add_row("[green]ingested[/]", f"{self.ingested:,}")
        table.add_row("already present", f"{self.already_present:,}")
        if not self.quarantined:
            table.add_row("quarantined", "0")
        for reason, n in sorted(self.quarantined.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"[yellow]quarantined: {reason}[/]", f"{n:,}")
        table.caption = f"{self.elapsed_s:.2f} s, {self.rows_per_s:,.0f} rows/s"
        return table

    def __rich__(self) -> Table:
        return self.to_table()

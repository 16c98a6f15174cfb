"""Listening history in: catalog and listening events from CSV/Parquet files, DataFrames (API, simulator)
or MIDI folders, validated in bulk, with every refused row kept in quarantined_rows with its reason."""

from personalize.ingest.catalog import ingest_catalog, ingest_catalog_frame, ingest_catalog_midi
from personalize.ingest.events import ingest_events, ingest_events_frame
from personalize.ingest.report import REASONS, IngestFileError, IngestReport

__all__ = [
    "REASONS",
    "IngestFileError",
    "IngestReport",
    "ingest_catalog",
    "ingest_catalog_frame",
    "ingest_catalog_midi",
    "ingest_events",
    "ingest_events_frame",
]

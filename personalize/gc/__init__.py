"""Retention: the ``gc`` stage removes stored MIDI and audio that no playlist inside the window references."""

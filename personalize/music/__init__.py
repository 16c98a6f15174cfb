"""Symbolic-music helpers shared by every stage: keys, General MIDI families and measurements of MIDI."""

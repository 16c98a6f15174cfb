"""Conditional music generation: controls in, verified multi-part MIDI out.

Public API (stable; other stages build on it):

- :class:`Controls` – key_pc, mode, tempo_bpm, meter, density_bin, programs (GM numbers or ``"drums"``),
  bars. Density bins are documented in :mod:`personalize.music.controls` (``density_bin_for`` converts
  a notes-per-second figure).
- :class:`Generator` – the protocol every model implements:
  ``generate(controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]``, one MIDI per request,
  its parts in the order of ``controls.programs``, deterministic for a seed.
- :func:`load_generator` – a trained generator from ``models/<name>/``.
- :func:`generate_verified` / :class:`GeneratedPiece` – generate, measure (:mod:`personalize.generate.verify`)
  and resample misses.

A model other than the Transformer plugs in as a module ``personalize.generate.baselines.<name>`` exposing
``load(model_dir: Path) -> Generator``; ``load_generator(name=<name>)`` finds it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import pretty_midi

from personalize.generate.verify import (
    GeneratedPiece,
    GenerationError,
    generate_verified,
    measure_piece,
    passes,
)
from personalize.music.controls import (
    DENSITY_EDGES,
    METERS,
    N_DENSITY_BINS,
    Controls,
    density_bin,
    density_bin_for,
)


@runtime_checkable
class Generator(Protocol):
    """Anything that writes one MIDI per request; see the module docstring for the contract."""

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]: ...


def load_generator(model_dir: Path | None = None, name: str = "transformer", **kwargs: object) -> Generator:
    """Load the trained generator ``name`` from ``model_dir`` (default ``<settings.model_dir>/<name>``)."""
    if model_dir is None:
        from personalize.config import get_settings

        model_dir = get_settings().model_dir / name
    model_dir = Path(model_dir)
    if name in ("transformer", "song"):
        # One folder name for the shipped Transformer; its config says which representation it speaks.
        config = model_dir / "config.json"
        meta = json.loads(config.read_text()) if config.is_file() else {}
        if name == "song" or meta.get("representation") == "song":
            from personalize.generate.song.writer import SongGenerator

            return SongGenerator.load(model_dir, **kwargs)
        from personalize.generate.sample import TransformerGenerator

        return TransformerGenerator.load(model_dir, **kwargs)
    # Other generators (the VAE baseline) are modules of personalize.generate.baselines with a load().
    try:
        module = importlib.import_module(f"personalize.generate.baselines.{name}")
    except ModuleNotFoundError:
        raise ValueError(
            f"unknown generator {name!r}: no module personalize.generate.baselines.{name}"
        ) from None
    if not hasattr(module, "load"):
        raise ValueError(f"personalize.generate.{name} has no load(model_dir) function")
    return module.load(model_dir, **kwargs)


__all__ = [
    "DENSITY_EDGES",
    "METERS",
    "N_DENSITY_BINS",
    "Controls",
    "GeneratedPiece",
    "GenerationError",
    "Generator",
    "density_bin",
    "density_bin_for",
    "generate_verified",
    "load_generator",
    "measure_piece",
    "passes",
]

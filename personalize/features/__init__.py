"""Taste profiles: listening history in, one taste vector per listener and run date out.

``run(ctx, run_date)`` is the profile stage (:mod:`personalize.features.profiles`);
:mod:`personalize.features.vector` defines the taste space shared with generated tracks. Imports stay
light here so the CLI and the DAG file can import this package cheaply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from personalize.context import Context


def run(ctx: Context, run_date: dt.date, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The profile stage: see :func:`personalize.features.profiles.run`."""
    from personalize.features.profiles import run as run_profiles

    return run_profiles(ctx, run_date, progress=progress)


__all__ = ["run"]

"""Taste profiles: listening history in, one taste vector per listener and run date out.

``run(ctx, run_date)`` is the profile stage; :mod:`personalize.features.vector` defines the taste space
shared with generated tracks.
"""

from personalize.features.profiles import run

__all__ = ["run"]

"""Publishing: per-listener playlists from the night's fresh tracks, built then flipped to published at once.

``run(ctx, run_date)`` is the publish stage (:mod:`personalize.publish.playlists`); ranking and reasons
live in :mod:`personalize.publish.rank`.
"""

from personalize.publish.playlists import build_playlists, run

__all__ = ["build_playlists", "run"]

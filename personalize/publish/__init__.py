"""The publish stage: per-listener playlists from the night's fresh tracks, built then flipped to published
at once.

:func:`personalize.publish.stage.run` is the stage; ranking and reasons live in :mod:`personalize.publish.rank`.
"""

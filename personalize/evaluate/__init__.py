"""Outcome evaluations of the nightly run on the demo world (``personalize eval playlists``)."""

"""The app backend's HTTP API: per-listener playlists, track details, signed audio streaming, event intake
and a small web player. ``create_app(ctx)`` builds the FastAPI application; ``personalize serve`` runs it."""

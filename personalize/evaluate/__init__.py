"""Every evaluation in one place, each reading what the stages wrote: taste clusters against the demo
world's truth (:mod:`~personalize.evaluate.taste`), the generator's control fidelity and quality against the
corpus and baselines (:mod:`~personalize.evaluate.generator`), the music itself against the corpus and
noise (:mod:`~personalize.evaluate.music`) and published playlists' outcome with simulated listeners
(:mod:`~personalize.evaluate.playlists`)."""

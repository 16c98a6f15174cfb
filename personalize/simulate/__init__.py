"""The demo world: a catalog made from real public-domain music, listeners with latent taste segments and
drift, a listening history from a fit-driven engagement model, and the ground truth evaluations score against.

Entry points: :func:`personalize.simulate.world.build_world` (files), :func:`~personalize.simulate.world.load_world`
(into the database through ingest), :mod:`personalize.simulate.engagement` (``fit``, ``listen``,
``plays_to_events``) and :func:`personalize.simulate.truth.load_truth`.
"""

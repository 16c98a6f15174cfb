"""The cluster stage: listeners grouped by taste, with ids stable from night to night.

:func:`personalize.cluster.stage.run` is the stage; :mod:`personalize.cluster.distribution` says what a
cluster likes (what planned tracks' controls are drawn from) and gives each listener's vector for ranking.
"""

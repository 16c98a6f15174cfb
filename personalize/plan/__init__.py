"""The plan stage: how many fresh tracks each taste cluster gets tonight and the controls of each one.

:func:`personalize.plan.stage.run` is the stage; :mod:`personalize.plan.draw` draws controls from a
cluster's taste distribution.
"""

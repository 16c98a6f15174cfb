"""The profile stage: listening history in, one taste vector per listener and run date out.

:func:`personalize.profile.stage.run` is the stage; :mod:`personalize.profile.vector` defines the taste
space that listeners and generated tracks share.
"""

"""The report stage: the night's HTML page and its figures (:func:`personalize.report.stage.run`), the
summary a person reads after a night (:mod:`personalize.report.summary`) and the taste plots
(:mod:`personalize.report.taste`)."""

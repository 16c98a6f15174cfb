"""Reports: the nightly run's HTML page (:mod:`personalize.report.nightly`) and its figures; taste plots
live in :mod:`personalize.report.taste`."""

from personalize.report.nightly import run

__all__ = ["run"]

"""User mistakes on the command line: what was wrong and what to do, in one line on stderr, exit status 2.

A mistake is either a :class:`UserError` a command raises itself (a bad ``--date``) or an error from the
library that :func:`explain` recognises: settings out of range, a database that does not answer or has no
schema, something an earlier stage should have made, a missing or unreadable model file. Anything else is a
fault of the program and keeps its traceback. ``personalize --debug ...`` shows the traceback of every
error, mistakes included.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import typer

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix; its message says what was wrong and what to do."""


def parse_date(value: str, option: str = "--date") -> dt.date:
    """A ``YYYY-MM-DD`` option value, else a UserError that says how to write one."""
    from personalize.runs import parse_run_date

    try:
        return parse_run_date(value)
    except ValueError:
        raise UserError(
            f"{option} {value!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-11-24"
        ) from None


def explain(exc: BaseException) -> str | None:
    """One line for a user mistake, or None for a fault of the program (which keeps its traceback)."""
    from personalize.config import InvalidSettings
    from personalize.db.session import database_problem

    if isinstance(exc, UserError | InvalidSettings):
        return str(exc)
    model_file = _model_being_loaded(exc)
    if model_file is not None:
        if isinstance(exc, FileNotFoundError) or model_file in str(exc):
            return _first_line(exc)  # the loader's own words name the file and what to do
        inner = _chain(exc)[-1]  # torch's own error, not the wrappers around it
        reason = _first_line(inner).split(". ")[0][:160]
        return (
            f"the model file {model_file} cannot be read ({type(inner).__name__}: {reason}): it is "
            "corrupt or incomplete; copy it again or retrain it (`personalize train transformer`), or point "
            "PERSONALIZE_MODEL_DIR at a folder holding a good one"
        )
    problem = database_problem(exc)
    if problem == "no_schema":
        return (
            f"the database {_database()} has no schema or an old one ({_first_line(getattr(exc, 'orig', exc))}): "
            "create or update it with `personalize db upgrade`"
        )
    if problem == "unreachable":
        return (
            f"the database {_database()} does not answer ({_first_line(getattr(exc, 'orig', exc))}): start it, "
            "or set PERSONALIZE_DATABASE_URL to one that runs"
        )
    if isinstance(exc, LookupError) and not isinstance(exc, KeyError | IndexError):
        # The stages raise LookupError for what an earlier stage should have made ("run ... first").
        return _first_line(exc)
    return None


def fail(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise typer.Exit(USER_ERROR_EXIT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _database() -> str:
    """The configured database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    from personalize.config import get_settings

    try:
        return make_url(get_settings().resolved_database_url).render_as_string(hide_password=True)
    except Exception:
        return "(PERSONALIZE_DATABASE_URL)"


# Functions that load a trained generator: an error raised below one of them is about the model files.
_MODEL_LOADERS = ("generator_for", "load_generator")


def _model_being_loaded(exc: BaseException) -> str | None:
    """The model file (or folder) being read when ``exc`` was raised under a model loader, else None."""
    frames = [frame for error in _chain(exc) for frame in _frames(error.__traceback__)]
    if not any(f.f_code.co_name in _MODEL_LOADERS for f in frames):
        return None
    found: str | None = None
    for frame in frames:
        if frame.f_code.co_name in _MODEL_LOADERS:
            folder = frame.f_locals.get("model_dir")
            found = str(folder) if folder is not None else found
        # torch.load(f, ...) and Path.read_text/open(self) name the file itself.
        if frame.f_code.co_name == "load" and "torch" in frame.f_code.co_filename:
            name = frame.f_locals.get("f")
            found = str(name) if isinstance(name, str | Path) else found
        elif frame.f_code.co_name in ("read_text", "read_bytes", "open") and isinstance(
            frame.f_locals.get("self"), Path
        ):
            found = str(frame.f_locals["self"])
    return found or "(the model folder)"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from or while handling, innermost last."""
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _frames(tb: TracebackType | None):  # type: ignore[no-untyped-def]
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next

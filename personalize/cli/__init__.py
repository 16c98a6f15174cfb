"""The ``personalize`` command line: one module per command group, each command a thin call into the
library (heavy imports stay inside the commands, so ``personalize --help`` is quick).

| module      | commands                                                        |
|-------------|-----------------------------------------------------------------|
| db          | db upgrade                                                      |
| ingest      | ingest events, catalog, spotify, listenbrainz, lastfm, pull     |
| simulate    | simulate (the demo world)                                       |
| loop        | loop (the closed loop over nights on the demo world)            |
| taste       | profile, cluster, taste-plots, eval taste                       |
| generate    | corpus build, train, calibrate, generate                        |
| render      | render                                                          |
| run         | run, run-release, report, eval playlists                        |
| serve       | serve, apikey                                                   |
| eval        | eval generator, eval music                                      |

Every command works on one numerical thread (torch, OpenMP, BLAS) unless ``OMP_NUM_THREADS`` and the like
say otherwise (``personalize.workers.one_thread_per_process``).

A user mistake (a bad date, settings out of range, a database that does not answer or has no schema, a
missing or unreadable model file) is one line on stderr and exit status 2 (``errors.py``); ``personalize
--debug COMMAND`` shows the full traceback instead.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from personalize.cli import db, eval, generate, ingest, loop, render, run, serve, simulate, taste
from personalize.cli.errors import explain, fail
from personalize.workers import one_thread_per_process


class CliGroup(TyperGroup):
    """The root command: a user mistake in any command ends in one line and exit 2, unless ``--debug``
    asks for the traceback (handled here, inside Click, so every way of invoking the CLI behaves alike)."""

    debug = False

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = None if CliGroup.debug else explain(exc)
            if message is None:
                raise
            fail(message)


app = typer.Typer(
    cls=CliGroup,
    help="Nightly personalization: listening history in, new music per listener out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def options(
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show the full traceback of an error instead of one line (put it before the command).",
    ),
) -> None:
    """Nightly personalization: listening history in, new music per listener out."""
    CliGroup.debug = debug
    # Before any command imports torch or numpy: one numerical thread unless OMP_NUM_THREADS etc. say more.
    one_thread_per_process()


eval_app = typer.Typer(help="Measure the product against ground truth and baselines.", no_args_is_help=True)
app.add_typer(db.app, name="db")
app.add_typer(ingest.app, name="ingest")
app.add_typer(eval_app, name="eval")
app.command("simulate")(simulate.simulate)
taste.register(app, eval_app)
generate.register(app)
render.register(app)
run.register(app, eval_app)
loop.register(app)
serve.register(app)
eval.register(eval_app)

if __name__ == "__main__":
    app()

"""The ``personalize`` command line: one module per command group, each command a thin call into the
library (heavy imports stay inside the commands, so ``personalize --help`` is quick).

| module      | commands                                                        |
|-------------|-----------------------------------------------------------------|
| db          | db upgrade                                                      |
| ingest      | ingest events / catalog                                         |
| simulate    | simulate (the demo world)                                       |
| taste       | profile, cluster, taste-plots, eval taste                       |
| generate    | corpus build, train, generate                                   |
| render      | render                                                          |
| run         | run, run-release, report, eval playlists                        |
| serve       | serve, apikey                                                   |
| eval        | eval generator, eval music                                      |
"""

from __future__ import annotations

import typer

from personalize.cli import db, eval, generate, ingest, render, run, serve, simulate, taste

app = typer.Typer(
    help="Nightly personalization: listening history in, new music per listener out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
eval_app = typer.Typer(help="Measure the product against ground truth and baselines.", no_args_is_help=True)
app.add_typer(db.app, name="db")
app.add_typer(ingest.app, name="ingest")
app.add_typer(eval_app, name="eval")
app.command("simulate")(simulate.simulate)
taste.register(app, eval_app)
generate.register(app)
render.register(app)
run.register(app, eval_app)
serve.register(app)
eval.register(eval_app)

if __name__ == "__main__":
    app()

"""``personalize eval generator`` (:func:`personalize.evaluate.generator.evaluate_generator`) and
``personalize eval music`` (:mod:`personalize.evaluate.music`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console


def register(eval_app: typer.Typer) -> None:
    from personalize.evaluate.music.cli import register as register_music

    register_music(eval_app)

    @eval_app.command("generator")
    def eval_generator(
        model: str = typer.Option(
            "transformer", "--model", help="Shipped generator to evaluate: transformer or vae."
        ),
        n: int = typer.Option(240, "--n", min=1, help="Requests to generate (keys cycle through all 24)."),
        out: Path | None = typer.Option(None, "--out", help="Folder for eval.json and the PNG plots."),
        seed: int = typer.Option(0, "--seed"),
        bars: int = typer.Option(16, "--bars", min=1),
        max_attempts: int = typer.Option(4, "--max-attempts", min=1, help="Tries per piece when verifying."),
        model_dir: Path | None = typer.Option(
            None, "--model-dir", help="Folder holding transformer/, vae/, baselines/."
        ),
        no_nll: bool = typer.Option(False, "--no-nll", help="Skip the validation NLL of the four models."),
        guidance: bool = typer.Option(
            True,
            "--guidance/--no-guidance",
            help="Decoding rules toward the asked key and density (--no-guidance: the model alone).",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the report as JSON on stdout (table on stderr)."
        ),
    ) -> None:
        """Control fidelity, quality metrics vs the corpus and validation NLL per note against the baselines."""
        from personalize.evaluate.generator import _json_default, evaluate_generator, report_table

        if model not in ("transformer", "vae"):
            raise typer.BadParameter(
                f"unknown model {model!r}: choose transformer or vae", param_hint="--model"
            )
        try:
            report = evaluate_generator(
                model=model, n=n, out_dir=out, seed=seed, max_attempts=max_attempts, model_dir=model_dir,
                bars=bars, with_nll=not no_nll, guidance=guidance,
            )  # fmt: skip
        except FileNotFoundError as exc:
            Console(stderr=True).print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        Console(stderr=as_json).print(report_table(report))
        if as_json:
            print(json.dumps(report, indent=1, default=_json_default))
        else:
            Console().print(f"report and plots in {Path(report['plots'][0]).parent}")

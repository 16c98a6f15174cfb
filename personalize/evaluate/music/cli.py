"""``personalize eval music``: the command that runs :func:`personalize.evaluate.music.run.evaluate_music`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console


def register(eval_app: typer.Typer) -> None:
    """Add ``eval music`` to the ``eval`` command group."""
    eval_app.command("music")(music)


def music(
    json_out: bool = typer.Option(
        False, "--json", help="Print the report as JSON on stdout (table on stderr)."
    ),
    n_tracks: int = typer.Option(
        240, "--n-tracks", min=3, help="Requests per system, spread over 3 textures."
    ),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for eval_music.json, pieces.csv, metrics.png."
    ),
    corpus_dir: Path | None = typer.Option(
        None, "--corpus-dir", help="Built corpus (default <data_dir>/corpus)."
    ),
    model: str = typer.Option(
        "transformer", "--model", help="Generator to evaluate (a folder of --model-dir)."
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Folder holding the generators (models/)."
    ),
    max_attempts: int = typer.Option(4, "--max-attempts", min=1, help="Tries per track when verifying."),
    gate_path: Path | None = typer.Option(
        None, "--gate", help="Music gate file (default models/music_gate.json)."
    ),
    write_gate: bool = typer.Option(
        False, "--write-gate", help="Recalibrate the gate on the corpus train split and save it to --gate."
    ),
    no_generated: bool = typer.Option(
        False, "--no-generated", help="Measure the corpus and the baselines only (no model needed)."
    ),
) -> None:
    """Tell music from noise: corpus vs generated vs random-in-scale vs Markov, metric by metric, with
    overlap, a two-sample classifier's AUC and the music gate's pass rates."""
    from personalize.evaluate.music.run import _json_default, evaluate_music

    try:
        report = evaluate_music(
            n_tracks=n_tracks, seed=seed, corpus_dir=corpus_dir, model=model, model_dir=model_dir, out=out,
            max_attempts=max_attempts, gate_path=gate_path, write_gate=write_gate, generated=not no_generated,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        Console(stderr=True).print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    Console(stderr=json_out).print(report_table(report))
    if json_out:
        print(json.dumps(report, indent=1, default=_json_default))
    elif out is not None:
        Console().print(f"report, per-piece CSV and plot in {out}")


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        if v.get("median") is None:
            return "-"
        return f"{v['median']:.2f} ({v['p5']:.2f}-{v['p95']:.2f})"
    return f"{float(v):.2f}"


def report_table(report: dict[str, object]) -> object:
    """The headline figures, AUC and gate pass rates as a rich table."""
    from rich.table import Table

    systems = ["corpus", "generated", "random_in_scale", "markov", "corpus_train"]
    systems = [s for s in systems if s in report["n_tracks_per_system"]]
    table = Table(title=f"eval music: tracks per system {report['n_tracks_per_system']}")
    table.add_column("figure (median, 5-95 %; or share)")
    for s in systems:
        table.add_column(s, justify="right")
    for row, values in report["headline"].items():
        table.add_row(row, *(_fmt(values.get(s)) for s in systems))
    auc = report["auc"]["all"]
    table.add_row(
        "two-sample AUC vs corpus, textures pooled and balanced (0.5 = alike)",
        "",
        *(_fmt(auc[s]["auc"]) for s in systems[1:]),
    )
    rates = report["gate"]["pass_rate"]["all"]
    table.add_row("music gate pass rate", *(_fmt(rates.get(s)) for s in systems))
    return table

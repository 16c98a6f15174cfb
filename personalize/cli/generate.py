"""Command-line front door of the generator: ``corpus build``, ``train transformer|vae`` and ``generate``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
corpus_app = typer.Typer(help="The training corpus (music21's bundled scores).", no_args_is_help=True)


@corpus_app.command("build")
def corpus_build(
    out: Path = typer.Option(None, "--out", help="Corpus folder (default <data dir>/corpus)."),
    collections: str = typer.Option(
        None,
        help="Comma-separated collections (default: every one whose licence allows commercial use): "
        "bach_chorales, oneills1850, ryans_mammoth, monteverdi_madrigals, trecento, string_quartets; "
        "not for the shipped model: josquin (GPL), palestrina (licensing agreement), essen_folksong "
        "(non-commercial).",
    ),
    workers: int = typer.Option(2, help="Parser processes (music21 uses one core each)."),
    limit: int = typer.Option(None, help="At most this many source files per collection (quick builds)."),
    cached_only: bool = typer.Option(
        False, "--cached-only", help="Only rewrite the manifest from the cache."
    ),
) -> None:
    """Parse music21's corpus into a cached, annotated training set with a manifest and a train/val/test
    split. Incremental: files already cached are not parsed again, so an interrupted build resumes."""
    from personalize.corpus import USABLE_COLLECTIONS, build_corpus

    names = (
        [c.strip() for c in collections.split(",") if c.strip()] if collections else list(USABLE_COLLECTIONS)
    )
    try:
        summary = build_corpus(
            out, names, workers=workers, limit_per_collection=limit, parse_missing=not cached_only
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(summary))


def train(
    model: str = typer.Argument(..., help="transformer or vae"),
    config: Path = typer.Option(None, "--config", help="JSON config (default: the shipped model's config)."),
    export_tokens: Path = typer.Option(
        None,
        "--export-tokens",
        help="Song configs: write the training data as one tokens.npz (and the side files into out_dir) "
        "instead of training; `python personalize/generate/fit.py --tokens FILE --out DIR` trains on it "
        "anywhere torch runs (a GPU machine needs nothing else).",
    ),
) -> None:
    """Train a generator (progress, periodic checkpoints, resume on rerun, loss curve PNG)."""
    if model == "transformer":
        from personalize import generate as generate_pkg
        from personalize.generate.train import export_tokens as export
        from personalize.generate.train import train_transformer

        path = config or Path(generate_pkg.__file__).parent / "configs" / "song.json"
        if export_tokens is not None:
            meta = export(path, export_tokens)
            console.print(
                f"wrote {export_tokens}: {meta['train_buffer_tokens']:,} training and {meta['val_tokens']:,} "
                f"validation tokens ({meta['train_pieces']} and {meta['val_pieces']} pieces)"
            )
            return
        summary = train_transformer(path, log=console.print)
    elif model == "vae":
        from personalize.generate.baselines.vae import train_vae

        summary = train_vae(config)
    else:
        console.print(f"[red]unknown model {model!r}[/]: choose transformer or vae")
        raise typer.Exit(2)
    console.print_json(json.dumps(summary, default=str))


def generate(
    key: str = typer.Option(..., help="Tonic, e.g. D, F#, Bb (or 'D minor')."),
    mode: str = typer.Option(None, help="major or minor (default: from --key, else major)."),
    tempo: float = typer.Option(..., "--tempo", help="Tempo in BPM."),
    meter: str = typer.Option("4/4", help="Time signature."),
    programs: str = typer.Option(..., help="GM programs per part, comma-separated; 'drums' for a drum part."),
    seconds: float = typer.Option(150.0, help="Length asked for, in seconds of music (a song: 120-180)."),
    bars: int = typer.Option(None, help="Length in bars (instead of --seconds)."),
    density_bin: int = typer.Option(
        1, "--density-bin", help="0 sparse .. 3 busy (notes per quarter per part)."
    ),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same piece."),
    out: Path = typer.Option(..., "--out", help="MIDI file to write."),
    model_dir: Path = typer.Option(
        None, "--model-dir", help="Folder of the trained model (default models/<name>)."
    ),
    name: str = typer.Option("transformer", help="Generator: transformer (the shipped model) or vae."),
    max_attempts: int = typer.Option(4, help="Tries before giving up on a piece that misses its controls."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """Write one verified piece: generated, measured against the controls, resampled on a miss."""
    from personalize.generate import Controls, generate_verified, load_generator
    from personalize.music.controls import bar_quarters
    from personalize.music.gm import parse_programs
    from personalize.music.keys import parse_key

    try:
        key_pc, key_mode = parse_key(key)
        controls = Controls(
            key_pc=key_pc,
            mode=mode or key_mode,
            tempo_bpm=tempo,
            meter=meter,
            density_bin=density_bin,
            programs=parse_programs(programs, sep=","),
            bars=bars or max(4, round(seconds * tempo / 60.0 / bar_quarters(meter))),
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    generator = load_generator(model_dir, name=name)
    piece = generate_verified(generator, [controls], seed=seed, max_attempts=max_attempts)[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    piece.midi.write(str(out))
    m = piece.measurement
    if as_json:
        console.print_json(
            json.dumps(
                {"out": str(out), "ok": piece.ok, "attempts": piece.attempts, "error": piece.error, **m},
                default=str,
            )
        )
    else:
        table = Table(title=f"{out}  ({'verified' if piece.ok else 'NOT verified'}, {piece.attempts} tries)")
        table.add_column("control")
        table.add_column("asked")
        table.add_column("measured")
        table.add_column("ok")
        rows = [
            ("key", m["key_asked"], m["key"], m["key_ok"]),
            ("tempo (bpm)", controls.tempo_bpm, m["tempo_bpm"], m["tempo_ok"]),
            ("meter", controls.meter, m["meter"], m["meter_ok"]),
            ("programs", controls.programs, m["programs"], m["programs_ok"]),
            ("notes in range", ">= 99 %", f"{100 * float(m['in_range_share']):.1f} %", m["range_ok"]),
            (
                "density bin",
                controls.density_bin,
                f"{m['density_bin']} ({m['notes_per_quarter_per_part']})",
                m["density_ok"],
            ),
            (
                "length (s)",
                round(controls.bars * bar_quarters(controls.meter) * 60 / tempo),
                m["duration_s"],
                True,
            ),
        ]
        if "music_ok" in m:
            problems = "; ".join(m.get("music_problems") or []) or "inside the corpus's bands"
            rows.append(("music gate", "like the corpus", problems, m["music_ok"]))
        if "original_ok" in m:
            shared = f"{m['shared_bars']} bars" + (f" ({m['shared_with']})" if m.get("shared_with") else "")
            rows.append(("bars shared with training", "<= 2", shared, m["original_ok"]))
        for label, asked, got, ok in rows:
            table.add_row(label, str(asked), str(got), "[green]yes[/]" if ok else "[red]no[/]")
        console.print(table)
    if not piece.ok:
        console.print(f"[yellow]{piece.error}[/]; the closest try was written anyway")
        raise typer.Exit(1)


def calibrate(
    model_dir: Path = typer.Option(
        None, "--model-dir", help="Folder of the song model (default models/transformer)."
    ),
    corpus_dir: Path = typer.Option(None, "--corpus", help="Corpus folder (default <data dir>/corpus)."),
    requests: int = typer.Option(96, help="Songs written per style and round."),
    rounds: int = typer.Option(4, help="Rounds of fitting (each writes the songs again)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Fit the melody prior's calibration (personalize.generate.song.calibrate) on the training pieces the
    model was trained on, and save it into the model's melody_prior.json."""
    from personalize.config import get_settings
    from personalize.corpus import load_pieces
    from personalize.generate.song import calibrate as C
    from personalize.generate.song.writer import SongGenerator

    folder = Path(model_dir) if model_dir else get_settings().model_dir / "transformer"
    try:
        generator = SongGenerator.load(folder, threads=1)
        pieces = load_pieces(corpus_dir, "train")
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    listed = folder / "training_pieces.txt"
    if listed.is_file():  # exactly the pieces the model was trained on
        ids = set(listed.read_text().split())
        pieces = [p for p in pieces if p.piece_id in ids]
    if not pieces:
        console.print("[red]no training pieces found[/]: build the corpus with `personalize corpus build`")
        raise typer.Exit(2)
    try:
        report = C.calibrate(
            generator, pieces, n_requests=requests, rounds=rounds, seed=seed, progress=console.print
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    generator.melody.prior.save(folder / "melody_prior.json")
    (folder / "calibration.json").write_text(json.dumps(report, indent=1))
    console.print_json(json.dumps(report))


def register(app: typer.Typer) -> None:
    """Attach ``corpus``, ``train``, ``calibrate`` and ``generate`` to the main CLI."""
    app.add_typer(corpus_app, name="corpus")
    app.command("train")(train)
    app.command("calibrate")(calibrate)
    app.command("generate")(generate)

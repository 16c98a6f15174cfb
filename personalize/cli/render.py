"""``personalize render``: one MIDI file to a loudness-normalized Ogg Vorbis or Opus file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def render_command(
    midi_path: Path = typer.Argument(..., help="Standard MIDI File to render.", metavar="IN.mid"),
    out: Path = typer.Option(..., "--out", "-o", help="Audio file to write (.ogg or .opus)."),
    lufs: float | None = typer.Option(None, "--lufs", help="Target loudness, LUFS (default -14)."),
    codec: str | None = typer.Option(
        None, "--codec", help="ogg (Vorbis) or opus; default from --out's suffix."
    ),
    soundfont: Path | None = typer.Option(
        None, "--soundfont", help="General MIDI .sf2 (default FluidR3_GM)."
    ),
    title: str | None = typer.Option(None, "--title", help="Title tag (default: the file name)."),
) -> None:
    """Render IN.mid with FluidSynth, normalize loudness (BS.1770, true peak <= -1 dBTP) and encode it."""
    from personalize.config import get_settings
    from personalize.render.encode import CODECS, codec_rate_hz, encode
    from personalize.render.engine import render_midi
    from personalize.render.errors import RenderRejected

    chosen = (codec or ("opus" if out.suffix.lower() == ".opus" else "ogg")).lower()
    if chosen not in CODECS:
        console.print(f"[red]unknown codec {chosen!r}[/]: use --codec ogg or --codec opus")
        raise typer.Exit(2)
    if not midi_path.is_file():
        console.print(f"[red]{midi_path} does not exist[/]: pass a .mid file")
        raise typer.Exit(2)
    overrides: dict[str, object] = {}
    if soundfont is not None:
        overrides["soundfont"] = soundfont
    if lufs is not None:
        overrides["target_lufs"] = lufs
    settings = get_settings(**overrides)
    try:
        audio = render_midi(
            midi_path, settings, sample_rate_hz=codec_rate_hz(chosen, settings.sample_rate_hz)
        )
    except RenderRejected as exc:
        console.print(f"[red]{midi_path}: not rendered ({exc.reason})[/]: {exc.detail}")
        raise typer.Exit(1) from None
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    data = encode(
        audio,
        chosen,
        {
            "title": title or midi_path.stem,
            "artist": "personalize",
            "comment": f"rendered from {midi_path.name}",
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    console.print(
        f"[green]{out}[/]: {audio.duration_s:.1f} s, {audio.loudness_lufs:.1f} LUFS, "
        f"true peak {audio.true_peak_dbtp:.1f} dBTP, {len(data) / 1024:.0f} KiB {chosen}, "
        f"{audio.n_parts} part(s), {audio.n_notes} notes"
    )
    for fix in audio.fixes:
        console.print(f"  [yellow]fixed[/]: {fix}")


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)

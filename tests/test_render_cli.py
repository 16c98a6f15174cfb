"""``personalize render IN.mid --out OUT.ogg`` as a person runs it."""

from __future__ import annotations

from typer.testing import CliRunner

from personalize.cli import app
from personalize.render import decode
from personalize.render.pieces import demo_piece, midi_bytes

runner = CliRunner()


def test_render_command_writes_a_tagged_normalized_file(tmp_path):
    midi = tmp_path / "night.mid"
    midi.write_bytes(midi_bytes(demo_piece(8, seed=3)))
    out = tmp_path / "out" / "night.opus"
    result = runner.invoke(app, ["render", str(midi), "--out", str(out), "--lufs", "-16"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "-16.0 LUFS" in text and "dBTP" in text
    samples, rate, tags = decode(out.read_bytes())
    assert rate == 48_000 and samples.shape[1] == 2 and tags["title"] == "night"


def test_render_command_explains_a_bad_file(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"definitely not MIDI")
    result = runner.invoke(app, ["render", str(bad), "--out", str(tmp_path / "bad.ogg")])
    assert result.exit_code == 1
    assert "corrupt_midi" in result.output and "bad.mid" in " ".join(result.output.split())
    assert not (tmp_path / "bad.ogg").exists()
    missing = runner.invoke(app, ["render", str(tmp_path / "nope.mid"), "--out", str(tmp_path / "x.ogg")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    codec = runner.invoke(app, ["render", str(bad), "--out", str(tmp_path / "x.mp3"), "--codec", "mp3"])
    assert codec.exit_code == 2 and "unknown codec" in " ".join(codec.output.split())

"""``personalize eval generator`` end to end on tiny trained models: the report, the table and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personalize.corpus import build_corpus
from personalize.evaluate.generator import INSTRUMENT_SETS, evaluate_generator, evaluation_controls
from personalize.generate.baselines.lstm_markov import LSTMConfig, train_lstm
from personalize.generate.baselines.vae import VAEConfig, train_vae
from personalize.generate.train import train_transformer
from personalize.music.metrics import METRICS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data dir holding a tiny corpus, and a model dir with tiny Transformer, VAE and LSTM checkpoints."""
    root = tmp_path_factory.mktemp("eval")
    corpus = root / "data" / "corpus"
    build_corpus(corpus, ["bach_chorales", "oneills1850"], workers=1, limit_per_collection=2, progress=False)
    models = root / "models"
    cfg = json.loads((REPO / "personalize" / "generate" / "configs" / "tiny.json").read_text())
    cfg["train"].update(
        out_dir=str(models / "transformer"),
        checkpoint_dir=str(root / "ckpt"),
        corpus_dir=str(corpus),
        collections=["bach_chorales", "oneills1850"],
        corpus_limit_per_collection=2,
    )
    (root / "tiny.json").write_text(json.dumps(cfg))
    train_transformer(root / "tiny.json", progress=False, log=lambda *_: None)
    train_vae(out_dir=models / "vae", corpus_dir=corpus, config=VAEConfig.tiny(), progress=False)
    train_lstm(models / "baselines" / "lstm.pt", corpus, config=LSTMConfig.tiny(), progress=False)
    return root / "data", models


def test_evaluation_requests_cover_all_keys_tempi_meters_densities_and_instrument_sets():
    controls = evaluation_controls(240)
    assert len({(c.key_pc, c.mode) for c in controls}) == 24
    assert len({c.tempo_bpm for c in controls}) >= 5
    assert len({c.meter for c in controls}) >= 3
    assert {c.density_bin for c in controls} == {0, 1, 2, 3}
    assert {tuple(c.programs) for c in controls} == set(INSTRUMENT_SETS)
    # Every key meets several instrument sets rather than always the same one.
    by_key = {}
    for c in controls:
        by_key.setdefault((c.key_pc, c.mode), set()).add(tuple(c.programs))
    assert min(len(v) for v in by_key.values()) >= 4


def test_vae_report_measures_controls_quality_and_nll_of_all_four_models(world, tmp_path: Path):
    data_dir, models = world
    report = evaluate_generator(
        model="vae", n=24, bars=4, out_dir=tmp_path, model_dir=models, corpus_dir=data_dir / "corpus",
        progress=False,
    )  # fmt: skip
    before, after = report["before_resampling"], report["after_resampling"]
    assert before["pieces"] == 24
    assert 0.0 <= before["key_accuracy"] <= 1.0
    assert before["key_accuracy"] + before["key_relative_confusions"] + before[
        "key_other_errors"
    ] == pytest.approx(1)
    # Instruments and ranges hold by construction (parts as asked, onsets masked to each range).
    assert before["instrument_f1"] == 1.0
    assert before["in_range_share"] == 1.0
    assert before["tempo_error_max_pct"] < 0.5
    assert after["all_controls_met_share"] >= before["all_controls_met_share"]
    assert set(report["quality_vs_corpus_test"]) == {m.name for m in METRICS}
    compared = [q for q in report["quality_vs_corpus_test"].values() if "error" not in q]
    assert len(compared) >= 10  # the melodic, repetition and meter metrics at least
    for q in compared:
        assert q["overlap_yang_lerch"] is None or 0.0 <= q["overlap_yang_lerch"] <= 1.0
        assert q["corpus_p5"] <= q["corpus_p95"]
    nll = report["val_nll_per_note"]
    assert set(nll) == {"transformer", "vae", "lstm", "markov"}
    for name, r in nll.items():
        assert math.isfinite(r["nll_per_note_nats"]) and r["nll_per_note_nats"] > 0, name
        assert r["notes"] == nll["markov"]["notes"], "every model is divided by the same note count"
    assert nll["transformer"]["grammar_violations"] == 0
    for plot in report["plots"]:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "eval.json").read_text())["pieces"] == 24


def test_cli_prints_json_on_stdout(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from personalize.cli import app

    data_dir, models = world
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(data_dir))
    args = ["eval", "generator", "--json", "--model", "transformer", "--n", "24", "--bars", "2", "--no-nll"]
    result = CliRunner().invoke(app, [*args, "--model-dir", str(models), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["model"] == "transformer" and report["pieces"] == 24
    assert report["before_resampling"]["instrument_f1"] == 1.0
    assert "key_accuracy_before_resampling" in report["targets"]
    bad = CliRunner().invoke(app, ["eval", "generator", "--model", "gan"])
    assert bad.exit_code != 0 and "transformer or vae" in bad.output

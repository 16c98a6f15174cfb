"""`personalize apikey create | list | revoke`: the key is printed once, listed by prefix only, and refused
by the API after revocation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from personalize.api.app import create_app
from personalize.cli import app
from personalize.context import make_context
from personalize.db.session import upgrade


def test_apikey_create_list_revoke(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    env = {"PERSONALIZE_DATA_DIR": str(tmp_path / "data"), "PERSONALIZE_DATABASE_URL": url}
    runner = CliRunner()
    created = runner.invoke(app, ["apikey", "create", "ios-backend"], env=env)
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("pz_")
    prefix = key.split("_")[1]

    listed = runner.invoke(app, ["apikey", "list"], env=env)
    assert prefix in listed.output and "ios-backend" in listed.output
    assert key not in listed.output and key.split("_", 2)[2] not in listed.output

    ctx = make_context(data_dir=tmp_path / "data", database_url=url)
    client = TestClient(create_app(ctx))
    assert client.get("/v1/listeners/nobody/playlist", headers={"X-API-Key": key}).status_code == 404

    revoked = runner.invoke(app, ["apikey", "revoke", prefix], env=env)
    assert revoked.exit_code == 0 and f"revoked {prefix}" in revoked.output
    assert client.get("/v1/listeners/nobody/playlist", headers={"X-API-Key": key}).status_code == 401

    for bad in ("nothex!!", "00000000"):
        result = runner.invoke(app, ["apikey", "revoke", bad], env=env)
        assert result.exit_code == 1
    assert "apikey list" in runner.invoke(app, ["apikey", "revoke", "00000000"], env=env).output

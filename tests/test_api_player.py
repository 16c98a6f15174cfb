"""The web player in real headless Chromium against a real `personalize serve`: the page loads, every
track is listed with its reason, and the audio element plays (its currentTime advances)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from personalize.api.keys import create_key
from personalize.api.sample_world import seed
from personalize.context import make_context
from personalize.db.session import upgrade

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    """A seeded SQLite world and `personalize serve` on it, on a free loopback port."""
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'personalize.db'}"
    upgrade(url)
    ctx = make_context(data_dir=data_dir, database_url=url)
    world = seed(ctx, n_listeners=2, n_dates=1, playlist_size=4, audio_duration_s=6.0)
    key = create_key(ctx, "player-test").key
    ctx.engine.dispose()
    port = _free_port()
    env = {**os.environ, "PERSONALIZE_DATA_DIR": str(data_dir), "PERSONALIZE_DATABASE_URL": url}
    cli = Path(sys.executable).with_name("personalize")
    proc = subprocess.Popen(
        [str(cli), "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"personalize serve did not come up on {base}:\n{out}")
            time.sleep(0.2)
        yield base, key, world
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_player_lists_tracks_and_plays_audio(served):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make setup` as root does).")
    base, key, world = served
    link = httpx.post(f"{base}/v1/listeners/L0001/player-link", headers={"X-API-Key": key}).json()["url"]
    playlist = httpx.get(f"{base}/v1/listeners/L0001/playlist", headers={"X-API-Key": key}).json()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            console_errors: list[str] = []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            response = page.goto(base + link)
            assert response is not None and response.status == 200
            tracks = page.locator("li.track")
            assert tracks.count() == 4
            assert tracks.evaluate_all("els => els.map(e => e.dataset.trackId)") == world.latest("L0001")
            for i, item in enumerate(playlist["items"]):
                assert item["reason"] in tracks.nth(i).inner_text()
            tracks.nth(1).click()  # pick the second track, as a listener would
            page.wait_for_function(
                "() => { const a = document.getElementById('player'); return !a.paused && a.currentTime > 0.5; }",
                timeout=20_000,
            )
            state = page.evaluate(
                "() => { const a = document.getElementById('player');"
                " return {src: a.currentSrc, t: a.currentTime, err: a.error && a.error.code}; }"
            )
            assert f"/v1/tracks/{world.latest('L0001')[1]}/audio" in state["src"]
            assert state["err"] is None and state["t"] > 0.5
            assert "playing" in (tracks.nth(1).get_attribute("class") or "")
            assert not console_errors, console_errors  # e.g. nothing blocked by the page's CSP
        finally:
            browser.close()
    # a listener's link does not open someone else's player
    resp = httpx.get(base + link.replace("/player/L0001", "/player/L0000"))
    assert resp.status_code == 403

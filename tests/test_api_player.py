"""The web player in real headless Chromium against a real `personalize serve`: the page loads, every
track is listed with its reason, and the audio element plays (its currentTime advances)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from local_server import local_server
from sample_world import seed

from personalize.api.keys import create_key
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
    with local_server(data_dir, url, workers=1) as server:
        yield server.base_url, key, world


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

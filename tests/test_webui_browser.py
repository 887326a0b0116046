"""The web UI (torrentcore/webui/) in a real browser: Debian's chromium driven by Playwright, against
``torrentcore daemon`` (behind Basic auth) and a real libtorrent seeder.

One test walks through what a user does: add a multi-file torrent by uploading its .torrent on the page,
watch the list reach 100 % (the peers tab open meanwhile), turn one file off and give another a high
priority, look at the pieces and the rate graph, stop, start and verify it, set the global and the
alternative speed limits, add a magnet link (from the keyboard) and drop a .torrent and a broken file on
the page, sort and filter the list, then remove everything (the first one with its data). Every change is
checked on the RPC side too, and a stale session id must be recovered through the 409 handshake.

Screenshots are kept as test artefacts in ``$TORRENTCORE_WEBUI_SCREENSHOTS`` (default: ``screenshots/``
under the test's tmp folder); the test prints where.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess
from realpeers import (  # noqa: F401  (fixture "peers")
    LOCALHOST,
    assert_same_tree,
    make_payload,
    make_torrent,
    peers_fixture,
    wait_until,
)

CHROMIUM = os.environ.get("TORRENTCORE_CHROMIUM", "/usr/bin/chromium")
#: Flags that let chromium run headless as root in a container with no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (Debian package chromium)", allow_module_level=True)

#: The multi-file payload: small, several pieces per file, one file to turn off.
PAYLOAD = {"alpha.bin": 1_200_000, "beta.bin": 700_000, "docs/gamma.txt": 300_000}
PIECE_LENGTH = 64 * 1024
#: The seeder's upload limit in bytes/s (about 4 s for the payload).
SEED_RATE = 600_000
#: Bound of every wait on the page or the daemon (the rate-limited download takes about 4 s).
WAIT_S = 30.0
#: torrent-get ``status`` values (rpc-spec.md 3.3).
STOPPED, SEEDING = 0, 6
#: A file's high priority (tr_priority_t).
HIGH = 1
#: HTTP Basic credentials of the daemon (the password goes through the environment, never the command line).
USERNAME = "webui"
PASSWORD = "correct horse battery staple"


# --------------------------------------------------------------------------------------------------
# The daemon under test (tests/daemon_harness.py), and the RPC from the test's side (to check the page)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """``torrentcore daemon`` on 127.0.0.1 (free RPC port, any peer port, no DHT) behind HTTP Basic auth: the
    page and its files are reached through the same auth as the RPC."""
    if importlib.util.find_spec("torrentcore.daemon") is None:
        pytest.skip("this tree has no `torrentcore daemon` (torrentcore/daemon/, issue 14 item 1)")
    server = DaemonProcess(tmp_path / "daemon", "--rpc-username", USERNAME, env={"TORRENTCORE_RPC_PASSWORD": PASSWORD})
    server.auth = (USERNAME, PASSWORD)
    try:
        yield server
    finally:
        server.terminate(timeout=10)
        print(server.stderr()[-4000:])


def torrents(daemon: DaemonProcess, *fields: str) -> list[dict[str, Any]]:
    """``torrent-get`` of every torrent (``id``, ``name`` and ``fields``)."""
    return daemon.rpc("torrent-get", fields=["id", "name", *fields])["torrents"]


# --------------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def screenshots(tmp_path: Path, record_property: Any) -> Path:
    """The artefact folder: ``$TORRENTCORE_WEBUI_SCREENSHOTS``, else ``screenshots/`` in the test's tmp folder
    (pytest keeps the last three); its path is printed (``pytest -s`` or ``-rP``) and in the JUnit XML."""
    folder = Path(os.environ.get("TORRENTCORE_WEBUI_SCREENSHOTS") or tmp_path / "screenshots").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"web UI screenshots: {folder}")
    record_property("screenshots", str(folder))
    return folder


@pytest.fixture
def page(tmp_path: Path, daemon: DaemonProcess) -> Iterator[Any]:
    """A chromium page (fresh profile), its console errors collected in ``page.errors``."""
    profile = tmp_path / "chromium-profile"  # a fresh --user-data-dir
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=False,
            http_credentials={"username": daemon.auth[0], "password": daemon.auth[1]},
        )
        try:
            context.set_default_timeout(WAIT_S * 1000)
            tab = context.pages[0] if context.pages else context.new_page()
            tab.errors = []
            tab.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
            tab.on("console", lambda msg: msg.type == "error" and "409" not in msg.text
                   and tab.errors.append(f"console: {msg.text}"))
            yield tab
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def row(page: Any, name: str) -> Any:
    """The list row of the torrent called ``name``."""
    return page.locator("#torrent-rows tr").filter(has=page.get_by_role("button", name=f"Details of {name}"))


#: Drops a file (base64 content, name) on the page, as dragging it from a file manager does.
DROP_FILE = """([b64, name]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name, {type: "application/x-bittorrent"}));
    for (const type of ["dragenter", "dragover", "drop"]) {
        document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
    }
}"""


def wait_polls(page: Any, count: int) -> None:
    """Wait until the page has polled the daemon ``count`` more times (its ``data-polls`` counter)."""
    start = int(page.evaluate("document.body.dataset.polls || 0"))
    page.wait_for_function(f"Number(document.body.dataset.polls || 0) >= {start + count}")


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------


def test_webui_add_download_select_remove(daemon, page, peers, screenshots, tmp_path: Path) -> None:
    peer_port = daemon.peer_port()
    payload = make_payload(tmp_path / "seed", PAYLOAD, seed=14, name="webui-payload")
    torrent_path = tmp_path / "webui-payload.torrent"
    make_torrent(payload, piece_length=PIECE_LENGTH, out=torrent_path)
    # A rate-limited seeder: the download lasts a few seconds, so the list and the rate graph show it moving.
    seeder = peers.libtorrent("seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
    seeder.add_torrent(torrent_path, tmp_path / "seed", seed=True)

    page.goto(f"http://{LOCALHOST}:{daemon.port}/")
    # The first poll went through the 409 handshake and answered: the empty list says so.
    page.get_by_text("No torrents yet").wait_for()

    # A session id the server no longer knows (as after a daemon restart): a 409, and the page goes on with
    # the id from that answer.
    real_id = page.evaluate("window.torrentcoreApp.rpc.sessionId")
    assert real_id
    page.evaluate("window.torrentcoreApp.rpc.sessionId = 'stale'")
    wait_polls(page, 2)
    assert page.evaluate("window.torrentcoreApp.rpc.sessionId") == real_id
    assert page.locator("#connection").is_hidden()

    # The piece map's bitfield decoding (most significant bit first, spare bits ignored).
    decoded = page.evaluate(
        "async () => { const m = await import('./js/piecemap.js'); return Array.from(m.decodePieces('wIA=', 10)); }"
    )
    assert decoded == [1, 1, 0, 0, 0, 0, 0, 0, 1, 0]

    # Add by uploading the .torrent.
    page.get_by_label("Torrent file").set_input_files(str(torrent_path))
    page.get_by_role("button", name="Add file").click()
    the_row = row(page, "webui-payload")
    the_row.wait_for()
    (added,) = torrents(daemon, "hashString")
    assert added["name"] == "webui-payload"
    # Its details, on the peers tab while it downloads.
    page.get_by_role("button", name="Details of webui-payload").click()
    page.get_by_role("tab", name="Peers").click()

    # The seeder dials the daemon's peer port; the page shows 100 %.
    midway = []

    def complete() -> bool:
        shown = the_row.locator(".pct").inner_text()
        if shown == "100 %":
            return True
        if shown != "0.0 %" and not midway:  # a picture of the download under way (when a poll caught it)
            midway.append(shown)
            page.screenshot(path=str(screenshots / "0-downloading.png"), full_page=True)
        if not seeder.peer_info():
            seeder.connect_peer(LOCALHOST, peer_port)
        return False

    assert wait_until(complete, WAIT_S, interval=0.5), seeder.describe() + daemon.stderr()[-3000:]
    print(f"progress shown on the way: {midway or 'none (the download was quicker than a poll)'}")
    assert_same_tree(payload, daemon.download_dir / "webui-payload")
    assert "100 %" in the_row.inner_text()

    # Files: turn one off...
    page.get_by_role("tab", name="Files").click()
    detail = page.locator("#detail")
    detail.get_by_role("checkbox", name="Download beta.bin").wait_for()
    beta = detail.get_by_role("checkbox", name="Download beta.bin")
    assert beta.is_checked()
    beta.uncheck()

    def beta_off() -> bool:
        (t,) = torrents(daemon, "files", "wanted")
        names = [f["name"] for f in t["files"]]
        return not t["wanted"][names.index("webui-payload/beta.bin")]

    assert wait_until(beta_off, WAIT_S, interval=0.2)
    wait_polls(page, 2)  # the page keeps showing the server's state
    assert not beta.is_checked()
    assert detail.get_by_role("checkbox", name="Download alpha.bin").is_checked()
    # ... and give another a high priority.
    detail.get_by_label("Priority of docs/gamma.txt").select_option(label="High")

    def gamma_high() -> bool:
        (t,) = torrents(daemon, "files", "priorities")
        names = [f["name"] for f in t["files"]]
        return t["priorities"][names.index("webui-payload/docs/gamma.txt")] == HIGH

    assert wait_until(gamma_high, WAIT_S, interval=0.2)
    wait_polls(page, 2)
    assert detail.get_by_label("Priority of docs/gamma.txt").input_value() == str(HIGH)
    page.screenshot(path=str(screenshots / "1-files.png"), full_page=True)

    # The tabs work from the keyboard (arrow keys move between them).
    page.get_by_role("tab", name="Files").focus()
    page.keyboard.press("ArrowRight")
    assert page.get_by_role("tab", name="Trackers").get_attribute("aria-selected") == "true"
    page.get_by_text("This torrent has no trackers.").wait_for()

    page.get_by_role("tab", name="Pieces").click()
    pieces = -(-sum(PAYLOAD.values()) // PIECE_LENGTH)
    page.get_by_text("pieces verified").wait_for()
    summary = page.locator("#pieces-summary").inner_text()
    assert summary.startswith(f"{pieces} of {pieces} pieces verified"), summary
    page.screenshot(path=str(screenshots / "2-pieces.png"), full_page=True)

    page.get_by_role("tab", name="Speed").click()
    page.locator("#rate-graph polyline.rate-down").wait_for(state="attached")
    assert "samples" in page.locator("#speed-summary").inner_text()
    page.screenshot(path=str(screenshots / "3-speed.png"), full_page=True)

    # Stop, start and verify it from the toolbar.
    the_row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Stop", exact=True).click()
    assert wait_until(lambda: torrents(daemon, "status")[0]["status"] == STOPPED, WAIT_S, interval=0.2)
    the_row.locator("td.state", has_text=re.compile("^(Stopped|Finished)$")).wait_for()
    page.get_by_role("button", name="Start", exact=True).click()
    assert wait_until(lambda: torrents(daemon, "status")[0]["status"] != STOPPED, WAIT_S, interval=0.2)
    page.get_by_role("button", name="Verify", exact=True).click()
    page.locator("#notice", has_text="Verifying webui-payload").wait_for()
    assert wait_until(lambda: torrents(daemon, "status")[0]["status"] == SEEDING, WAIT_S, interval=0.2)
    the_row.get_by_role("checkbox").uncheck()

    # Global speed limits.
    page.get_by_role("button", name="Speed limits…").click()
    dialog = page.get_by_role("dialog", name="Speed limits")
    dialog.get_by_label("Limit download to").check()
    dialog.get_by_label("Download limit").fill("512")
    dialog.get_by_role("button", name="Save").click()
    assert wait_until(lambda: daemon.rpc("session-get")["speed-limit-down"] == 512, WAIT_S, interval=0.2)
    assert daemon.rpc("session-get")["speed-limit-down-enabled"] is True
    page.get_by_text("↓ 512").wait_for()
    page.get_by_role("button", name="Alternative speed").click()
    assert wait_until(lambda: daemon.rpc("session-get")["alt-speed-enabled"] is True, WAIT_S, interval=0.2)

    # Add by magnet link, and by dropping a .torrent file on the page.
    other = make_payload(tmp_path / "other", 200_000, seed=15, name="dropped-one")
    other_torrent, _ = make_torrent(other)
    magnet_hash = "3f" * 20
    page.get_by_label("Magnet link").fill(f"magnet:?xt=urn:btih:{magnet_hash}&dn=from-a-magnet")
    page.get_by_label("Magnet link").press("Enter")  # the keyboard submits the form
    page.evaluate(DROP_FILE, [base64.b64encode(other_torrent).decode(), "dropped-one.torrent"])
    row(page, "dropped-one").wait_for()
    # A file that is not a torrent: one clear notice, nothing added.
    page.evaluate(DROP_FILE, [base64.b64encode(b"d4:infoi3ee").decode(), "broken.torrent"])
    page.locator("#notice.error", has_text="Could not add broken.torrent").wait_for()
    assert wait_until(lambda: len(torrents(daemon)) == 3, WAIT_S, interval=0.2), torrents(daemon, "hashString")
    assert magnet_hash in {t["hashString"] for t in torrents(daemon, "hashString")}
    # Sorting and filtering the list.
    page.get_by_role("button", name="Name", exact=True).click()
    first = page.locator("#torrent-rows tr").first.get_by_role("button")
    assert first.inner_text() == "dropped-one"
    page.get_by_role("button", name="Name", exact=True).click()
    assert first.inner_text() == "webui-payload"
    page.get_by_label("Filter by name").fill("magnet")
    page.get_by_text("(1 of 3 shown)").wait_for()
    assert page.locator("#torrent-rows tr").count() == 1
    page.get_by_label("Filter by name").fill("")
    page.get_by_text("(3)").wait_for()
    page.screenshot(path=str(screenshots / "4-list.png"), full_page=True)

    # Remove the downloaded torrent with its data (after changing our mind once: Escape cancels)...
    the_row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Remove…").click()
    remove = page.get_by_role("dialog", name="Remove torrents")
    remove.wait_for()
    page.keyboard.press("Escape")
    remove.wait_for(state="hidden")
    wait_polls(page, 1)
    assert len(torrents(daemon)) == 3
    page.get_by_role("button", name="Remove…").click()
    remove.get_by_label("Also delete the downloaded data").check()
    remove.get_by_role("button", name="Remove").click()
    the_row.wait_for(state="detached")
    assert wait_until(lambda: not (daemon.download_dir / "webui-payload").exists(), WAIT_S, interval=0.2)
    assert page.locator("#detail").is_hidden()
    # ... and the two others without.
    page.get_by_label("Select all torrents").check()
    page.get_by_role("button", name="Remove…").click()
    remove.get_by_role("button", name="Remove").click()
    page.get_by_text("No torrents yet").wait_for()
    assert torrents(daemon) == []
    assert not page.errors, page.errors

"""The web UI (torrentcore/webui/) in a real browser: Debian's chromium driven by Playwright.

One test walks through what a user does: add a multi-file torrent by uploading its .torrent on the page,
watch the list reach 100 % while a real libtorrent seeder serves it, open the details (files, pieces, rate
graph), turn one file off, set a global speed limit, add a magnet link and drop a .torrent on the page,
then remove everything (the first one with its data). Every change is checked on the RPC side too.

Screenshots are kept as test artefacts in ``$TORRENTCORE_WEBUI_SCREENSHOTS`` (default: ``screenshots/``
under the test's tmp folder); the test prints where.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from realpeers import (  # noqa: F401  (fixture "peers")
    LOCALHOST,
    assert_same_tree,
    free_port,
    make_payload,
    make_torrent,
    peers_fixture,
    wait_port_open,
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
#: Bound of every wait on the page or the daemon (the download itself takes well under a second here).
WAIT_S = 30.0
#: torrent-get ``status`` values (rpc-spec.md 3.3).
STOPPED, SEEDING = 0, 6
#: A file's high priority (tr_priority_t).
HIGH = 1
#: HTTP Basic credentials of the daemon (the password goes through the environment, never the command line).
USERNAME = "webui"
PASSWORD = "correct horse battery staple"


# --------------------------------------------------------------------------------------------------
# The RPC from the test's side (to check what the page did), with the 409 handshake.
# --------------------------------------------------------------------------------------------------


class Rpc:
    """A minimal Transmission RPC client for assertions (the page has its own in JavaScript)."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url
        self.auth = auth
        self.session_id = ""

    def call(self, method: str, **arguments: Any) -> dict[str, Any]:
        body = json.dumps({"method": method, "arguments": arguments})
        for _ in range(3):
            reply = requests.post(
                self.url, data=body, headers={"X-Transmission-Session-Id": self.session_id}, auth=self.auth,
                timeout=10,
            )
            if reply.status_code == 409:
                self.session_id = reply.headers["X-Transmission-Session-Id"]
                continue
            reply.raise_for_status()
            answer = reply.json()
            assert answer["result"] == "success", f"{method}: {answer}"
            return answer.get("arguments", {})
        raise AssertionError(f"{method}: 409 three times in a row")

    def torrents(self, *fields: str) -> list[dict[str, Any]]:
        return self.call("torrent-get", fields=["id", "name", *fields])["torrents"]


# --------------------------------------------------------------------------------------------------
# The daemon under test
# --------------------------------------------------------------------------------------------------


class DaemonUnderTest:
    """``torrentcore daemon`` on 127.0.0.1 (free RPC port, any peer port, no DHT), behind HTTP Basic auth:
    the page and its files are reached through the same auth as the RPC."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.download_dir = workdir / "downloads"
        self.rpc_port = free_port()
        self.auth = (USERNAME, PASSWORD)
        args = [
            sys.executable, "-m", "torrentcore", "daemon", "--config-dir", str(workdir / "config"),
            "--download-dir", str(self.download_dir), "--rpc-port", str(self.rpc_port), "--peer-port", "0",
            "--no-dht", "--rpc-username", USERNAME, "--log-level", "info", "--log-format", "json",
        ]
        env = {**os.environ, "TORRENTCORE_STATE_DIR": str(workdir / "state"), "TORRENTCORE_RPC_PASSWORD": PASSWORD}
        self.stdout_path = workdir / "daemon.stdout"
        self.stderr_path = workdir / "daemon.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir, env=env,
            )
        started = wait_until(lambda: self.process.poll() is not None or wait_port_open(self.rpc_port, 0.2), WAIT_S)
        assert started and self.process.poll() is None, f"the daemon did not start\n{self.describe()}"
        self.page_url = f"http://{LOCALHOST}:{self.rpc_port}/"
        self.rpc = Rpc(f"http://{LOCALHOST}:{self.rpc_port}/transmission/rpc", self.auth)
        self.peer_port = int(self.rpc.call("session-get", fields=["peer-port"])["peer-port"])

    def describe(self) -> str:
        def tail(path: Path) -> str:
            return path.read_text(errors="replace")[-4000:] if path.exists() else ""

        return f"torrentcore daemon rc={self.process.poll()}\n{tail(self.stdout_path)}\n{tail(self.stderr_path)}"

    def close(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it takes longer than 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonUnderTest]:
    if importlib.util.find_spec("torrentcore.daemon") is None:
        pytest.skip("this tree has no `torrentcore daemon` (torrentcore/daemon/, issue 14 item 1)")
    server = DaemonUnderTest(tmp_path / "daemon")
    try:
        yield server
    finally:
        server.close()
        print(server.describe())


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
def page(tmp_path: Path, daemon: DaemonUnderTest) -> Iterator[Any]:
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
    rpc = daemon.rpc
    payload = make_payload(tmp_path / "seed", PAYLOAD, seed=14, name="webui-payload")
    torrent_path = tmp_path / "webui-payload.torrent"
    make_torrent(payload, piece_length=PIECE_LENGTH, out=torrent_path)
    # A rate-limited seeder: the download lasts a few seconds, so the list and the rate graph show it moving.
    seeder = peers.libtorrent("seeder", upload_rate_limit=SEED_RATE, ignore_limits_on_local_network=False)
    seeder.add_torrent(torrent_path, tmp_path / "seed", seed=True)

    page.goto(daemon.page_url)
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
    (added,) = rpc.torrents("hashString")
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
            seeder.connect_peer(LOCALHOST, daemon.peer_port)
        return False

    assert wait_until(complete, WAIT_S, interval=0.5), seeder.describe() + daemon.describe()
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
        (t,) = rpc.torrents("files", "wanted")
        names = [f["name"] for f in t["files"]]
        return not t["wanted"][names.index("webui-payload/beta.bin")]

    assert wait_until(beta_off, WAIT_S, interval=0.2)
    wait_polls(page, 2)  # the page keeps showing the server's state
    assert not beta.is_checked()
    assert detail.get_by_role("checkbox", name="Download alpha.bin").is_checked()
    # ... and give another a high priority.
    detail.get_by_label("Priority of docs/gamma.txt").select_option(label="High")

    def gamma_high() -> bool:
        (t,) = rpc.torrents("files", "priorities")
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
    assert wait_until(lambda: rpc.torrents("status")[0]["status"] == STOPPED, WAIT_S, interval=0.2)
    the_row.locator("td.state", has_text=re.compile("^(Stopped|Finished)$")).wait_for()
    page.get_by_role("button", name="Start", exact=True).click()
    assert wait_until(lambda: rpc.torrents("status")[0]["status"] != STOPPED, WAIT_S, interval=0.2)
    page.get_by_role("button", name="Verify", exact=True).click()
    page.locator("#notice", has_text="Verifying webui-payload").wait_for()
    assert wait_until(lambda: rpc.torrents("status")[0]["status"] == SEEDING, WAIT_S, interval=0.2)
    the_row.get_by_role("checkbox").uncheck()

    # Global speed limits.
    page.get_by_role("button", name="Speed limits…").click()
    dialog = page.get_by_role("dialog", name="Speed limits")
    dialog.get_by_label("Limit download to").check()
    dialog.get_by_label("Download limit").fill("512")
    dialog.get_by_role("button", name="Save").click()
    assert wait_until(lambda: rpc.call("session-get")["speed-limit-down"] == 512, WAIT_S, interval=0.2)
    assert rpc.call("session-get")["speed-limit-down-enabled"] is True
    page.get_by_text("↓ 512").wait_for()
    page.get_by_role("button", name="Alternative speed").click()
    assert wait_until(lambda: rpc.call("session-get")["alt-speed-enabled"] is True, WAIT_S, interval=0.2)

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
    assert wait_until(lambda: len(rpc.torrents()) == 3, WAIT_S, interval=0.2), rpc.torrents("hashString")
    assert magnet_hash in {t["hashString"] for t in rpc.torrents("hashString")}
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
    assert len(rpc.torrents()) == 3
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
    assert rpc.torrents() == []
    assert not page.errors, page.errors

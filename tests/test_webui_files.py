"""Static checks of the web UI's files (torrentcore/webui/): shipped, self-contained, consistent.

The browser test (test_webui_browser.py) proves the page works; these catch, in milliseconds, a file that
``pip install .`` would leave out, a reference to anything outside the folder (a CDN, a font service), a
request to anything but the RPC, and a script naming an element or module that does not exist.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEBUI = ROOT / "torrentcore" / "webui"
#: The only absolute URL the page may contain: the SVG namespace (an identifier, never fetched).
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}

FILES = sorted(p for p in WEBUI.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
SCRIPTS = [p for p in FILES if p.suffix == ".js"]


def test_every_file_is_package_data() -> None:
    """Each file of the folder matches a pattern of setup.cfg's [options.package_data] for torrentcore."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [line.strip() for line in config["options.package_data"]["torrentcore"].splitlines() if line.strip()]
    assert FILES, f"no web UI files in {WEBUI}"
    for path in FILES:
        rel = path.relative_to(WEBUI.parent).as_posix()
        # setuptools globs: "*" does not cross a folder
        matched = [p for p in patterns if fnmatch.fnmatchcase(rel, p) and rel.count("/") == p.count("/")]
        assert matched, f"{rel} is not in setup.cfg's package_data (pip install . would leave it out)"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(WEBUI).as_posix())
def test_nothing_from_outside(path: Path) -> None:
    """No absolute URL (CDN, fonts, analytics): the page loads only its own files."""
    text = path.read_text(encoding="utf-8")
    urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text))
    assert urls <= ALLOWED_URLS, f"{path.name} refers to {sorted(urls - ALLOWED_URLS)}"


def code_of(path: Path) -> str:
    """A script without its comments (JSDoc types such as ``import("./rpc.js").RpcClient`` are not code)."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"(?m)(^|\s)//.*$", "", text)


def test_only_the_rpc_is_requested() -> None:
    """fetch() appears in rpc.js only, whose one endpoint is /transmission/rpc; no other request API."""
    for path in SCRIPTS:
        text = code_of(path)
        for api in ("XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon", "import("):
            assert api not in text, f"{path.name} uses {api}"
        if path.name != "rpc.js":
            assert "fetch(" not in text, f"{path.name} calls fetch(): only rpc.js talks to the daemon"
    rpc = (WEBUI / "js" / "rpc.js").read_text(encoding="utf-8")
    assert 'RPC_PATH = "/transmission/rpc"' in rpc
    assert "X-Transmission-Session-Id" in rpc and "409" in rpc


def test_references_resolve() -> None:
    """index.html's href/src, every module import, and every element id a script looks up exist."""
    html = (WEBUI / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r'(?:href|src)="([^"#][^"]*)"', html):
        if ref.startswith("data:"):
            continue
        assert (WEBUI / ref).is_file(), f"index.html refers to missing {ref}"
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    for path in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        for module in re.findall(r'from "(\./[^"]+)"', text):
            assert (path.parent / module).is_file(), f"{path.name} imports missing {module}"
        for element in re.findall(r'byId\("([^"]+)"\)', text):
            assert element in ids, f"{path.name} looks up #{element}, which index.html lacks"
    for ref in re.findall(r'aria-(?:controls|labelledby)="([^"]+)"', html):
        for element in ref.split():
            assert element in ids, f"index.html refers to #{element}, which it lacks"

"""Headless Chromium for the report tests: load a report page with a probe that records
console errors, uncaught exceptions and broken images, and take screenshots.

The probe is put first in a copy of the page, so it sees everything that runs after it; the
DOM Chromium dumps after the load event carries its counts as ``data-*`` attributes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--virtual-time-budget=4000")
_PROBE = """<script>(function () {
  var errors = [];
  var log = console.error;
  console.error = function () {
    errors.push(Array.from(arguments).join(" ")); log.apply(console, arguments);
  };
  window.addEventListener("error", function (e) { errors.push(String(e.message || e)); }, true);
  window.addEventListener("load", function () {
    var imgs = Array.from(document.images);
    var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
    var b = document.body;
    b.dataset.probeImages = imgs.length; b.dataset.probeBroken = broken.length;
    b.dataset.probeErrors = errors.length; b.dataset.probeMessages = errors.join(" | ");
    b.dataset.probeRows = document.querySelectorAll("tr").length;
  });
})();</script>"""


@dataclass
class Page:
    """What the probe saw: the DOM after load and its counts."""

    dom: str
    images: int
    broken: int
    errors: int
    messages: str

    def text(self) -> str:
        """The page's visible text (tags stripped, entities of the common kinds decoded)."""
        body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", self.dom, flags=re.S)
        body = re.sub(r"<[^>]+>", " ", body)
        return re.sub(r"\s+", " ", body.replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">").replace("&nbsp;", " "))


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(dir=tmp)
    return subprocess.run([str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def load(page: Path, tmp: Path) -> Page:
    """Open a probed copy of ``page`` and return what the probe recorded."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    dom = _run(["--dump-dom", probed.resolve().as_uri()], tmp).stdout

    def attr(name: str) -> str:
        m = re.search(rf'data-probe-{name}="([^"]*)"', dom)
        if m is None:
            raise AssertionError(f"the probe did not run in {page.name} (no data-probe-{name})")
        return m.group(1)

    return Page(dom, int(attr("images")), int(attr("broken")), int(attr("errors")),
                attr("messages"))


def screenshot(page: Path, png: Path, tmp: Path, size: tuple[int, int] = (1200, 900)) -> Path:
    """A ``size`` viewport screenshot of ``page`` (the top of the page)."""
    _run([f"--screenshot={png.resolve()}", f"--window-size={size[0]},{size[1]}",
          page.resolve().as_uri()], tmp)
    if not png.exists():
        raise AssertionError(f"chromium wrote no screenshot of {page.name}")
    return png

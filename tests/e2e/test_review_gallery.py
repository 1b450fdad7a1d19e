"""The review gallery in a real browser: headless Chromium renders it, sorts it, screenshots it.

The gallery is made with ``detpose review`` from a job over the real COCO and OCHuman sample
photos whose poses are their ground truth (fast and deterministic: no model runs), with two
error rows and one photo missing from disk (its tile must become a placeholder). Chromium is Debian's ``chromium``; when
``/usr/bin/chromium`` is missing it is installed once per session with apt-get (as root).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_ROOT, run_cli
from tests.review_fixtures import job_from_ground_truth

CHROMIUM = Path("/usr/bin/chromium")
MISSING = "000000197388.jpg"  # listed in the job but not on disk: its tile must say why

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chromium() -> Path:
    """``/usr/bin/chromium``, installed with apt-get when it is not there yet."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} is missing and cannot be installed here (needs apt-get, as root): "
            "install Debian's 'chromium' package to run the browser tests"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    started = time.monotonic()
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail(f"installing chromium: `{' '.join(command)}` ran over 15 minutes")
        if done.returncode != 0:
            pytest.fail(
                f"installing chromium failed: `{' '.join(command)}` exited {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed 'chromium' but {CHROMIUM} is still missing")
    print(f"\ninstalled chromium in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return CHROMIUM


def browse(chromium: Path, profile: Path, url: str, *extra: str) -> str:
    """Run headless Chromium on ``url`` (JS and image loads finish in virtual time); stdout."""
    profile.mkdir(parents=True, exist_ok=True)
    command = [
        str(chromium),
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


class Dom(HTMLParser):
    """The tiles (figure attributes plus their img's) and error rows of a dumped page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tiles: list[dict[str, str | None]] = []
        self.error_rows: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "tile" in (a.get("class") or ""):
            self.tiles.append(a)
        elif tag == "img" and self.tiles:
            self.tiles[-1].update({f"img-{k}": v for k, v in a.items()})
        elif tag == "tr" and "data-kind" in a:
            self.error_rows.append(a)
        elif tag == "body":
            self.body = a

    def uris(self, shown_only: bool = False) -> list[str]:
        return [t["data-uri"] for t in self.tiles if not (shown_only and "hidden" in t)]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """A job over the real COCO and OCHuman sample photos, reviewed with ``detpose review``."""
    root = tmp_path_factory.mktemp("review")
    data = REPO_ROOT / "tests" / "data"
    job = job_from_ground_truth(
        root, [data / "coco_sample", data / "ochuman_sample"], missing=MISSING, errors=2
    )
    out = root / "gallery"
    review = run_cli("review", "--job", str(job), "--out", str(out), cwd=root)
    assert review.returncode == 0, review.stderr[-3000:]
    assert (
        "7 images shown (1 unavailable)" in review.stdout and "2 of 2 error rows" in review.stdout
    )
    return out


def test_every_image_renders_in_chromium(chromium, gallery, tmp_path):
    dom = Dom(browse(chromium, tmp_path / "p", (gallery / "index.html").as_uri(), "--dump-dom"))
    assert len(dom.tiles) == 7
    for tile in dom.tiles:
        assert tile["img-data-loaded"] == "yes", f"{tile['img-src']} did not load"
        assert int(tile["img-data-natural-width"]) > 0
    deleted = next(t for t in dom.tiles if t["data-uri"].endswith(MISSING))
    assert "unavailable" in deleted["data-status"].split()
    assert sorted(r["data-kind"] for r in dom.error_rows) == ["missing", "unreadable"]


def test_sorting_and_filtering_follow_the_url_hash(chromium, gallery, tmp_path):
    index = (gallery / "index.html").as_uri()
    default = Dom(browse(chromium, tmp_path / "a", index, "--dump-dom"))
    confident = Dom(browse(chromium, tmp_path / "b", index + "#sort=confident", "--dump-dom"))
    by_uri = Dom(browse(chromium, tmp_path / "c", index + "#sort=uri", "--dump-dom"))
    recovered = Dom(browse(chromium, tmp_path / "d", index + "#status=recovered", "--dump-dom"))

    assert default.body["data-sort"] == "uncertain" and confident.body["data-sort"] == "confident"
    assert confident.uris() == default.uris()[::-1] != default.uris()
    assert by_uri.uris() == sorted(default.uris())
    # Most uncertain first: lowest scores ascend (the missing photo's score still counts).
    scores = [float(t["data-score"]) for t in default.tiles]
    assert scores == sorted(scores)
    capped = Dom(browse(chromium, tmp_path / "e", index + "#max=0.8", "--dump-dom"))
    kept = [float(t["data-score"]) for t in capped.tiles if "hidden" not in t]
    assert kept and max(kept) <= 0.8 and len(kept) < len(capped.tiles)
    shown = recovered.uris(shown_only=True)
    assert 0 < len(shown) < len(recovered.tiles)
    assert all(
        "recovered" in t["data-status"].split() for t in recovered.tiles if "hidden" not in t
    )


# Drives the page's own controls from a parent page (file:// pages may script each other with
# --allow-file-access-from-files), then writes what the gallery shows into its own DOM.
HARNESS = """<!doctype html><html><body>
<iframe id="f" src="GALLERY" width="1200" height="800"></iframe><pre id="out">pending</pre>
<script>
var f = document.getElementById("f");
f.addEventListener("load", function () {
  var w = f.contentWindow, d = f.contentDocument, out = {};
  function tiles() { return Array.prototype.slice.call(d.querySelectorAll("#gallery .tile")); }
  var sort = d.getElementById("sort");
  sort.value = "confident";
  sort.dispatchEvent(new w.Event("change"));
  setTimeout(function () {
    out.sorted = { hash: w.location.hash,
                   order: tiles().map(function (t) { return t.getAttribute("data-uri"); }) };
    var max = d.getElementById("max");
    max.value = "0.8";
    max.dispatchEvent(new w.Event("change"));
    setTimeout(function () {
      out.filtered = { hash: w.location.hash,
                       shown: tiles().filter(function (t) { return !t.hidden; })
                                     .map(function (t) { return t.getAttribute("data-score"); }) };
      document.getElementById("out").textContent = JSON.stringify(out);
    }, 200);
  }, 200);
});
</script></body></html>"""


def test_the_page_controls_sort_and_filter(chromium, gallery, tmp_path):
    index = (gallery / "index.html").as_uri()
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.replace("GALLERY", index))
    dumped = browse(
        chromium, tmp_path / "p", harness.as_uri(), "--allow-file-access-from-files", "--dump-dom"
    )
    found = re.search(r'<pre id="out">(.*?)</pre>', dumped, re.S)
    assert found and found.group(1) != "pending", dumped[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    default = Dom(browse(chromium, tmp_path / "q", index, "--dump-dom")).uris()
    assert result["sorted"]["hash"] == "#sort=confident"
    assert result["sorted"]["order"] == default[::-1]
    assert result["filtered"]["hash"] == "#sort=confident&max=0.8"
    shown = [float(score) for score in result["filtered"]["shown"]]
    assert shown and all(score <= 0.8 for score in shown) and len(shown) < len(default)


def test_screenshot_shows_the_gallery(chromium, gallery, tmp_path):
    shot = tmp_path / "review-gallery.png"
    browse(
        chromium, tmp_path / "p", (gallery / "index.html").as_uri(),
        f"--screenshot={shot}", "--window-size=1280,900",
    )  # fmt: skip
    with Image.open(shot) as img:
        assert img.size == (1280, 900)
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    # Photos, not an empty page: the lower part (the tiles) is far from uniform and colourful.
    tiles = pixels[300:]
    assert tiles.std() > 30
    assert np.abs(tiles - tiles.mean(axis=2, keepdims=True)).mean() > 5

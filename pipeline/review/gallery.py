"""A static HTML gallery of a job's most uncertain images, for people to review.

``build_gallery`` reads a job's annotation files in one streaming pass, batch by batch,
keeping only a bounded heap of the ``limit`` most uncertain images and the first
``max_errors`` error rows, so a job of any size is reviewed in constant memory. Only the
selected images are fetched (the same storage code as the job, so local paths and ``s3://``
both work) and drawn with their poses (``pipeline.review.overlay``). Everything is written under
one folder or URI: ``index.html`` and ``thumbs/*.jpg``, linked by relative paths only, so the
page opens from disk or from a bucket, without a network.

An image's **uncertainty** is the lowest ``pose_score`` among its persons: an image is as
doubtful as its least certain person. Images are ranked by that score, lowest first (ties by
URI). An ``ok`` image with no person has no score; by default it ranks before every image
with persons (a missed person is the costliest mistake to overlook), or after them with
``empty='last'``.
"""

from __future__ import annotations

import heapq
import html
import io
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from pipeline.review.overlay import KEYPOINT_THRESHOLD, draw_poses, placeholder
from pipeline.store.fetch import ImageError, fetch_and_decode
from pipeline.store.job_parts import JobParts, PartsReport
from pipeline.store.outputs import check_output_folder, strict_json, write_atomic
from pipeline.store.storage import filesystem_for, image_filesystem_for, storage_errors
from schemas.output import ORIGIN_RECOVERED, STATUS_ERROR, STATUS_OK
from schemas.spec import LOCAL_SCHEMES, DecodeSpec, StorageSpec, join_uri, uri_scheme

DEFAULT_LIMIT = 200
DEFAULT_MAX_ERRORS = 500
# Upper bounds of --limit and --max-errors: the page holds every tile and listed error.
MAX_LIMIT = 10_000
MAX_ERRORS_LISTED = 100_000
DEFAULT_THUMB_SIDE = 400
BATCH_ROWS = 4096
EmptyPolicy = Literal["first", "last"]

# Rank keys of ok images without persons, below and above every pose score (scores are 0..1).
_EMPTY_KEY = {"first": -1.0, "last": 2.0}
_COLUMNS = [
    "image_id",
    "uri",
    "width",
    "height",
    "status",
    "error_kind",
    "error_message",
    "persons",
]


def default_workers() -> int:
    """Threads fetching and drawing thumbnails: reads from object stores wait on the network,
    so a few per core."""
    return min(16, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class ReviewItem:
    """One ok image chosen for review, with what its tile needs."""

    image_id: int
    uri: str
    width: int | None
    height: int | None
    persons: list[dict[str, Any]]
    min_score: float | None  # None: no person
    mean_score: float | None

    @property
    def recovered(self) -> int:
        return sum(p.get("origin") == ORIGIN_RECOVERED for p in self.persons)


@dataclass(frozen=True)
class ErrorItem:
    """One error row, as the page lists it."""

    uri: str
    kind: str
    message: str


@dataclass
class Selection:
    """What one streaming pass over a job's annotations found."""

    items: list[ReviewItem]  # most uncertain first
    errors: list[ErrorItem]  # the first max_errors error rows, in file order
    files: int = 0
    rows: int = 0
    ok: int = 0
    error_rows: int = 0
    empty: int = 0  # ok rows without a person
    persons: int = 0
    recovered: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    parts: PartsReport = field(default_factory=PartsReport)  # what reading the job left out


class _Kept:
    """A heap entry. ``heapq`` keeps the smallest on top; here the top is the entry that is
    *least* uncertain (largest key), the first to go when a more uncertain image turns up."""

    __slots__ = ("key", "item")

    def __init__(self, key: tuple[float, str], item: ReviewItem) -> None:
        self.key = key
        self.item = item

    def __lt__(self, other: _Kept) -> bool:
        return self.key > other.key


def _person_scores(persons: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per row: person count, lowest and mean pose score (NaN without persons); recovered total."""
    lengths = pc.fill_null(pc.list_value_length(persons), 0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(persons)
    scores = pc.struct_field(flat, "pose_score").to_numpy(zero_copy_only=False)
    scores = np.nan_to_num(scores.astype(np.float64), nan=0.0)
    recovered = int(
        pc.sum(pc.equal(pc.struct_field(flat, "origin"), ORIGIN_RECOVERED)).as_py() or 0
    )
    lowest = np.full(len(lengths), np.nan)
    mean = np.full(len(lengths), np.nan)
    some = lengths > 0
    if some.any():
        starts = (np.cumsum(lengths) - lengths)[some]
        lowest[some] = np.minimum.reduceat(scores, starts)
        mean[some] = np.add.reduceat(scores, starts) / lengths[some]
    return lengths, lowest, mean, recovered


def _item(batch: pa.RecordBatch, i: int, lowest: float, mean: float) -> ReviewItem:
    row = batch.slice(i, 1).to_pylist()[0]
    return ReviewItem(
        image_id=int(row["image_id"]),
        uri=row["uri"],
        width=row["width"],
        height=row["height"],
        persons=list(row["persons"] or []),
        min_score=None if np.isnan(lowest) else float(lowest),
        mean_score=None if np.isnan(mean) else float(mean),
    )


def select_for_review(
    job_uri: str,
    storage: StorageSpec,
    limit: int = DEFAULT_LIMIT,
    max_errors: int = DEFAULT_MAX_ERRORS,
    empty: EmptyPolicy = "first",
    allow_partial: bool = False,
) -> Selection:
    """The ``limit`` most uncertain ok images of a job and its first ``max_errors`` error rows.

    One pass over the annotation files, batch by batch: scores are computed per batch with
    Arrow and numpy, and only rows that beat the worst image kept so far become Python
    objects. Memory is bounded by ``limit``, ``max_errors`` and one batch. The files are
    read and checked by ``pipeline.store.job_parts``: one that cannot be read stops the review
    unless ``allow_partial`` (the selection's ``parts`` then says what was left out).
    """
    if limit < 0 or max_errors < 0:
        raise ValueError("limit and max_errors must be >= 0")
    parts = JobParts(job_uri, storage, _COLUMNS, allow_partial)
    sel = parts.run(lambda: _select(parts, limit, max_errors, empty))
    sel.parts = parts.report
    return sel


def _select(parts: JobParts, limit: int, max_errors: int, empty: EmptyPolicy) -> Selection:
    """One pass of ``select_for_review``."""
    sel = Selection(items=[], errors=[], files=len(parts.files))
    heap: list[_Kept] = []
    kinds: Counter[str] = Counter()
    for batch in parts.batches(_COLUMNS, BATCH_ROWS):
        n = batch.num_rows
        if n == 0:
            continue
        sel.rows += n
        status = batch.column("status")
        is_error = pc.fill_null(pc.equal(status, STATUS_ERROR), False).to_numpy(
            zero_copy_only=False
        )
        is_ok = pc.fill_null(pc.equal(status, STATUS_OK), False).to_numpy(zero_copy_only=False)
        lengths, lowest, mean, recovered = _person_scores(batch.column("persons"))

        # Errors: counted by kind, the first max_errors kept.
        error_idx = np.flatnonzero(is_error)
        if error_idx.size:
            sel.error_rows += int(error_idx.size)
            kind_col = batch.column("error_kind").take(pa.array(error_idx))
            kinds.update("(none)" if k is None else k for k in kind_col.to_pylist())
            room = max_errors - len(sel.errors)
            if room > 0:
                take = pa.array(error_idx[:room])
                for uri, kind, message in zip(
                    batch.column("uri").take(take).to_pylist(),
                    batch.column("error_kind").take(take).to_pylist(),
                    batch.column("error_message").take(take).to_pylist(),
                    strict=True,
                ):
                    sel.errors.append(ErrorItem(uri, kind or "(none)", message or ""))

        ok_idx = np.flatnonzero(is_ok)
        sel.ok += int(ok_idx.size)
        sel.empty += int((lengths[ok_idx] == 0).sum())
        sel.persons += int(lengths[ok_idx].sum())
        sel.recovered += recovered
        if limit == 0 or ok_idx.size == 0:
            continue
        keys = np.where(lengths > 0, np.nan_to_num(lowest, nan=0.0), _EMPTY_KEY[empty])
        if len(heap) >= limit:  # only rows at least as uncertain as the worst kept can enter
            ok_idx = ok_idx[keys[ok_idx] <= heap[0].key[0]]
            if ok_idx.size == 0:
                continue
        uris = batch.column("uri").take(pa.array(ok_idx)).to_pylist()
        candidates = sorted(
            ((float(keys[i]), uri), int(i)) for i, uri in zip(ok_idx, uris, strict=True)
        )[:limit]
        for key, i in candidates:
            if len(heap) < limit:
                heapq.heappush(heap, _Kept(key, _item(batch, i, lowest[i], mean[i])))
            elif key < heap[0].key:
                heapq.heapreplace(heap, _Kept(key, _item(batch, i, lowest[i], mean[i])))
            else:
                break  # candidates are sorted: none of the rest gets in either
    sel.items = [kept.item for kept in sorted(heap, key=lambda k: k.key)]
    sel.errors_by_kind = dict(sorted(kinds.items()))
    if sel.rows == 0 and not sel.warnings:
        sel.warnings.append("the annotation files hold no rows")
    return sel


@dataclass(frozen=True)
class Tile:
    """One thumbnail as written: its file (relative to the gallery) and size, or why the
    image could not be shown (the file then holds a placeholder saying so)."""

    item: ReviewItem
    rank: int
    thumb: str
    width: int
    height: int
    unavailable: str | None = None
    note: str | None = None


def render_thumbnail(
    item: ReviewItem,
    storage: StorageSpec,
    side: int = DEFAULT_THUMB_SIDE,
    threshold: float = KEYPOINT_THRESHOLD,
) -> tuple[bytes, tuple[int, int], str | None, str | None]:
    """JPEG bytes of ``item``'s picture with its poses, its size, why it is a placeholder
    (None when it is the picture), and a note (e.g. the image changed size since the job).

    Drawn at twice the final size and shrunk, for smooth lines. Never raises: an image that
    cannot be read or drawn becomes a placeholder stating the reason.
    """
    note = None
    try:
        fs, path = image_filesystem_for(item.uri, storage)
        decoded = fetch_and_decode(fs, path, DecodeSpec(max_side=2 * side, retries=2))
        if isinstance(decoded, ImageError):
            reason = f"{decoded.kind}: {decoded.message}"
        else:
            big = Image.fromarray(decoded.rgb)
            factor = 2 * side / max(big.size)
            big = big.resize(
                (max(1, round(big.width * factor)), max(1, round(big.height * factor))),
                Image.Resampling.BILINEAR,
            )
            width = item.width or decoded.width
            if (
                item.width
                and item.height
                and (decoded.width, decoded.height)
                != (
                    item.width,
                    item.height,
                )
            ):
                note = (
                    f"the image is {decoded.width}x{decoded.height} now, "
                    f"{item.width}x{item.height} when annotated"
                )
            drawn = draw_poses(
                big, item.persons, big.width / width, threshold=threshold, line_scale=2.0
            )
            thumb = drawn.resize(
                (max(1, round(drawn.width / 2)), max(1, round(drawn.height / 2))),
                Image.Resampling.LANCZOS,
            )
            return _jpeg(thumb), thumb.size, None, note
    except Exception as exc:  # a bug or an odd image must cost one tile, not the gallery
        reason = f"internal: {type(exc).__name__}: {exc}"
    size = (side, round(side * 3 / 4))
    return _jpeg(placeholder(size, "image unavailable", reason)), size, reason, note


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


def _replaced_by_review(name: str) -> bool:
    """The entries of the gallery folder that ``review`` writes."""
    return name == "index.html" or name.startswith("thumbs/")


@dataclass(frozen=True)
class GalleryResult:
    """What ``build_gallery`` wrote."""

    index_uri: str
    selection: Selection
    tiles: list[Tile]

    @property
    def unavailable(self) -> int:
        return sum(t.unavailable is not None for t in self.tiles)


def build_gallery(
    job_uri: str,
    out_uri: str,
    storage: StorageSpec,
    *,
    limit: int = DEFAULT_LIMIT,
    max_errors: int = DEFAULT_MAX_ERRORS,
    side: int = DEFAULT_THUMB_SIDE,
    threshold: float = KEYPOINT_THRESHOLD,
    empty: EmptyPolicy = "first",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_partial: bool = False,
    replace_symlink: bool = False,
) -> GalleryResult:
    """Select, fetch, draw and write the review gallery of the job at ``job_uri``.

    ``out_uri`` is a local folder or any fsspec URI, checked before the job is read
    (``pipeline.store.outputs``); every file is written whole, ``index.html`` last, so it never
    names a thumbnail that is not there yet. ``progress(done, total)`` is called as
    thumbnails are written.
    """
    check_output_folder(out_uri, storage, _replaced_by_review, ("thumbs",),
                        replace_symlink=replace_symlink)  # fmt: skip
    selection = select_for_review(job_uri, storage, limit, max_errors, empty, allow_partial)
    fs, root = filesystem_for(out_uri, storage)
    with storage_errors(out_uri, "write"):
        fs.makedirs(f"{root}/thumbs", exist_ok=True)

    def make(rank_item: tuple[int, ReviewItem]) -> Tile:
        rank, item = rank_item
        data, (w, h), unavailable, note = render_thumbnail(item, storage, side, threshold)
        name = f"thumbs/{rank:05d}-{item.image_id:016x}.jpg"
        write_atomic(join_uri(out_uri, name), data, storage, content_type="image/jpeg",
                     replace_symlink=replace_symlink)  # fmt: skip
        return Tile(item, rank, name, w, h, unavailable, note)

    tiles: list[Tile] = []
    total = len(selection.items)
    with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
        for tile in pool.map(make, enumerate(selection.items, start=1)):
            tiles.append(tile)
            if progress is not None:
                progress(len(tiles), total)
    page = render_html(job_uri, selection, tiles, limit=limit, max_errors=max_errors,
                       threshold=threshold, empty=empty)  # fmt: skip
    write_atomic(join_uri(out_uri, "index.html"), page, storage,
                 content_type="text/html; charset=utf-8", replace_symlink=replace_symlink)  # fmt: skip
    local = uri_scheme(out_uri) in LOCAL_SCHEMES
    return GalleryResult(f"{root}/index.html" if local else join_uri(out_uri, "index.html"),
                         selection, tiles)  # fmt: skip


# --- the page -------------------------------------------------------------------------------

# The page's style and script live beside this module (``review_page/``, shipped as package
# data) and are inlined into every page, so the gallery stays one self-contained file.
# review.js reads the state from the URL hash (#sort=confident&status=recovered&max=0.5), so a
# view can be linked and bookmarked; the controls only rewrite the hash.
PAGE_ASSETS = "assets"


def _asset(name: str) -> str:
    """The text of ``review_page/<name>`` (from the installed package or the source tree)."""
    return (resources.files("pipeline.review") / PAGE_ASSETS / name).read_text(encoding="utf-8")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score_class(score: float | None) -> str:
    if score is None:
        return "low"
    return "low" if score < 0.5 else "mid" if score < 0.75 else "high"


def _tile_html(tile: Tile) -> str:
    item = tile.item
    tags = []
    status = ["persons"] if item.persons else ["empty"]
    if item.recovered:
        status.append("recovered")
    if tile.unavailable is not None:
        status.append("unavailable")
    if item.persons:
        score_text = (
            f'<span class="score {_score_class(item.min_score)}">{item.min_score:.2f}</span> '
            f"lowest, {item.mean_score:.2f} mean"
        )
        people = f"{len(item.persons)} person{'s' if len(item.persons) != 1 else ''}"
        if item.recovered:
            tags.append(f'<span class="tag rec">{item.recovered} recovered</span>')
    else:
        score_text = '<span class="score low">—</span>'
        people = ""
        tags.append('<span class="tag empty">no person found</span>')
    if tile.unavailable is not None:
        tags.append('<span class="tag unav">image unavailable</span>')
    size = f"{item.width}×{item.height}" if item.width and item.height else ""
    name = item.uri.rstrip("/").rsplit("/", 1)[-1]
    alt = f"{name}: {len(item.persons)} persons drawn"
    lines = [
        f"<b>#{tile.rank}</b> · score {score_text}"
        + (f" · {people}" if people else "")
        + "".join(tags),
        f'<span class="uri" title="{_esc(item.uri)}">{_esc(name)}</span>'
        + (f" · {size}" if size else ""),
    ]
    if tile.unavailable is not None:
        lines.append(f'<span class="bad">{_esc(tile.unavailable)}</span>')
    if tile.note:
        lines.append(f'<span class="note">{_esc(tile.note)}</span>')
    score_attr = "" if item.min_score is None else f"{item.min_score:.4f}"
    caption = "<br>".join(lines)
    return (
        f'<figure class="tile" id="t{tile.rank:05d}" data-rank="{tile.rank}" '
        f'data-uri="{_esc(item.uri)}" data-score="{score_attr}" '
        f'data-status="{" ".join(status)}">'
        f'<img src="{_esc(tile.thumb)}" width="{tile.width}" height="{tile.height}" '
        f'alt="{_esc(alt)}" decoding="async">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_html(
    job_uri: str,
    selection: Selection,
    tiles: list[Tile],
    *,
    limit: int,
    max_errors: int,
    threshold: float = KEYPOINT_THRESHOLD,
    empty: EmptyPolicy = "first",
) -> str:
    """The gallery page: summary, legend, controls, tiles and the error table."""
    sel = selection
    job_name = job_uri.rstrip("/").rsplit("/", 1)[-1] or job_uri
    unavailable = sum(t.unavailable is not None for t in tiles)
    summary = (
        f"{sel.rows:,} images in {sel.files} annotation file{'s' if sel.files != 1 else ''}: "
        f"{sel.ok:,} ok ({sel.persons:,} persons, {sel.recovered:,} of them recovered; "
        f"{sel.empty:,} images without a person), {sel.error_rows:,} errors."
    )
    shown = (
        f"Showing the {len(tiles):,} most uncertain of {sel.ok:,} ok images"
        + (f" (at most {limit:,}: <code>--limit</code>)" if sel.ok > len(tiles) else "")
        + f". Uncertainty = the lowest pose score among an image's persons; images without a "
        f"person rank {'first' if empty == 'first' else 'last'}."
        + (f" {unavailable} could not be read and show why instead." if unavailable else "")
    )
    legend = (
        "<b>Box</b> solid: detected person, <b>dashed</b> + “recovered”: recovered by "
        "coarse-pose filtering; label = person number and pose score. <b>Dots</b> grow with "
        f"the keypoint score; hollow, faded dots and limbs score below {threshold:g}. "
        "One colour per person."
    )
    kinds = sorted(sel.errors_by_kind)
    errors_html = ""
    if sel.error_rows:
        rows = "".join(
            f'<tr data-kind="{_esc(e.kind)}"><td>{_esc(e.kind)}</td>'
            f'<td class="uri">{_esc(e.uri)}</td><td>{_esc(e.message)}</td></tr>'
            for e in sorted(sel.errors, key=lambda e: (e.kind, e.uri))
        )
        by_kind = ", ".join(f"{_esc(k)} {n:,}" for k, n in sel.errors_by_kind.items())
        capped = (
            f"Listing the first {len(sel.errors):,} of {sel.error_rows:,} error rows "
            f"(at most {max_errors:,}: <code>--max-errors</code>)."
            if sel.error_rows > len(sel.errors)
            else f"All {sel.error_rows:,} error rows."
        )
        options = "".join(f'<option value="{_esc(k)}">{_esc(k)}</option>' for k in kinds)
        errors_html = (
            f'<section id="errors"><h2>Errors ({sel.error_rows:,})</h2>'
            f'<p class="summary">{capped} By kind: {by_kind}.</p>'
            f'<p class="controls"><label>Kind <select id="kind"><option value="all">all'
            f"</option>{options}</select></label></p>"
            "<table><thead><tr><th>kind</th><th>uri</th><th>message</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>"
        )
    notes = [*sel.warnings, sel.parts.non_finite_note()]
    warnings = "".join(f'<p class="summary bad">warning: {_esc(w)}</p>' for w in notes if w)
    partial = sel.parts.partial_note()
    if partial:
        warnings = f'<p class="summary bad" id="partial"><b>{_esc(partial)}</b></p>' + warnings
    tiles_html = "\n".join(_tile_html(t) for t in tiles)
    if not tiles:
        tiles_html = '<p class="summary">No ok image to review.</p>'
    meta = strict_json({"job": job_uri, "limit": limit, "empty": empty, **sel.parts.record()})
    css, js = _asset("review.css"), _asset("review.js")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="detpose review">
<title>DetPose review: {_esc(job_name)}{" (PARTIAL)" if partial else ""}</title>
<style>
{css}</style>
</head>
<body data-review="{_esc(meta)}">
<header>
<h1>DetPose review: {_esc(job_name)}</h1>
<p class="summary">{_esc(job_uri)}</p>
<p class="summary">{summary}</p>
<p class="summary">{shown}</p>
<p class="legend">{legend}</p>
{warnings}
<div class="controls">
<label>Sort <select id="sort">
<option value="uncertain">most uncertain first</option>
<option value="confident">most confident first</option>
<option value="uri">by URI</option>
</select></label>
<label>Show <select id="status">
<option value="all">all</option>
<option value="persons">with persons</option>
<option value="recovered">with a recovered person</option>
<option value="empty">no person found</option>
<option value="unavailable">image unavailable</option>
</select></label>
<label>Lowest score ≤ <input type="range" id="max" min="0" max="1" step="0.01" value="1">
<output id="maxv">1.00</output></label>
<span id="count"></span>
</div>
</header>
<main id="gallery">
{tiles_html}
</main>
{errors_html}
<script>
{js}</script>
</body>
</html>
"""

"""Synthetic multi-person scenes: placement by crowd level, rendering, id buffer, visibility.

A scene is painted back to front: a textured background with clutter, then each figure's parts
(``model.synth.figures``). Beside the RGB image an integer id buffer records which person owns
each pixel after painting; keypoint visibility, the visible silhouettes and the crowd index all
come from it. Coordinates are image pixels, pixel ``i`` centred at ``i`` (docs/coordinates.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from model.codecs.coords import nearest_pixel
from model.keypoints import NUM_KEYPOINTS
from model.synth.figures import Figure, pose_figure, sample_body, sample_pose, shift_figure


@dataclass(frozen=True)
class CrowdLevel:
    """How many people a level's images hold and the crowd index range they must fall in."""

    name: str
    code: int  # part of each image's seed, so levels draw different scenes
    people: tuple[int, int]  # inclusive
    ci_range: tuple[float, float]  # [low, high)
    spread: float  # first try's horizontal spread of the persons, as a fraction of the image


SYNTH_LEVELS: dict[str, CrowdLevel] = {
    "low": CrowdLevel("low", 0, (1, 3), (0.0, 0.1), 1.0),
    "medium": CrowdLevel("medium", 1, (2, 5), (0.1, 0.5), 0.6),
    "high": CrowdLevel("high", 2, (3, 7), (0.5, float("inf")), 0.35),
}
MIXED = "mixed"
MIXED_CODE = 3
CROWD_CHOICES: tuple[str, ...] = (*SYNTH_LEVELS, MIXED)
MIN_SIZE = 64
# Memory grows with the square of the size: one 4096 px scene peaks near 0.9 GB (100,000 px
# grew past 6.5 GB); 2048 px takes 0.26 GB.
MAX_SIZE = 4096
# A set's annotations stay in memory until its annotations.json is written.
MAX_IMAGES = 100_000
MAX_ATTEMPTS = 60  # placements tried per image before the closest one is kept
_NEW_PEOPLE_EVERY = 12  # some sets of persons cannot reach a range wherever they stand
HEIGHT_RANGE = (0.35, 0.95)  # person height as a fraction of the image size
_PELVIS_FROM_TOP = 0.47  # pelvis height below the head top, as a fraction of body height
_OCCLUDED_NEIGHBOURS = 5  # of the 3 x 3 pixels round a keypoint, this many others' hide it

_SKIN_LIGHT = np.array([236.0, 204.0, 178.0])
_SKIN_DARK = np.array([84.0, 56.0, 40.0])
_HAIR = np.array(
    [[25, 20, 18], [70, 45, 25], [150, 105, 55], [205, 175, 115], [140, 140, 140], [110, 40, 20]],
    dtype=np.float64,
)
_TEXTURES = ("solid", "stripes", "checks", "noise")
_NOISE_TILE_SIZE = 128  # clothes take their noise from this tile, whatever the image size


class PersonMasks(NamedTuple):
    """One figure rasterised: ``labels`` ``[h, w]`` uint8 with its top-left pixel at ``origin``
    ``(x, y)`` (may lie outside the image); ``k + 1`` where part ``k`` (painting order) is on
    top, 0 where the figure is absent."""

    origin: tuple[int, int]
    labels: np.ndarray

    def shifted(self, offset_xy: tuple[int, int]) -> PersonMasks:
        """The same raster moved by whole pixels."""
        return PersonMasks(
            (self.origin[0] + offset_xy[0], self.origin[1] + offset_xy[1]), self.labels
        )

    def clipped(self, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """Image rows/columns ``(ys, xs)`` the raster covers inside an ``S × S`` image, and that
        part of ``labels``."""
        (x, y), (h, w) = self.origin, self.labels.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
        if x1 <= x0 or y1 <= y0:
            return (slice(0, 0), slice(0, 0)), self.labels[:0, :0]
        return (slice(y0, y1), slice(x0, x1)), self.labels[y0 - y : y1 - y, x0 - x : x1 - x]


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered image and its exact ground truth.

    Attributes:
        image: ``[S, S, 3]`` uint8 RGB.
        ids: ``[S, S]`` int16, the index of the person owning each pixel, -1 for background.
        kpts_xyv: ``[N, 17, 3]`` every drawn person, back to front; ``v`` 2 visible, 1 hidden
            (by a person in front, or a face point by its own head), 0 outside the image
            (then ``x = y = 0``).
        boxes_xyxy: ``[N, 4]`` tight box of each visible silhouette (pixel edges); 0 if none.
        areas: ``[N]`` visible silhouette pixels. Persons with 0 are not annotated.
        level: the crowd level the image was drawn for.
        crowd_index: CrowdPose's crowd index over the annotated persons.
        in_range: whether ``crowd_index`` falls in the level's range (false only when every
            try missed; the closest try is kept).
    """

    image: np.ndarray
    ids: np.ndarray
    kpts_xyv: np.ndarray
    boxes_xyxy: np.ndarray
    areas: np.ndarray
    level: str
    crowd_index: float
    in_range: bool


class _Layout(NamedTuple):
    figures: list[Figure]
    masks: list[PersonMasks]
    ids: np.ndarray
    kpts_xyv: np.ndarray
    boxes_xyxy: np.ndarray
    areas: np.ndarray
    crowd_index: float


def crowd_index(boxes_xyxy: np.ndarray, kpts_xyv: np.ndarray) -> float:
    """CrowdPose's crowd index: ``(1/n) Σ_i N_b(i) / N_a(i)``.

    ``N_a(i)`` counts person ``i``'s labelled keypoints (``v > 0``), ``N_b(i)`` the labelled
    keypoints of the other persons inside ``i``'s box (edges included). Persons without a
    labelled keypoint are left out of the mean; no person at all gives 0.

    Args:
        boxes_xyxy: ``[N, 4]`` person boxes ``(x1, y1, x2, y2)``.
        kpts_xyv: ``[N, K, 3]`` keypoints ``(x, y, v)``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    kpts = np.asarray(kpts_xyv, dtype=np.float64)
    if kpts.shape[0] != boxes.shape[0]:
        raise ValueError(f"got {boxes.shape[0]} boxes but {kpts.shape[0]} keypoint sets")
    if boxes.shape[0] == 0:
        return 0.0
    labelled = kpts[..., 2] > 0  # [N, K]
    x, y = kpts[None, ..., 0], kpts[None, ..., 1]  # [1, N, K]
    b = boxes[:, None, None, :]  # [N, 1, 1, 4]
    inside = (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])
    inside &= labelled[None]
    inside[np.arange(len(boxes)), np.arange(len(boxes))] = False  # own keypoints do not count
    n_a = labelled.sum(axis=1)
    n_b = inside.sum(axis=(1, 2))
    counted = n_a > 0
    return float(np.mean(n_b[counted] / n_a[counted])) if counted.any() else 0.0


def draw_masks(figure: Figure) -> PersonMasks:
    """Rasterise ``figure``'s parts, in painting order, over the figure's own bounding box."""
    points = np.concatenate([p for part in figure.parts for p in part.polygons])
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    canvas = Image.new("L", (int(x1 - x0), int(y1 - y0)))
    draw = ImageDraw.Draw(canvas)
    for label, part in enumerate(figure.parts, start=1):
        for polygon in part.polygons:
            draw.polygon((polygon - (x0, y0)).ravel().tolist(), fill=label)
    return PersonMasks((int(x0), int(y0)), np.asarray(canvas))


def id_buffer(person_masks: list[PersonMasks], size: int) -> np.ndarray:
    """``[S, S]`` int16: the last person (in list order) to paint each pixel, -1 for none."""
    ids = np.full((size, size), -1, dtype=np.int16)
    for person, masks in enumerate(person_masks):
        region, labels = masks.clipped(size)
        ids[region][labels > 0] = person
    return ids


def keypoint_visibility(
    kpts_xy: np.ndarray, face_hidden: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """COCO ``(x, y, v)`` for every person's keypoints from the id buffer.

    ``v = 2`` when the keypoint's pixel belongs to its own person and fewer than 5 of the 3 × 3
    pixels round it belong to other persons (a point peeking through a one-pixel gap counts
    as hidden); ``v = 1`` inside the image otherwise, or for a face point its own head hides;
    ``v = 0`` outside the image, with ``x = y = 0``.

    Args:
        kpts_xy: ``[N, K, 2]`` keypoints; person ``n`` is id ``n`` in ``ids``.
        face_hidden: ``[N, K]`` bool, self-occluded face points.
        ids: ``[S, S]`` id buffer (:func:`id_buffer`).

    Returns:
        ``[N, K, 3]`` float64.
    """
    size_y, size_x = ids.shape
    px = nearest_pixel(kpts_xy)  # [N, K, 2]
    inside = (px[..., 0] >= 0) & (px[..., 0] < size_x) & (px[..., 1] >= 0) & (px[..., 1] < size_y)
    person = np.arange(kpts_xy.shape[0])[:, None]
    cx, cy = np.clip(px[..., 0], 0, size_x - 1), np.clip(px[..., 1], 0, size_y - 1)
    own = ids[cy, cx] == person
    others = np.zeros(cx.shape, dtype=np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            nb = ids[np.clip(cy + dy, 0, size_y - 1), np.clip(cx + dx, 0, size_x - 1)]
            others += (nb >= 0) & (nb != person)
    visible = own & (others < _OCCLUDED_NEIGHBOURS) & ~face_hidden
    v = np.where(inside, np.where(visible, 2, 1), 0)
    xy = np.where(inside[..., None], kpts_xy, 0.0)
    return np.concatenate([xy, v[..., None].astype(np.float64)], axis=-1)


def visible_boxes(
    ids: np.ndarray, person_masks: list[PersonMasks]
) -> tuple[np.ndarray, np.ndarray]:
    """Tight box ``[N, 4]`` (pixel edges, xyxy) and pixel count ``[N]`` of each visible silhouette."""
    boxes = np.zeros((len(person_masks), 4))
    areas = np.zeros(len(person_masks), dtype=np.int64)
    for person, masks in enumerate(person_masks):
        (ys, xs), _ = masks.clipped(ids.shape[0])
        mine = ids[ys, xs] == person
        areas[person] = mine.sum()
        if areas[person]:
            rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
            x0, y0 = xs.start, ys.start
            boxes[person] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
    return boxes, areas


def _layout(figures: list[Figure], masks: list[PersonMasks], size: int) -> _Layout:
    """Everything but the colours: id buffer, keypoints, boxes, crowd index."""
    ids = id_buffer(masks, size)
    if figures:
        kpts_xy = np.stack([f.kpts_xy for f in figures])
        hidden = np.stack([f.face_hidden for f in figures])
    else:
        kpts_xy, hidden = np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros((0, NUM_KEYPOINTS), bool)
    kpts_xyv = keypoint_visibility(kpts_xy, hidden, ids)
    boxes, areas = visible_boxes(ids, masks)
    annotated = areas > 0
    ci = crowd_index(boxes[annotated], kpts_xyv[annotated])
    return _Layout(figures, masks, ids, kpts_xyv, boxes, areas, ci)


class _Person(NamedTuple):
    figure: Figure  # pelvis at (0, 0)
    masks: PersonMasks
    height: float


def _sample_people(rng: np.random.Generator, level: CrowdLevel, size: int) -> list[_Person]:
    """The persons of one ``level`` scene, posed and rasterised at the origin."""
    n = int(rng.integers(level.people[0], level.people[1] + 1))
    people = []
    for height in size * rng.uniform(*HEIGHT_RANGE, n):
        figure = pose_figure(sample_body(rng, height), sample_pose(rng), (0.0, 0.0))
        people.append(_Person(figure, draw_masks(figure), float(height)))
    return people


def _place_people(
    rng: np.random.Generator, people: list[_Person], size: int, spread: float
) -> tuple[list[Figure], list[PersonMasks]]:
    """Move the persons to random places in a random depth order (back to front).

    Pelvis x positions are stratified over ``spread`` × the image width round its centre, so
    a small spread piles people onto each other. Whole-pixel moves keep each rasterisation.
    """
    n = len(people)
    heights = np.array([p.height for p in people])
    slots = (rng.permutation(n) + rng.uniform(0.2, 0.8, n)) / n
    xs = size * (0.5 + spread * (slots - 0.5))
    # Head tops from 15 % of a height above the frame to where the feet just leave it.
    tops = rng.uniform(-0.15 * heights, np.maximum(-0.15 * heights, size - 0.85 * heights))
    pelvis = np.rint(np.stack([xs, tops + _PELVIS_FROM_TOP * heights], axis=1)).astype(int)
    figures, masks = [], []
    for i in rng.permutation(n):
        offset = (int(pelvis[i, 0]), int(pelvis[i, 1]))
        figures.append(shift_figure(people[i].figure, offset))
        masks.append(people[i].masks.shifted(offset))
    return figures, masks


@functools.lru_cache(maxsize=8)
def _noise_tile(size: int) -> np.ndarray:
    """``[2S, 2S, 3]`` int16 uniform noise in [-24, 24] in 2 × 2 blocks, the same in every run.

    Blocks, not single pixels: per-pixel noise made PNG encoding 4 × slower, and the networks
    see the images at half size or less anyway.
    """
    noise = np.random.default_rng(size).integers(-24, 25, (size, size, 3), dtype=np.int16)
    return noise.repeat(2, axis=0).repeat(2, axis=1)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[S, S, 3]`` uint8: a colour gradient, smooth and fine noise, and 2–7 clutter shapes."""
    # Gradient and smooth blotches on a coarse grid; bilinear upsampling keeps the gradient linear.
    cells = int(rng.integers(3, 9))
    grid = np.linspace(0.0, 1.0, cells)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = (grid[None, :] * np.cos(angle) + grid[:, None] * np.sin(angle) + 1.0) / 2.0
    c0, c1 = rng.uniform(0.0, 255.0, (2, 3))
    coarse = c0 + t[..., None] * (c1 - c0) + rng.normal(0.0, 30.0, (cells, cells, 3))
    coarse_img = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    image = np.asarray(coarse_img.resize((size, size), Image.BILINEAR), dtype=np.int16)
    # Fine noise: a window of a fixed noise tile, cheaper than fresh per-pixel draws.
    ox, oy = rng.integers(0, size, 2)
    image = image + _noise_tile(size)[oy : oy + size, ox : ox + size] * int(rng.integers(0, 9)) // 8
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 8))):
        _draw_clutter(rng, draw, size)
    return np.array(canvas)


def _draw_clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """One shape that is not a person: box, ellipse, line or irregular blob."""
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cx, cy = rng.uniform(-0.1, 1.1, 2) * size
    w, h = rng.uniform(0.03, 0.4, 2) * size
    kind = int(rng.integers(4))
    if kind == 0:
        draw.rectangle((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=colour)
    elif kind == 1:
        draw.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=colour)
    elif kind == 2:
        draw.line((cx - w, cy - h, cx + w, cy + h), fill=colour, width=int(rng.integers(1, 7)))
    else:
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, n))
        radii = rng.uniform(0.3, 1.0, n) * w / 2
        xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        draw.polygon(xy.ravel().tolist(), fill=colour)


@dataclass(frozen=True)
class _Style:
    kind: str
    colours: np.ndarray  # [2, 3] float
    period: float
    angle: float
    noise: float


def _sample_style(
    rng: np.random.Generator, base: np.ndarray | None = None, kinds=_TEXTURES
) -> _Style:
    first = rng.uniform(0.0, 255.0, 3) if base is None else base
    second = np.clip(first + rng.uniform(-110.0, 110.0, 3), 0, 255) if base is None else base * 0.8
    return _Style(
        kind=kinds[int(rng.integers(len(kinds)))],
        colours=np.stack([first, second]),
        period=float(rng.uniform(3.0, 12.0)),
        angle=float(rng.uniform(0.0, np.pi)),
        noise=float(rng.uniform(5.0, 35.0)),
    )


def _texture(rng: np.random.Generator, style: _Style, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``[M, 3]`` uint8 fill of the pixels ``(xs, ys)``; patterns are laid in image coordinates."""
    if style.kind == "stripes":
        phase = (xs * np.cos(style.angle) + ys * np.sin(style.angle)) / style.period
        pick = np.floor(phase).astype(np.int64) % 2
    elif style.kind == "checks":
        pick = (xs // style.period + ys // style.period).astype(np.int64) % 2
    else:
        pick = np.zeros(xs.shape, dtype=np.int64)
    fill = style.colours[pick]
    if style.kind == "noise":
        tile = _noise_tile(_NOISE_TILE_SIZE)
        ox, oy = rng.integers(0, len(tile), 2)
        fill = fill + tile[(ys + oy) % len(tile), (xs + ox) % len(tile)] * (style.noise / 24.0)
    return np.clip(fill, 0, 255).astype(np.uint8)


def _lower_neighbour(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of a lower label: the outline of each part where it lies on
    the background or on a part painted before it. The crop's border is not an outline."""
    lower = np.zeros(labels.shape, dtype=bool)
    lower[1:] |= labels[:-1] < labels[1:]
    lower[:-1] |= labels[1:] < labels[:-1]
    lower[:, 1:] |= labels[:, :-1] < labels[:, 1:]
    lower[:, :-1] |= labels[:, 1:] < labels[:, :-1]
    return lower


def _paint_face(
    canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, figure: Figure, hair: np.ndarray
) -> None:
    """Hair on the back and top of the head, dark eyes and a shaded nose where they face us.

    ``(xs, ys)`` are the head's visible pixels.
    """
    d = np.stack([xs, ys], axis=1) - figure.head_centre
    side_up = np.linalg.solve(figure.head_axes.T, d.T).T  # coefficients on the head's semi-axes
    r2 = (side_up**2).sum(axis=1)
    depth = np.sqrt(np.clip(1.0 - r2, 0.0, None))  # sphere model, toward the camera
    if figure.back_view:
        depth = -depth
    facing = side_up[:, 0] * np.sin(figure.head_yaw) + depth * np.cos(figure.head_yaw)
    is_hair = (r2 <= 1.0) & ((facing < 0.0) | (side_up[:, 1] > 0.55))  # r2 > 1: the neck
    canvas[ys[is_hair], xs[is_hair]] = hair.astype(np.uint8)
    radius2 = max(0.8, 0.15 * float(np.hypot(*figure.head_axes[0]))) ** 2
    for k, shade in ((1, 0.2), (2, 0.2), (0, 0.7)):  # eyes, nose
        if figure.face_hidden[k]:
            continue
        near = (xs - figure.kpts_xy[k, 0]) ** 2 + (ys - figure.kpts_xy[k, 1]) ** 2 <= radius2
        canvas[ys[near], xs[near]] = (canvas[ys[near], xs[near]] * shade).astype(np.uint8)


def _paint_person(
    rng: np.random.Generator, canvas: np.ndarray, figure: Figure, masks: PersonMasks
) -> None:
    """Fill each part of one figure with the person's textures; a dark edge outlines each part."""
    (x0, y0), labels = masks
    skin = (
        _SKIN_LIGHT + rng.uniform(0.0, 1.0) * (_SKIN_DARK - _SKIN_LIGHT) + rng.uniform(-12, 12, 3)
    )
    styles = {
        "skin": _sample_style(rng, np.clip(skin, 0, 255), kinds=("solid", "noise")),
        "shirt": _sample_style(rng),
        "trousers": _sample_style(rng),
        "shoes": _sample_style(rng, rng.uniform(10.0, 90.0, 3), kinds=("solid",)),
    }
    hair = _HAIR[int(rng.integers(len(_HAIR)))]
    ys, xs = np.nonzero(labels)
    label = labels[ys, xs]
    # Same-coloured parts overlapping (an arm across the shirt) stay apart by their outlines.
    outline = _lower_neighbour(labels)[ys, xs]
    xs, ys = xs + x0, ys + y0
    size = canvas.shape[0]
    inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
    xs, ys, label, outline = xs[inside], ys[inside], label[inside], outline[inside]
    kinds = list(styles)
    # Parts of one kind share a texture, so fill kind by kind (fewer, larger array operations).
    kind_of_label = np.array([0] + [kinds.index(p.kind) for p in figure.parts])[label]
    for k, style in enumerate(styles.values()):
        mine = kind_of_label == k
        edge, inner = mine & outline, mine & ~outline
        canvas[ys[inner], xs[inner]] = _texture(rng, style, xs[inner], ys[inner])
        canvas[ys[edge], xs[edge]] = (style.colours[0] * 0.45).astype(np.uint8)
    head = label == 1 + next(i for i, p in enumerate(figure.parts) if p.name == "head")
    _paint_face(canvas, xs[head], ys[head], figure, hair)


def paint_scene(
    rng: np.random.Generator, figures: list[Figure], person_masks: list[PersonMasks], size: int
) -> np.ndarray:
    """``[S, S, 3]`` uint8: the background, then the figures back to front."""
    canvas = render_background(rng, size)
    for figure, masks in zip(figures, person_masks, strict=True):
        _paint_person(rng, canvas, figure, masks)
    return canvas


def render_scene(
    rng: np.random.Generator, figures: list[Figure], size: int, level: str = "custom"
) -> Scene:
    """A scene of given figures (back to front), e.g. a hand-built test case."""
    layout = _layout(figures, [draw_masks(f) for f in figures], size)
    return _scene(rng, layout, size, level, in_range=True)


def _scene(
    rng: np.random.Generator, layout: _Layout, size: int, level: str, in_range: bool
) -> Scene:
    image = paint_scene(rng, layout.figures, layout.masks, size)
    return Scene(
        image=image, ids=layout.ids, kpts_xyv=layout.kpts_xyv, boxes_xyxy=layout.boxes_xyxy,
        areas=layout.areas, level=level, crowd_index=layout.crowd_index, in_range=in_range,
    )  # fmt: skip


def check_scene_args(crowd: str, size: int) -> None:
    """Raise ``ValueError`` naming the bad value of a crowd level or image size."""
    if crowd not in CROWD_CHOICES:
        raise ValueError(f"got {crowd!r} for crowd; expected one of {', '.join(CROWD_CHOICES)}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"got {size} for size; expected {MIN_SIZE} to {MAX_SIZE} pixels")


def make_scene(seed: int, crowd: str, index: int, size: int) -> Scene:
    """Image ``index`` of a synthetic set; a function of ``(seed, crowd, index, size)`` only.

    Placements are drawn until the image's crowd index falls in its level's range, at most
    ``MAX_ATTEMPTS`` times; each miss widens or narrows the horizontal spread of the persons,
    and every ``_NEW_PEOPLE_EVERY`` misses new persons are drawn. ``mixed`` draws the level of
    each image uniformly.
    """
    check_scene_args(crowd, size)
    code = MIXED_CODE if crowd == MIXED else SYNTH_LEVELS[crowd].code
    rng = np.random.default_rng([seed, code, index])
    level = (
        SYNTH_LEVELS[str(rng.choice(list(SYNTH_LEVELS)))] if crowd == MIXED else SYNTH_LEVELS[crowd]
    )
    low, high = level.ci_range
    spread = level.spread
    best, best_miss = None, np.inf
    for attempt in range(MAX_ATTEMPTS):
        if attempt % _NEW_PEOPLE_EVERY == 0:
            people = _sample_people(rng, level, size)
            spread = level.spread
        layout = _layout(*_place_people(rng, people, size, spread), size)
        ci = layout.crowd_index
        miss = 0.0 if low <= ci < high else max(low - ci, ci - high, 1e-9)
        if best is None or miss < best_miss:
            best, best_miss = layout, miss
        if miss == 0.0:
            break
        spread = float(np.clip(spread * (0.8 if ci < low else 1.25), 0.05, 1.2))
    return _scene(rng, best, size, level.name, in_range=best_miss == 0.0)

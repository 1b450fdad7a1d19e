"""An articulated 2-D figure in the COCO-17 layout: proportions, joint angles, keypoints, parts.

Person frame: y points down, +x is the person's own left (the image's right when the person
faces the camera), the pelvis centre is the origin. Angles are radians; a segment at angle 0
points straight down and a positive angle turns it toward +x. :func:`pose_figure` maps the
person frame to the image: rotation about the pelvis, a mirror for a back view, a translation.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from model.keypoints import NUM_KEYPOINTS

# Segment lengths as fractions of body height (after Drillis & Contini's table).
_LENGTHS = {
    "head_rx": 0.05, "head_ry": 0.065, "neck": 0.045, "torso": 0.29, "shoulders": 0.22,
    "hips": 0.15, "upper_arm": 0.17, "forearm": 0.15, "thigh": 0.24, "shank": 0.24,
    "hand": 0.03, "foot": 0.045,
}  # fmt: skip
LENGTH_VARIATION = 0.10  # each length of each person varies by up to ±10 %
# Limb widths (start, end) as fractions of body height, before the person's build factor.
_WIDTHS = {
    "upper_arm": (0.055, 0.045), "forearm": (0.045, 0.035),
    "thigh": (0.09, 0.065), "shank": (0.065, 0.045), "neck": (0.04, 0.04),
}  # fmt: skip
_TORSO_SHOULDER_PAD = 0.025  # torso outline beyond the shoulder joints
_TORSO_HIP_PAD = 0.045  # ... beyond the hip joints
_TORSO_BELOW_HIPS = 0.04  # so the hip keypoints lie inside the torso, not on its edge
_TORSO_ABOVE_SHOULDERS = 0.02

# Face keypoints on the head: azimuth (0 = face centre, + toward the person's left) and
# elevation (+ up), in radians, for nose, left eye, right eye, left ear, right ear.
_FACE_AZIMUTH = np.array([0.0, 0.45, -0.45, 1.5, -1.5])
_FACE_ELEVATION = np.array([-0.2, 0.2, 0.2, 0.05, 0.05])
_FACE_RADIUS = 0.9  # face points sit just inside the head outline so their pixel is the head's
_HIDDEN_DEPTH = -0.1  # a face point further behind the head's silhouette plane is self-occluded

_DEG = np.pi / 180.0
# COCO-17 indices.
_NOSE, _L_EYE, _R_EYE, _L_EAR, _R_EAR = 0, 1, 2, 3, 4
_L_SH, _R_SH, _L_EL, _R_EL, _L_WR, _R_WR = 5, 6, 7, 8, 9, 10
_L_HIP, _R_HIP, _L_KN, _R_KN, _L_AN, _R_AN = 11, 12, 13, 14, 15, 16


@dataclass(frozen=True)
class Body:
    """One person's segment lengths, in pixels, and a width factor (slim < 1 < broad)."""

    height: float
    head_rx: float
    head_ry: float
    neck: float
    torso: float
    shoulders: float
    hips: float
    upper_arm: float
    forearm: float
    thigh: float
    shank: float
    hand: float
    foot: float
    build: float

    def width(self, segment: str) -> tuple[float, float]:
        """Start and end width of a limb segment, in pixels."""
        start, end = _WIDTHS[segment]
        scale = self.height * self.build
        return start * scale, end * scale


@dataclass(frozen=True)
class Pose:
    """Joint angles (radians) of one figure; pairs are (left, right).

    Shoulder and hip angles are abduction, positive away from the body's midline; elbow and
    knee angles are signed flexion (the sign picks which way the joint bends in the image).
    """

    lean: float
    rotation: float
    head_roll: float
    head_yaw: float
    back_view: bool
    shoulders: tuple[float, float]
    elbows: tuple[float, float]
    hips: tuple[float, float]
    knees: tuple[float, float]
    # Apparent length factor of upper arm, forearm, thigh, shank (left then right): < 1 when
    # a segment points toward or away from the camera.
    foreshortening: tuple[float, ...]


@dataclass(frozen=True)
class Part:
    """A piece of the silhouette painted in one go: polygons ``[M, 2]`` in image pixels."""

    name: str
    kind: str  # "skin", "shirt", "trousers" or "shoes": which of the person's textures fills it
    polygons: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class Figure:
    """A posed figure in image pixels.

    Attributes:
        kpts_xy: ``[17, 2]`` COCO-17 keypoints ``(x, y)``; may lie outside the image.
        face_hidden: ``[17]`` True for face keypoints the head itself hides.
        parts: in painting order (farther parts first).
        head_centre: ``(x, y)`` of the head ellipse.
        head_axes: ``[2, 2]``: rows are the head's sideways (toward the person's left) and up
            semi-axes, in pixels.
        head_yaw: the face's turn from the camera, radians (0 frontal, ±pi/2 profile).
        back_view: the person shows the camera their back.
    """

    kpts_xy: np.ndarray
    face_hidden: np.ndarray
    parts: tuple[Part, ...]
    head_centre: np.ndarray
    head_axes: np.ndarray
    head_yaw: float
    back_view: bool


def sample_body(rng: np.random.Generator, height: float) -> Body:
    """Proportions of one person ``height`` pixels tall, each length varied by ±10 %."""
    factors = rng.uniform(1.0 - LENGTH_VARIATION, 1.0 + LENGTH_VARIATION, len(_LENGTHS))
    lengths = {
        name: frac * height * f for (name, frac), f in zip(_LENGTHS.items(), factors, strict=True)
    }
    return Body(height=height, build=float(rng.uniform(0.8, 1.25)), **lengths)


def sample_pose(rng: np.random.Generator) -> Pose:
    """Random joint angles within human limits; mostly upright, sometimes extreme."""

    def pair(common: tuple[float, float], wide: tuple[float, float], p_wide: float) -> tuple:
        ranges = [wide if rng.random() < p_wide else common for _ in range(2)]
        return tuple(float(rng.uniform(*r)) * _DEG for r in ranges)

    def flexion(p_wide: float) -> tuple[float, float]:
        # Elbows and knees flex 0-150 degrees; in 2-D the bend may show to either side.
        angles = pair((0.0, 30.0), (0.0, 150.0), p_wide)
        return tuple(a * float(rng.choice([-1.0, 1.0])) for a in angles)  # type: ignore[return-value]

    if rng.random() < 0.12:  # occasionally a large whole-body rotation (falling, lying, dancing)
        rotation = rng.uniform(-60.0, 60.0)
    else:
        rotation = float(np.clip(rng.normal(0.0, 4.0), -10.0, 10.0))
    frontal = rng.random() < 0.55
    yaw = rng.uniform(-30.0, 30.0) if frontal else rng.uniform(-100.0, 100.0)
    short = rng.random(8) < 0.25
    return Pose(
        lean=float(rng.uniform(-20.0, 20.0)) * _DEG,
        rotation=float(rotation) * _DEG,
        head_roll=float(rng.uniform(-15.0, 15.0)) * _DEG,
        head_yaw=float(yaw) * _DEG,
        back_view=bool(rng.random() < 0.2),
        shoulders=pair((-15.0, 45.0), (-20.0, 170.0), 0.4),
        elbows=flexion(0.6),
        hips=pair((-10.0, 25.0), (-30.0, 90.0), 0.25),
        knees=flexion(0.3),
        foreshortening=tuple(np.where(short, rng.uniform(0.55, 1.0, 8), 1.0).tolist()),
    )


def _rot(angle: float) -> np.ndarray:
    """``[2, 2]`` rotation taking the down vector ``(0, 1)`` to ``(sin a, cos a)``."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


def _down(angle: float) -> np.ndarray:
    return np.array([np.sin(angle), np.cos(angle)])


@functools.lru_cache(maxsize=8)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.cos(t)[:, None], np.sin(t)[:, None]


def _ellipse(centre: np.ndarray, axis_a: np.ndarray, axis_b: np.ndarray, n: int = 16) -> np.ndarray:
    """``[n, 2]`` polygon of the ellipse ``centre + cos t · axis_a + sin t · axis_b``."""
    cos, sin = _unit_circle(n)
    return centre + cos * axis_a + sin * axis_b


def _circle(centre: np.ndarray, radius: float, n: int = 12) -> np.ndarray:
    return _ellipse(centre, np.array([radius, 0.0]), np.array([0.0, radius]), n)


def _tapered_segment(start: np.ndarray, end: np.ndarray, widths: tuple[float, float]) -> np.ndarray:
    """``[4, 2]`` quadrilateral from ``start`` to ``end``, ``widths[0]`` wide tapering to ``widths[1]``."""
    d = end - start
    length = float(np.hypot(*d))
    d = d / length if length > 1e-6 else np.array([0.0, 1.0])
    normal = np.array([-d[1], d[0]])
    w0, w1 = widths[0] / 2.0, widths[1] / 2.0
    return np.stack(
        [start + normal * w0, end + normal * w1, end - normal * w1, start - normal * w0]
    )


def _limb(
    joints: tuple[np.ndarray, np.ndarray, np.ndarray], widths: tuple[tuple[float, float], ...]
) -> tuple[np.ndarray, ...]:
    """Two tapered segments through three joints, with round joints (a capsule chain)."""
    (w0, w1), (w2, w3) = widths
    a, b, c = joints
    return (
        _tapered_segment(a, b, (w0, w1)),
        _tapered_segment(b, c, (w2, w3)),
        _circle(a, w0 / 2.0),
        _circle(b, max(w1, w2) / 2.0),
        _circle(c, w3 / 2.0),
    )


def face_points(pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face keypoints on a unit head turned by ``pose.head_yaw``.

    Returns:
        ``[5]`` sideways and ``[5]`` up coordinates in head radii (before the face radius
        factor), and ``[5]`` True where the point faces away from the camera (self-occluded).
        A back view sees the head from behind, so depth flips.
    """
    azimuth = _FACE_AZIMUTH + pose.head_yaw
    side = np.sin(azimuth) * np.cos(_FACE_ELEVATION)
    depth = np.cos(azimuth) * np.cos(_FACE_ELEVATION)  # + toward the camera, front view
    if pose.back_view:
        depth = -depth
    return side, np.sin(_FACE_ELEVATION), depth < _HIDDEN_DEPTH


def pose_figure(body: Body, pose: Pose, pelvis_xy: tuple[float, float]) -> Figure:
    """Forward kinematics: the figure of ``body`` in ``pose`` with its pelvis at ``pelvis_xy``."""
    kp = np.zeros((NUM_KEYPOINTS, 2))
    torso_rot = _rot(pose.lean)
    side, up = torso_rot @ np.array([1.0, 0.0]), torso_rot @ np.array([0.0, -1.0])
    shoulder_centre = body.torso * up
    kp[_L_SH], kp[_R_SH] = (
        shoulder_centre + side * body.shoulders / 2,
        shoulder_centre - side * body.shoulders / 2,
    )
    kp[_L_HIP], kp[_R_HIP] = side * body.hips / 2, -side * body.hips / 2
    fs = pose.foreshortening
    ua_w, fa_w = body.width("upper_arm"), body.width("forearm")
    th_w, sh_w = body.width("thigh"), body.width("shank")
    limb_polys: dict[str, tuple[np.ndarray, ...]] = {}
    ends: dict[str, np.ndarray] = {}
    for i, (name, sign) in enumerate((("left", 1.0), ("right", -1.0))):
        sh, el, wr = (_L_SH, _L_EL, _L_WR) if sign > 0 else (_R_SH, _R_EL, _R_WR)
        upper = pose.lean + sign * pose.shoulders[i]
        lower = upper + sign * pose.elbows[i]
        kp[el] = kp[sh] + body.upper_arm * fs[i] * _down(upper)
        kp[wr] = kp[el] + body.forearm * fs[2 + i] * _down(lower)
        limb_polys[f"arm_{name}"] = _limb((kp[sh], kp[el], kp[wr]), (ua_w, fa_w))
        ends[f"hand_{name}"] = kp[wr] + body.hand * _down(lower)
        hip, kn, an = (_L_HIP, _L_KN, _L_AN) if sign > 0 else (_R_HIP, _R_KN, _R_AN)
        thigh = sign * pose.hips[i]
        shank = thigh + sign * pose.knees[i]
        kp[kn] = kp[hip] + body.thigh * fs[4 + i] * _down(thigh)
        kp[an] = kp[kn] + body.shank * fs[6 + i] * _down(shank)
        limb_polys[f"leg_{name}"] = _limb((kp[hip], kp[kn], kp[an]), (th_w, sh_w))
        # Feet point outward and a little down from the ankle.
        toe = _rot(shank) @ np.array([sign * 0.8, 0.5])
        ends[f"foot_{name}"] = kp[an] + body.foot * toe
    head_rot = _rot(pose.lean + pose.head_roll)
    head_side, head_up = head_rot @ np.array([1.0, 0.0]), head_rot @ np.array([0.0, -1.0])
    neck_top = shoulder_centre + body.neck * head_up
    head_centre = neck_top + body.head_ry * head_up
    head_axes = np.stack([head_side * body.head_rx, head_up * body.head_ry])
    face_side, face_up, face_hidden = face_points(pose)
    kp[:5] = head_centre + _FACE_RADIUS * (
        face_side[:, None] * head_axes[0] + face_up[:, None] * head_axes[1]
    )

    pad = body.height * body.build
    torso = np.stack([
        kp[_L_SH] + side * _TORSO_SHOULDER_PAD * pad + up * _TORSO_ABOVE_SHOULDERS * body.height,
        kp[_L_HIP] + side * _TORSO_HIP_PAD * pad - up * _TORSO_BELOW_HIPS * body.height,
        kp[_R_HIP] - side * _TORSO_HIP_PAD * pad - up * _TORSO_BELOW_HIPS * body.height,
        kp[_R_SH] - side * _TORSO_SHOULDER_PAD * pad + up * _TORSO_ABOVE_SHOULDERS * body.height,
    ])  # fmt: skip
    foot_radii = (np.array([body.foot * 0.75, 0.0]), np.array([0.0, body.foot * 0.45]))
    hand_radius = body.hand * body.build
    pieces = {
        **{f"leg_{s}": ("trousers", limb_polys[f"leg_{s}"]) for s in ("left", "right")},
        **{f"foot_{s}": ("shoes", (_ellipse(ends[f"foot_{s}"], *foot_radii, n=10),)) for s in ("left", "right")},
        **{f"arm_{s}": ("shirt", limb_polys[f"arm_{s}"]) for s in ("left", "right")},
        **{f"hand_{s}": ("skin", (_circle(ends[f"hand_{s}"], hand_radius, n=8),)) for s in ("left", "right")},
        "torso": ("shirt", (torso,)),
        "head": ("skin", (
            _tapered_segment(shoulder_centre, head_centre, body.width("neck")),
            _ellipse(head_centre, head_axes[0], head_axes[1], n=20),
        )),
    }  # fmt: skip

    # Whole-body rotation about the pelvis, then the back view's mirror, then placement.
    transform = _rot(pose.rotation)
    if pose.back_view:
        transform = np.diag([-1.0, 1.0]) @ transform
    offset = np.asarray(pelvis_xy, dtype=np.float64)

    def to_image(points: np.ndarray) -> np.ndarray:
        return points @ transform.T + offset

    # Painting order: a person turning toward one side shows the camera the other side's limbs.
    far, near = ("left", "right") if pose.head_yaw >= 0 else ("right", "left")
    order = (f"leg_{far}", f"foot_{far}", f"leg_{near}", f"foot_{near}", "torso", "head",
             f"arm_{far}", f"hand_{far}", f"arm_{near}", f"hand_{near}")  # fmt: skip
    # One matrix product for every polygon point (this runs for every placement tried).
    polygons = [p for name in order for p in pieces[name][1]]
    bounds = np.cumsum([len(p) for p in polygons])[:-1]
    placed = iter(np.split(to_image(np.concatenate(polygons)), bounds))
    parts = tuple(
        Part(name, pieces[name][0], tuple(next(placed) for _ in pieces[name][1])) for name in order
    )
    hidden = np.zeros(NUM_KEYPOINTS, dtype=bool)
    hidden[:5] = face_hidden
    return Figure(
        kpts_xy=to_image(kp),
        face_hidden=hidden,
        parts=parts,
        head_centre=to_image(head_centre[None])[0],
        head_axes=head_axes @ transform.T,
        head_yaw=pose.head_yaw,
        back_view=pose.back_view,
    )


def shift_figure(figure: Figure, offset_xy: tuple[int, int]) -> Figure:
    """``figure`` moved by whole pixels (its rasterisation moves with it, unchanged)."""
    offset = np.asarray(offset_xy, dtype=np.float64)
    return dataclasses.replace(
        figure,
        kpts_xy=figure.kpts_xy + offset,
        parts=tuple(
            Part(p.name, p.kind, tuple(q + offset for q in p.polygons)) for p in figure.parts
        ),
        head_centre=figure.head_centre + offset,
    )

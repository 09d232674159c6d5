"""Synthetic people: a procedural renderer of articulated 2-D figures with exact flow (docs/design.md#synthetic-people).

Every body part is a rigid shape with its own colours and textures, both defined in the part's LOCAL frame
(u across, v along the part, in body units). A pose places each part by one affine map local -> image, so
the same cloth point has the same colour in every pose. Pixels are rasterised by inverse-mapping their
centres into each part's frame, in painter's order (e.g. the far arm before the torso). For a pair
(source, target) the target->source flow is then exact: a target pixel showing part p sits at local point
A_tgt,p^-1(x), which the source pose shows at A_src,p(A_tgt,p^-1(x)).

    generate_dataset("datasets/synthetic")                        # DeepFashion-like, 256x176
    generate_dataset("datasets/synthetic_market", style="market")  # Market-like, 128x64
    generate_dataset("datasets/synthetic_small", style="deepfashion_small")  # DeepFashion-like, 128x88

The output follows the release layout of docs/data.md#layout (images, annotation and pair CSVs, CIHP parsing
maps) plus `{split}_flow/<from-stem>___<to-stem>.npz` with `flow` (2,H,W) float16 target->source offsets (x, y)
and `vis` (H,W) uint8 (0 visible, 1 invisible in the source, 2 target background), and `synthetic.json`, the
arguments it was made with. Everything is seeded from (seed, identity, pose), so the files are byte-identical for
the same arguments whatever the worker count.

Beyond the files, `random_pose_pair` draws an endless seeded stream of pairs of the same people in fresh poses,
and `pose_pair_flow` gives their keypoints and exact flow without drawing an image (data/flow_pairs.py: the flow
module's training pairs under data.flow_pairs=rendered).
"""

from __future__ import annotations

import colorsys
import io
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from data.annotations import write_annotations, write_pairs
from data.datasets import flow_file_name, stem
from data.parsing import CIHP_LABELS
from utils.io import atomic_write, ensure_writable_folder, remove_orphans, write_image, write_json

# CIHP label ids of the classes the renderer paints; left/right are the person's sides, as the joints'.
HAIR, UPPER_CLOTHES, PANTS, SKIRT, FACE = (CIHP_LABELS.index(n) for n in ("hair", "upper-clothes", "pants", "skirt",
                                                                        "face"))
LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_SHOE, RIGHT_SHOE = (
    CIHP_LABELS.index(n) for n in ("left-arm", "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe"))

# OpenPose-COCO joint indices (docs/design.md#pose-encoding).
NOSE, NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 0, 1, 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE, R_EYE, L_EYE, R_EAR, L_EAR = 8, 9, 10, 11, 12, 13, 14, 15, 16, 17

# Rigid parts; a part-id map stores index + 1 (0 = background). Front and back of the torso are different
# surfaces (a back view shows no logo, and a front->back pair has nothing of the torso front to copy).
PARTS = ("hair", "neck", "face", "torso_front", "torso_back", "r_upper_arm", "r_forearm", "l_upper_arm",
         "l_forearm", "bottom", "r_thigh", "r_shin", "l_thigh", "l_shin", "r_shoe", "l_shoe")
PART = {name: i for i, name in enumerate(PARTS)}
VIEWS = ("front", "side", "back")
JPEG_QUALITY = 95
MANIFEST = "synthetic.json"  # what generate_dataset was called with, in the dataset folder


@dataclass(frozen=True)
class Style:
    """What differs between the DeepFashion-like and the Market-like set: size, background, file names."""

    name: str
    height: int
    width: int
    cluttered: bool
    annotation_file: str  # format with split=train|test
    pairs_file: str


STYLES = {
    "deepfashion": Style("deepfashion", 256, 176, False, "fasion-resize-annotation-{split}.csv",
                         "fasion-resize-pairs-{split}.csv"),
    "market": Style("market", 128, 64, True, "market-annotation-{split}.csv", "market-pairs-{split}.csv"),
    # DeepFashion's proportions at half the side: a quarter of the pixels, what the CPU demo trains on
    "deepfashion_small": Style("deepfashion_small", 128, 88, False, "fasion-resize-annotation-{split}.csv",
                               "fasion-resize-pairs-{split}.csv"),
}


# ------------------------------------------------------------------------------------------- appearance


@dataclass(frozen=True)
class Garment:
    """A cloth: two colours mixed by a pattern evaluated in part-local body units."""

    base: np.ndarray  # (3,) RGB 0..255
    second: np.ndarray  # (3,)
    pattern: str  # plain | hstripes | vstripes | diagonal | checks | gradient
    period: float  # body units
    phase: float


@dataclass(frozen=True)
class Body:
    """One identity's proportions in body units (1 unit ~ a head height / 1.05)."""

    head_rx: float
    head_ry: float
    neck_len: float
    torso_len: float
    shoulder: float  # half shoulder width
    hip: float  # half hip width
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    r_upper_arm: float  # capsule radii
    r_forearm: float
    r_thigh: float
    r_shin: float


@dataclass(frozen=True)
class Appearance:
    body: Body
    skin: np.ndarray
    hair: np.ndarray
    hair_tail: float  # long-hair length below the head centre (0: short hair)
    top: Garment
    logo: tuple[str, np.ndarray, float] | None  # (disc|square|ring, colour, radius) on the torso front
    bottom_kind: str  # pants | shorts | skirt
    bottom: Garment
    skirt_len: float
    shoes: np.ndarray


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _garment(rng: np.random.Generator, patterns: tuple[str, ...]) -> Garment:
    base = _hsv(rng.uniform(), rng.uniform(0.2, 0.9), rng.uniform(0.25, 0.95))
    if rng.uniform() < 0.5:  # a contrasting neutral or a second hue
        second = np.full(3, 240.0 if base.mean() < 128 else 30.0, np.float32)
    else:
        second = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0))
    return Garment(base, second, str(rng.choice(patterns)), float(rng.uniform(0.3, 0.7)), float(rng.uniform()))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Proportions, colours and textures of one identity."""
    def j(x: float) -> float:  # per-identity proportion jitter
        return float(x * rng.uniform(0.94, 1.06))

    body = Body(head_rx=j(0.40), head_ry=j(0.52), neck_len=j(0.28), torso_len=j(2.55), shoulder=j(0.80),
                hip=j(0.50), upper_arm=j(1.35), forearm=j(1.20), thigh=j(1.85), shin=j(1.75), r_upper_arm=j(0.21),
                r_forearm=j(0.15), r_thigh=j(0.27), r_shin=j(0.20))
    skin_tones = np.array([[245, 210, 185], [225, 180, 150], [195, 145, 110], [150, 100, 70], [105, 70, 50]])
    skin = skin_tones[rng.integers(len(skin_tones))].astype(np.float32) * rng.uniform(0.94, 1.06, 3)
    hair_tones = np.array([[30, 25, 22], [70, 45, 30], [115, 80, 50], [205, 175, 115], [150, 65, 35], [150, 150, 150]])
    hair = hair_tones[rng.integers(len(hair_tones))].astype(np.float32) * rng.uniform(0.9, 1.1, 3)
    top = _garment(rng, ("plain", "hstripes", "vstripes", "diagonal", "checks", "gradient"))
    logo = None
    if rng.uniform() < 0.5:
        colour = _hsv(rng.uniform(), rng.uniform(0.5, 1), rng.uniform(0.5, 1))
        logo = (str(rng.choice(["disc", "square", "ring"])), colour, float(rng.uniform(0.22, 0.36)))
    bottom_kind = str(rng.choice(["pants", "pants", "shorts", "skirt"]))
    bottom = _garment(rng, ("plain", "plain", "vstripes", "checks", "gradient"))
    shoes = _hsv(rng.uniform(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.9))
    return Appearance(body=body, skin=np.clip(skin, 0, 255), hair=np.clip(hair, 0, 255),
                      hair_tail=float(rng.uniform(0.8, 2.0)) if rng.uniform() < 0.4 else 0.0, top=top, logo=logo,
                      bottom_kind=bottom_kind, bottom=bottom, skirt_len=float(rng.uniform(1.0, 1.9)), shoes=shoes)


def part_labels(app: Appearance) -> np.ndarray:
    """(len(PARTS),) CIHP label of each part for this identity's clothes."""
    skirt = app.bottom_kind == "skirt"
    bare_shin = app.bottom_kind != "pants"
    labels = {
        "hair": HAIR, "neck": FACE, "face": FACE, "torso_front": UPPER_CLOTHES, "torso_back": UPPER_CLOTHES,
        "r_upper_arm": UPPER_CLOTHES, "r_forearm": RIGHT_ARM, "l_upper_arm": UPPER_CLOTHES, "l_forearm": LEFT_ARM,
        "bottom": SKIRT if skirt else PANTS, "r_thigh": RIGHT_LEG if skirt else PANTS,
        "l_thigh": LEFT_LEG if skirt else PANTS, "r_shin": RIGHT_LEG if bare_shin else PANTS,
        "l_shin": LEFT_LEG if bare_shin else PANTS, "r_shoe": RIGHT_SHOE, "l_shoe": LEFT_SHOE,
    }
    return np.array([labels[p] for p in PARTS], np.uint8)


# ------------------------------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class Pose:
    """Joint angles (radians, 0 = hanging straight down, + towards image +x) and framing of one image."""

    view: str  # front | side | back
    facing: int  # +1 / -1: mirror of the local u axis (side view: the direction the nose points in x)
    lean: float
    head_tilt: float
    head_yaw: float  # front view: sideways shift of the face on the head (body units)
    arms: tuple[tuple[float, float], tuple[float, float]]  # (right, left): (upper arm, forearm) absolute angles
    arm_behind: tuple[bool, bool]  # drawn behind the torso
    legs: tuple[tuple[float, float], tuple[float, float]]  # (right, left): (thigh, shin) absolute angles
    fill: float  # figure height / image height
    zoom: float  # > 1: a close-up, the lower body leaves the frame
    top: float  # head top position, fraction of the image height
    shift: float  # horizontal offset of the figure centre, fraction of the image width


def sample_pose(rng: np.random.Generator, style: Style) -> Pose:
    market = style.name == "market"
    view = str(rng.choice(VIEWS, p=[0.5, 0.25, 0.25]))
    facing = {"front": 1, "back": -1}.get(view, int(rng.choice([-1, 1])))
    arms, behind, legs = [], [], []
    if view == "side":  # walking: arms and legs swing in opposition; + is forward
        arm_swing, leg_swing = rng.uniform(-0.6, 0.8), rng.uniform(-0.45, 0.45)
        # turning to +x shows the right side (a quarter turn moves the left side away from the camera)
        for side, near in ((1.0, facing == 1), (-rng.uniform(0.3, 1.0), facing == -1)):
            upper = side * arm_swing + rng.normal(0, 0.1)
            arms.append((facing * upper, facing * (upper + rng.uniform(0.0, 1.3))))  # the elbow bends forward
            behind.append(not near)
            thigh = leg_swing if side == 1.0 else -leg_swing * rng.uniform(0.6, 1.0)
            legs.append((facing * thigh, facing * (thigh - rng.uniform(0.0, 0.45))))  # the knee bends backward
    else:
        for side_sign in (-facing, facing):  # right limbs point to -x in a front view, +x in a back view
            mode = "hang" if market else str(rng.choice(["hang", "akimbo", "across", "raised"], p=[0.45, 0.2, 0.15,
                                                                                                  0.2]))
            abduct, flex = {"hang": (rng.uniform(0.05, 0.35), rng.uniform(0.0, 0.5)),
                            "akimbo": (rng.uniform(0.5, 0.9), rng.uniform(1.4, 2.0)),
                            "across": (rng.uniform(-0.1, 0.2), rng.uniform(1.6, 2.4)),
                            "raised": (rng.uniform(1.2, 2.6), rng.uniform(-0.9, 0.2))}[mode]
            upper = side_sign * abduct
            arms.append((upper, upper - side_sign * flex))
            # an arm across the body is behind the back in a back view; now and then one is behind the torso
            behind.append(bool((mode == "across" and view == "back") or rng.uniform() < 0.05))
            thigh = side_sign * rng.uniform(-0.02, 0.25)
            legs.append((thigh, thigh - side_sign * rng.uniform(0.0, 0.12)))
    close_up = not market and rng.uniform() < 0.25
    return Pose(view=view, facing=facing, lean=float(np.clip(rng.normal(0, 0.05), -0.12, 0.12)),
                head_tilt=float(np.clip(rng.normal(0, 0.08), -0.2, 0.2)),
                head_yaw=float(rng.uniform(-0.08, 0.08)) if view == "front" else 0.0,
                arms=((float(arms[0][0]), float(arms[0][1])), (float(arms[1][0]), float(arms[1][1]))),
                arm_behind=(behind[0], behind[1]),
                legs=((float(legs[0][0]), float(legs[0][1])), (float(legs[1][0]), float(legs[1][1]))),
                fill=float(rng.uniform(0.82, 0.95) if market else rng.uniform(0.80, 0.93)),
                zoom=float(rng.uniform(1.25, 1.7)) if close_up else 1.0,
                top=float(rng.uniform(0.01, 0.06)), shift=float(rng.normal(0, 0.06)))


# --------------------------------------------------------------------------------------------- skeleton


def _down(a: float) -> np.ndarray:
    """Unit vector at angle a from straight down (image x right, y down), + towards +x."""
    return np.array([np.sin(a), np.cos(a)])


def _frame(origin: np.ndarray, angle: float, mirror: int, width: float = 1.0) -> np.ndarray:
    """(2,3) local -> image affine: v along _down(angle), u perpendicular (image +x when upright, unmirrored),
    u scaled by `width` (foreshortening of a side view)."""
    e_v = _down(angle)
    e_u = mirror * np.array([np.cos(angle), -np.sin(angle)]) * width
    return np.column_stack([e_u, e_v, origin])


def _apply(aff: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    return aff[:, :2] @ np.asarray(point, float) + aff[:, 2]


def _then(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Affine composition outer . inner of (2,3) matrices."""
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


@dataclass(frozen=True)
class Figure:
    """A posed identity in image pixels: every part's local -> image affine and the 18 joints."""

    affines: np.ndarray  # (P,2,3) float64
    joints: np.ndarray  # (18,2) float64 (x, y) image coordinates
    hidden: np.ndarray  # (18,) bool: joints a pose estimator would not see (turned-away face)
    order: tuple[int, ...]  # part indices back to front; parts not drawn in this view are absent
    height: int
    width: int


def _unit_figure(app: Appearance, pose: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affines (P,2,3), joints (18,2) (x, y) and the head-top / feet extremes (2,2), in body units around the
    hip centre."""
    b, m = app.body, pose.facing
    side = pose.view == "side"
    wf, w_shoulder, w_hip = (0.5, 0.22, 0.25) if side else (1.0, 1.0, 1.0)
    hip_c = np.zeros(2)
    neck = hip_c - b.torso_len * _down(pose.lean)
    torso = _frame(neck, pose.lean, m, wf)
    e_u, e_v = torso[:, 0] / wf, torso[:, 1]
    head_angle = pose.lean + pose.head_tilt
    head_c = neck - (b.neck_len + b.head_ry) * _down(head_angle)
    head = _frame(head_c, head_angle, m)
    # the face sits on the head frame; a side view shows it squeezed and pushed to the front, mirrored so that
    # the near eye is the front one (head-frame u points where the nose points when the figure is mirrored)
    face_local = (np.array([[-0.55 * m, 0, 0.16], [0, 1, 0]]) if side
                  else np.array([[1.0, 0, pose.head_yaw], [0, 1, 0]]))
    face = _then(head, face_local)
    aff = np.zeros((len(PARTS), 2, 3))
    joints = np.zeros((18, 2))
    aff[PART["hair"]], aff[PART["face"]] = head, face
    aff[PART["neck"]] = _frame(neck, head_angle + np.pi, m)
    aff[PART["torso_front"]] = aff[PART["torso_back"]] = torso
    aff[PART["bottom"]] = _frame(hip_c, pose.lean, m, wf)
    joints[NECK] = neck
    arm_parts = (("r_upper_arm", "r_forearm", R_SHOULDER, R_ELBOW, R_WRIST, -1),
                 ("l_upper_arm", "l_forearm", L_SHOULDER, L_ELBOW, L_WRIST, 1))
    for (upper, fore, js, je, jw, sgn), (a_up, a_fore) in zip(arm_parts, pose.arms):
        shoulder = neck + sgn * b.shoulder * w_shoulder * e_u + 0.12 * e_v
        elbow = shoulder + b.upper_arm * _down(a_up)
        joints[js], joints[je], joints[jw] = shoulder, elbow, elbow + b.forearm * _down(a_fore)
        aff[PART[upper]], aff[PART[fore]] = _frame(shoulder, a_up, m), _frame(elbow, a_fore, m)
    leg_parts = (("r_thigh", "r_shin", "r_shoe", R_HIP, R_KNEE, R_ANKLE, -1),
                 ("l_thigh", "l_shin", "l_shoe", L_HIP, L_KNEE, L_ANKLE, 1))
    for (thigh, shin, shoe, jh, jk, ja, sgn), (a_th, a_sh) in zip(leg_parts, pose.legs):
        hip = hip_c + sgn * b.hip * w_hip * e_u
        knee = hip + b.thigh * _down(a_th)
        ankle = knee + b.shin * _down(a_sh)
        joints[jh], joints[jk], joints[ja] = hip, knee, ankle
        aff[PART[thigh]], aff[PART[shin]] = _frame(hip, a_th, m), _frame(knee, a_sh, m)
        # shoe: u along the foot (to the toes), v towards the sole; a front/back view sees the foot end-on
        axes = np.array([[m, 0.0], [0.0, 1.0]]) if side else np.array([[0.0, 1.4 * m], [0.5, 0.0]])
        aff[PART[shoe]] = np.column_stack([axes, ankle])
    joints[NOSE] = _apply(face, (0.0, 0.12))
    joints[R_EYE], joints[L_EYE] = _apply(face, (-0.16, -0.05)), _apply(face, (0.16, -0.05))
    ear_u = 0.12 if side else 0.38
    ears = (_apply(head, (-ear_u, 0.02)), _apply(head, (ear_u, 0.02)))
    # side view: head-frame +u is the facing direction, so the near ear sits behind the face (u < 0)
    joints[R_EAR], joints[L_EAR] = ears if not side or m == 1 else ears[::-1]
    extremes = np.stack([head_c - (b.head_ry + 0.1) * _down(head_angle),
                         np.maximum(joints[R_ANKLE], joints[L_ANKLE]) + np.array([0.0, 0.25])])
    return aff, joints, extremes


def _hidden_joints(pose: Pose) -> np.ndarray:
    hidden = np.zeros(18, bool)
    if pose.view == "back":
        hidden[[NOSE, R_EYE, L_EYE]] = True
    elif pose.view == "side":  # facing +x shows the right side: the left eye and ear are behind the head
        hidden[[L_EYE, L_EAR] if pose.facing == 1 else [R_EYE, R_EAR]] = True
    elif abs(pose.head_yaw) > 0.05:  # the face turned towards one ear hides it
        hidden[L_EAR if pose.head_yaw > 0 else R_EAR] = True
    return hidden


def _draw_order(pose: Pose) -> tuple[int, ...]:
    """Painter's order, back to front."""
    depth = {"hair": -5.0, "neck": 2.5, "face": 6.0, "torso_front": 3.0, "torso_back": 3.0, "bottom": 2.0}
    if pose.view == "back":
        depth["hair"] = 7.0  # the back of the head covers everything else of it
        del depth["face"], depth["torso_front"]
    else:
        del depth["torso_back"]
    near_right = pose.view != "side" or pose.facing == 1
    for prefix, behind, near in (("r_", pose.arm_behind[0], near_right), ("l_", pose.arm_behind[1], not near_right)):
        arm = -1.0 if behind else 4.0
        depth[prefix + "upper_arm"], depth[prefix + "forearm"] = arm, arm + 0.1
        leg = 1.0 if near or pose.view != "side" else 0.0
        depth[prefix + "thigh"], depth[prefix + "shin"], depth[prefix + "shoe"] = leg, leg + 0.1, leg + 0.2
    return tuple(sorted((PART[p] for p in depth), key=lambda i: (depth[PARTS[i]], i)))


def pose_figure(app: Appearance, pose: Pose, height: int, width: int) -> Figure:
    """Scale and place the figure: `fill` of the image height, `zoom` for close-ups, head top at `top`."""
    aff, joints, extremes = _unit_figure(app, pose)
    scale = pose.fill * height / (extremes[1, 1] - extremes[0, 1]) * pose.zoom
    xs = np.concatenate([joints[:, 0], extremes[:, 0]])
    offset = np.array([width * (0.5 + pose.shift) - scale * (xs.min() + xs.max()) / 2,
                       pose.top * height - scale * extremes[0, 1]])
    aff = aff * scale
    aff[:, :, 2] += offset
    return Figure(affines=aff, joints=joints * scale + offset, hidden=_hidden_joints(pose), order=_draw_order(pose),
                  height=height, width=width)


def keypoints(fig: Figure) -> np.ndarray:
    """(18,2) int64 (y, x) as in the annotation files; -1 for joints hidden or outside the frame."""
    yx = np.floor(fig.joints[:, ::-1] + 0.5).astype(np.int64)
    outside = (yx[:, 0] < 0) | (yx[:, 0] >= fig.height) | (yx[:, 1] < 0) | (yx[:, 1] >= fig.width)
    yx[outside | fig.hidden] = -1
    return yx


# ------------------------------------------------------------------------------------- shapes, textures


def _smooth_square(t: np.ndarray) -> np.ndarray:
    """Soft square wave in [0,1] with period 1: stripes with edges a few pixels wide, so that bilinear
    resampling of a rendered stripe matches the stripe rendered at the new position."""
    return 0.5 + 0.5 * np.tanh(2.5 * np.sin(2 * np.pi * t))


def _pattern(g: Garment, u: np.ndarray, v: np.ndarray, length: float) -> np.ndarray:
    p = g.period
    if g.pattern == "hstripes":
        return _smooth_square(v / p + g.phase)
    if g.pattern == "vstripes":
        return _smooth_square(u / p + g.phase)
    if g.pattern == "diagonal":
        return _smooth_square((u + v) / (1.4 * p) + g.phase)
    if g.pattern == "checks":
        return 0.5 + 0.5 * np.tanh(2.5 * np.sin(2 * np.pi * (u / p + g.phase)) * np.sin(2 * np.pi * v / p))
    if g.pattern == "gradient":
        return np.clip(v / length, 0.0, 1.0)
    return np.zeros_like(u)


def _cloth(g: Garment, u: np.ndarray, v: np.ndarray, length: float) -> np.ndarray:
    t = _pattern(g, u, v, length)[:, None]
    return g.base * (1 - t) + g.second * t  # (n,3)


def _shade(rgb: np.ndarray, u: np.ndarray, half_width: float, k: float = 0.25) -> np.ndarray:
    """Cylinder shading across a part, fixed in local coordinates so that it moves with the cloth."""
    return rgb * (1 - k * np.clip(u / half_width, -1, 1) ** 2)[:, None]


def _soft_disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    return np.clip((r - np.hypot(u - cu, v - cv)) / 0.04 + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class PartSpec:
    """A rigid part: its inside test, local bounding box (u0, u1, v0, v1) and texture, all in body units."""

    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]
    bounds: tuple[float, float, float, float]
    texture: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (n,) u, (n,) v -> (n,3) RGB


def _capsule(length: float, radius: float, texture: Callable) -> PartSpec:
    def inside(u, v):
        return u**2 + (v - np.clip(v, 0.0, length)) ** 2 <= radius**2

    return PartSpec(inside, (-radius, radius, -radius, length + radius), texture)


def _ellipse(cu: float, cv: float, rx: float, ry: float) -> Callable:
    return lambda u, v: ((u - cu) / rx) ** 2 + ((v - cv) / ry) ** 2 <= 1.0


def _trapezoid(v0: float, v1: float, knots_v: list[float], knots_w: list[float]) -> Callable:
    return lambda u, v: (v >= v0) & (v <= v1) & (np.abs(u) <= np.interp(v, knots_v, knots_w))


def part_specs(app: Appearance) -> list[PartSpec]:
    """The shapes and textures of one identity, indexed like PARTS."""
    b = app.body
    skin, top, bottom = app.skin, app.top, app.bottom
    specs: dict[str, PartSpec] = {}

    hair_rx, hair_ry = b.head_rx + 0.07, b.head_ry + 0.06
    head_ellipse = _ellipse(0.0, -0.06, hair_rx, hair_ry)
    tail = app.hair_tail

    def hair_inside(u, v):
        inside = head_ellipse(u, v)
        if tail > 0:
            inside |= (np.abs(u) <= hair_rx - 0.03) & (v >= 0) & (v <= tail)
        return inside

    def hair_texture(u, v):
        return app.hair * (0.92 + 0.08 * np.sin(2 * np.pi * u / 0.22))[:, None]

    specs["hair"] = PartSpec(hair_inside, (-hair_rx, hair_rx, -0.06 - hair_ry, max(tail, hair_ry)), hair_texture)

    def face_texture(u, v):
        rgb = skin * (1 - 0.12 * ((u / b.head_rx) ** 2 + (v / b.head_ry) ** 2))[:, None]
        eyes = np.maximum(_soft_disc(u, v, -0.16, -0.05, 0.055), _soft_disc(u, v, 0.16, -0.05, 0.055))[:, None]
        brows = (np.clip((0.09 - np.abs(np.abs(u) - 0.16)) / 0.04 + 0.5, 0, 1)
                 * np.clip((0.03 - np.abs(v + 0.15)) / 0.04 + 0.5, 0, 1))[:, None]
        mouth = np.clip(1 - ((u / 0.12) ** 2 + ((v - 0.3) / 0.045) ** 2), 0, 1)[:, None]
        rgb = rgb * (1 - eyes) + np.array([35.0, 25.0, 25.0]) * eyes
        rgb = rgb * (1 - brows) + app.hair * 0.8 * brows
        return rgb * (1 - mouth) + np.array([170.0, 60.0, 60.0]) * mouth

    specs["face"] = PartSpec(_ellipse(0.0, 0.0, b.head_rx, b.head_ry), (-b.head_rx, b.head_rx, -b.head_ry,
                                                                         b.head_ry), face_texture)
    neck_len = b.neck_len + 0.5 * b.head_ry
    specs["neck"] = _capsule(neck_len, 0.17, lambda u, v: _shade(skin * 0.9, u, 0.17, 0.2))

    L = b.torso_len
    torso_v, torso_w = [-0.1, 0.3, 1.4, L + 0.15], [0.45 * b.shoulder, b.shoulder, 0.78 * b.shoulder, b.hip + 0.12]
    torso_inside = _trapezoid(-0.1, L + 0.15, torso_v, torso_w)
    torso_bounds = (-max(torso_w), max(torso_w), -0.1, L + 0.15)

    def torso_texture(with_logo):
        def texture(u, v):
            rgb = _shade(_cloth(top, u, v, L), u, b.shoulder, 0.15)
            if with_logo and app.logo is not None:
                kind, colour, r = app.logo
                if kind == "disc":
                    a = _soft_disc(u, v, 0.0, 0.9, r)
                elif kind == "ring":
                    a = _soft_disc(u, v, 0.0, 0.9, r) * (1 - _soft_disc(u, v, 0.0, 0.9, 0.55 * r))
                else:
                    a = np.clip((r - np.maximum(np.abs(u), np.abs(v - 0.9))) / 0.04 + 0.5, 0, 1)
                rgb = rgb * (1 - a[:, None]) + colour * a[:, None]
            return rgb

        return texture

    specs["torso_front"] = PartSpec(torso_inside, torso_bounds, torso_texture(True))
    specs["torso_back"] = PartSpec(torso_inside, torso_bounds, torso_texture(False))

    def cloth_texture(g: Garment, radius: float, length: float, v_start: float = 0.0) -> Callable:
        return lambda u, v: _shade(_cloth(g, u, v + v_start, length), u, radius)

    def skin_texture(radius: float) -> Callable:
        return lambda u, v: _shade(skin, u, radius)

    def shoe_texture(u, v):
        sole = np.clip((v - 0.1) / 0.04 + 0.5, 0, 1)[:, None]
        return app.shoes * (1 - 0.55 * sole)

    leg_len = b.thigh + b.shin  # pants patterns run on from thigh to shin
    r_thigh = b.r_thigh + (0.03 if app.bottom_kind != "skirt" else 0.0)  # cloth is a little wider than a leg
    r_shin = b.r_shin + (0.03 if app.bottom_kind == "pants" else 0.0)
    for side in ("r_", "l_"):
        specs[side + "upper_arm"] = _capsule(b.upper_arm, b.r_upper_arm, cloth_texture(top, b.r_upper_arm,
                                                                                      b.upper_arm))
        # the capsule runs past the wrist: that end is the hand
        specs[side + "forearm"] = _capsule(b.forearm + 0.15, b.r_forearm, skin_texture(b.r_forearm))
        specs[side + "thigh"] = _capsule(b.thigh, r_thigh, skin_texture(r_thigh) if app.bottom_kind == "skirt"
                                         else cloth_texture(bottom, r_thigh, leg_len))
        specs[side + "shin"] = _capsule(b.shin, r_shin, cloth_texture(bottom, r_shin, leg_len, b.thigh)
                                        if app.bottom_kind == "pants" else skin_texture(r_shin))
        specs[side + "shoe"] = PartSpec(_ellipse(0.18, 0.06, 0.36, 0.16), (-0.18, 0.54, -0.1, 0.22), shoe_texture)

    if app.bottom_kind == "skirt":
        flare = 0.35 * app.skirt_len
        w0 = b.hip + 0.12
        specs["bottom"] = PartSpec(_trapezoid(-0.15, app.skirt_len, [-0.15, app.skirt_len], [w0, w0 + flare]),
                                   (-w0 - flare, w0 + flare, -0.15, app.skirt_len),
                                   lambda u, v: _shade(_cloth(bottom, u, v, app.skirt_len), u, w0 + flare, 0.15))
    else:  # the waistband and crotch of pants or shorts
        w0 = b.hip + 0.14
        specs["bottom"] = PartSpec(_trapezoid(-0.15, 0.55, [-0.15, 0.55], [w0, w0 - 0.05]), (-w0, w0, -0.15, 0.55),
                                   lambda u, v: _shade(_cloth(bottom, u, v, b.thigh), u, w0, 0.15))
    return [specs[p] for p in PARTS]


# ------------------------------------------------------------------------------------------- rendering


def background(rng: np.random.Generator, height: int, width: int, cluttered: bool) -> np.ndarray:
    """(H,W,3) float32 RGB: a plain light studio backdrop, or a random street-like clutter (Market-1501)."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    if not cluttered:
        top = rng.uniform(228, 252, 3).astype(np.float32)
        bottom = top - rng.uniform(0, 18)
        return np.broadcast_to(top * (1 - rows) + bottom * rows, (height, width, 3)).copy()
    top, bottom = rng.uniform(60, 220, 3), rng.uniform(40, 200, 3)
    img = np.broadcast_to(top * (1 - rows) + bottom * rows, (height, width, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(8, 20))):  # walls, windows, cars, passers-by
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        x1, y1 = x0 + int(rng.integers(4, width)), y0 + int(rng.integers(4, height // 2))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.uniform() < 0.3:
            box = ((x0 + x1) / 2, (y0 + y1) / 2), (float(x1 - x0), float(y1 - y0)), float(rng.uniform(0, 180))
            cv2.ellipse(img, box, colour, -1)
        else:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        if rng.uniform() < 0.3:  # stripes, e.g. windows or a crossing
            period = int(rng.integers(3, 9))
            ys = slice(max(y0, 0), max(min(y1, height), 0))
            img[ys, max(x0, 0):max(min(x1, width), 0):period] *= 0.6
    ground = int(height * rng.uniform(0.65, 0.85))
    img[ground:] = img[ground:] * 0.4 + rng.uniform(60, 160, 3).astype(np.float32) * 0.6
    low = cv2.resize(rng.normal(0, 18, (6, 3, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img += low + rng.normal(0, 5, img.shape).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + 0.55 * (img - grey)  # street scenes are duller than random colours
    return cv2.GaussianBlur(img, (0, 0), 0.8)


@dataclass(frozen=True)
class Rendering:
    image: np.ndarray  # (H,W,3) uint8 RGB
    labels: np.ndarray  # (H,W) uint8 CIHP
    parts: np.ndarray  # (H,W) uint8: index into PARTS + 1, 0 background
    figure: Figure


def _local_coordinates(aff: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (xs, ys) -> the part-local (u, v) of the (2,3) local -> image affine `aff`."""
    inv = np.linalg.inv(np.vstack([aff, [0.0, 0.0, 1.0]]))[:2]
    return inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2], inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]


def part_map(specs: list[PartSpec], fig: Figure) -> np.ndarray:
    """(H,W) uint8 index into PARTS + 1 of the part each pixel shows (0 background): every part inside-tests the
    pixel centres of its image bounding box, inverse-mapped into its frame, in painter's order."""
    h, w = fig.height, fig.width
    parts = np.zeros((h, w), np.uint8)
    for p in fig.order:
        spec, aff = specs[p], fig.affines[p]
        u0, u1, v0, v1 = spec.bounds
        corners = aff[:, :2] @ np.array([[u0, u0, u1, u1], [v0, v1, v0, v1]]) + aff[:, 2:]
        x0, y0 = np.maximum(np.floor(corners.min(axis=1)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=1)).astype(int), [w - 1, h - 1])
        if x0 > x1 or y0 > y1:
            continue
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        parts[y0 : y1 + 1, x0 : x1 + 1][spec.inside(*_local_coordinates(aff, xs, ys))] = p + 1
    return parts


def render(app: Appearance, fig: Figure, backdrop: np.ndarray) -> Rendering:
    """The part map, then each pixel coloured by the texture of the part it shows, at its local coordinates."""
    specs = part_specs(app)
    parts = part_map(specs, fig)
    canvas = backdrop.astype(np.float32).copy()
    for p in np.unique(parts)[1:].astype(int) - 1:  # only the parts left in sight
        ys, xs = np.nonzero(parts == p + 1)
        canvas[ys, xs] = specs[p].texture(*_local_coordinates(fig.affines[p], xs, ys))
    labels = np.concatenate([[0], part_labels(app)]).astype(np.uint8)[parts]
    image = np.clip(np.floor(canvas + 0.5), 0, 255).astype(np.uint8)
    return Rendering(image=image, labels=labels, parts=parts, figure=fig)


def correspondence(src_fig: Figure, src_parts: np.ndarray, tgt_fig: Figure,
                   tgt_parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact target->source flow (2,H,W) float32 (x, y) and visibility (H,W) uint8 of two posed figures of one
    identity and their part maps (`part_map`).

    A target pixel x on part p comes from source position A_src,p(A_tgt,p^-1(x)). It is visible (0) when that
    position lies inside the frame and its nearest source pixel shows part p; otherwise invisible (1).
    Target background is 2 with zero flow.
    """
    h, w = tgt_parts.shape
    inv_t = np.linalg.inv(np.concatenate([tgt_fig.affines, np.tile([[[0.0, 0.0, 1.0]]], (len(PARTS), 1, 1))],
                                         axis=1))
    maps = np.einsum("pij,pjk->pik", src_fig.affines, inv_t)  # (P,2,3): target pixel -> source pixel
    ys, xs = np.nonzero(tgt_parts)
    part = tgt_parts[ys, xs].astype(np.int64)  # (n,) in 1..P
    m = maps[part - 1]  # (n,2,3)
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    flow = np.zeros((2, h, w), np.float32)
    flow[0, ys, xs], flow[1, ys, xs] = sx - xs, sy - ys
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    ri = np.clip(np.floor(sy + 0.5), 0, h - 1).astype(np.int64)
    rj = np.clip(np.floor(sx + 0.5), 0, w - 1).astype(np.int64)
    vis = np.full((h, w), 2, np.uint8)
    vis[ys, xs] = np.where(inside & (src_parts[ri, rj] == part), 0, 1)
    return flow, vis


# ------------------------------------------------------------------------------------------------- files


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with fixed zip timestamps, so that the same arrays give byte-identical files."""
    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for key, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue(), compresslevel=1)

    atomic_write(path, write, fsync=False)  # generated data: thousands of files, regenerated if a run is cut


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def image_names(style: Style, seed: int, identity: int, poses: list[Pose]) -> list[str]:
    """Release-like names: DeepFashion `synthid{id:06d}_{pose}{view}.jpg` (person = before the last '_'),
    Market `{id:04d}_c{camera}s1_{frame:06d}_00.jpg`."""
    number = identity + 1
    if style.name == "market":
        rng = _rng(seed, 3, identity)
        frames = np.sort(rng.choice(199999, size=len(poses), replace=False)) + 1
        cameras = rng.integers(1, 7, size=len(poses))
        return [f"{number:04d}_c{c}s1_{f:06d}_00.jpg" for c, f in zip(cameras, frames)]
    return [f"synthid{number:06d}_{k + 1}{pose.view}.jpg" for k, pose in enumerate(poses)]


_VIEW_IN_NAME = re.compile(r"_\d+(front|side|back)\.\w+$")
POSE_CHANGES = ("same view", "side<->front", "front<->back", "side<->back")


def pose_change(src: str, tgt: str) -> str | None:
    """The kind of pose change of a pair of DeepFashion-like synthetic image names (`image_names`): one of
    POSE_CHANGES, or None when a name carries no view (other datasets, the Market-like names)."""
    views = [_VIEW_IN_NAME.search(name) for name in (src, tgt)]
    if None in views:
        return None
    a, b = (v.group(1) for v in views)
    if a == b:
        return "same view"
    return {frozenset(("side", "front")): "side<->front", frozenset(("front", "back")): "front<->back",
            frozenset(("side", "back")): "side<->back"}[frozenset((a, b))]


def render_identity(style: Style, seed: int, identity: int, n_poses: int) -> tuple[list[str], list[Rendering]]:
    """All images of one identity; seeded by (seed, identity[, pose]) only, so the order of work is irrelevant."""
    app = sample_appearance(_rng(seed, 1, identity))
    poses = [sample_pose(_rng(seed, 2, identity, k), style) for k in range(n_poses)]
    renders = []
    for k, pose in enumerate(poses):
        fig = pose_figure(app, pose, style.height, style.width)
        renders.append(render(app, fig, background(_rng(seed, 4, identity, k), style.height, style.width,
                                                   style.cluttered)))
    return image_names(style, seed, identity, poses), renders


def random_pose_pair(style: Style, seed: int, identities: Sequence[int], index: int) -> tuple[Appearance, Pose, Pose]:
    """Pair `index` of an endless stream of flow-module training pairs: one of `identities` (the people of the
    dataset made with `seed`) in two fresh poses. Seeded by (seed, index) only."""
    rng = _rng(seed, 6, index)
    app = sample_appearance(_rng(seed, 1, int(identities[rng.integers(len(identities))])))
    return app, sample_pose(rng, style), sample_pose(rng, style)


def pose_pair_flow(style: Style, app: Appearance, source: Pose,
                   target: Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One identity in two poses, with no image drawn -> keypoints (2,18,2) int64 (y, x) of source and target (-1
    missing, as `keypoints`), the exact target->source flow (2,H,W) float32 and visibility (H,W) uint8
    (`correspondence`)."""
    specs = part_specs(app)
    figs = [pose_figure(app, pose, style.height, style.width) for pose in (source, target)]
    src_parts, tgt_parts = (part_map(specs, fig) for fig in figs)
    flow, vis = correspondence(figs[0], src_parts, figs[1], tgt_parts)
    return np.stack([keypoints(fig) for fig in figs]), flow, vis


def _write_identity(task: tuple[str, str, int, int, int, str]) -> tuple[list[str], list[np.ndarray]]:
    out, style_name, seed, identity, n_poses, split = task
    root = Path(out)
    names, renders = render_identity(STYLES[style_name], seed, identity, n_poses)
    for name, r in zip(names, renders):
        write_image(root / split / name, r.image, params=[cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        write_image(root / f"{split}_parsing" / f"{stem(name)}.png", r.labels, rgb=False)
    for i, src in enumerate(renders):
        for j, tgt in enumerate(renders):
            if i != j:
                flow, vis = correspondence(src.figure, src.parts, tgt.figure, tgt.parts)
                save_npz(root / f"{split}_flow" / flow_file_name(names[i], names[j]), flow=flow.astype(np.float16),
                         vis=vis)
    return names, [keypoints(r.figure) for r in renders]


def held_out_identities(seed: int, identities: int, test_fraction: float) -> set[int]:
    """The identities of the test split: round(fraction * n), at least one each side."""
    n_test = min(max(round(identities * test_fraction), 1), identities - 1)
    return {int(i) for i in _rng(seed, 5, identities).permutation(identities)[:n_test]}


def generate_dataset(out: str | Path, style: str = "deepfashion", identities: int = 60, poses: int = 6,
                     seed: int = 0, test_fraction: float = 0.15, workers: int = 1) -> dict[str, int | float]:
    """Write the release layout (docs/data.md#layout) under `out`; returns counts and the elapsed seconds. The
    temporary files a killed earlier run left in these folders are removed first (utils.io.remove_orphans)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if identities < 2:
        raise ValueError(f"identities must be at least 2 (one per split), got {identities}")
    if poses < 2:
        raise ValueError(f"poses must be at least 2 (pairs are within an identity), got {poses}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    started = time.time()
    st, root = STYLES[style], ensure_writable_folder(Path(out), "dataset folder")
    remove_orphans(root)  # the temporaries a killed earlier run left
    for split in ("train", "test"):
        for suffix in ("", "_parsing", "_flow"):
            (root / f"{split}{suffix}").mkdir(parents=True, exist_ok=True)
            remove_orphans(root / f"{split}{suffix}")
    test_ids = held_out_identities(seed, identities, test_fraction)
    tasks = [(str(root), style, seed, i, poses, "test" if i in test_ids else "train") for i in range(identities)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_identity, tasks))
    else:
        results = [_write_identity(t) for t in tasks]
    counts: dict[str, int | float] = {}
    for split in ("train", "test"):
        annotations, pairs = {}, []
        for task, (names, kps) in zip(tasks, results):
            if task[5] == split:
                annotations.update(zip(names, kps))
                pairs += [(a, b) for a in names for b in names if a != b]
        write_annotations(root / st.annotation_file.format(split=split), annotations)
        write_pairs(root / st.pairs_file.format(split=split), pairs)
        counts[f"{split}_identities"] = sum(t[5] == split for t in tasks)
        counts[f"{split}_images"], counts[f"{split}_pairs"] = len(annotations), len(pairs)
    write_json(root / MANIFEST, {"style": style, "identities": identities, "poses": poses, "seed": seed,
                                 "test_fraction": test_fraction})
    counts["seconds"] = time.time() - started
    return counts

"""One source person re-rendered in a pose that is edited joint by joint: what app.py's page does on each event.

A Studio holds what every browser tab shares (the checkpoint's pipeline, loaded once; the galleries; the photo
estimators); a Session is one tab's state (its source, the pose being edited, what the page shows). Each operation
changes the session and, when the pose or the source changed, re-renders:

    SPATN's target parsing, the source warped by the flow module's flow (models.pipeline.warped_source: what
    SPGNet's appearance path receives), and the generated person, through models.pipeline.render_poses

Editing, on the skeleton drawn over the generated person (the editor picture, `scale` times the model's frame):
a click near a joint selects it; the next click moves the selected joint there (a joint chosen by name is placed
by the next click, which adds it when it was missing); `remove_joint` takes the selected joint out; `reset` goes
back to the picked target pose (or the source's own). A pose that infer.py would refuse (fewer than 4 joints in the
frame, no torso: data.pose_files.check_pose) is not rendered: the outputs are cleared and the message says why.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from data.animation import VideoWriterError, interpolate_poses, write_gif, write_mp4
from data.pose import JOINT_NAMES, MISSING, is_missing
from data.pose_files import PoseError, check_pose
from data.visual import from_uint8, parsing_picture, skeleton_picture, to_uint8
from models.pipeline import Pipeline, load_pipeline, render_poses, render_sequence, source_parsing, warped_source
from photos.inputs import read_photo, stamp
from studio.gallery import Person, PhotoEstimators, test_gallery
from utils import checkpoint as ck
from utils.config import Config, config_from_dict
from utils.distributed import parse_device
from utils.errors import InputError

DEMO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "runs" / "demo" / "joint" / "checkpoints"  # make demo's
NO_CHECKPOINT = ("No checkpoint to load: `make demo` trains one (into runs/demo), or start the app with "
                 "`--checkpoint PATH` (a joint-stage step-*.pt).")
PICK_RADIUS = 0.06  # a click within this fraction of the frame's height of a joint selects it
OUTPUTS = ("parsing", "warped", "generated")
SELECTED_COLOUR = (255, 200, 0)  # the ring around the selected joint


@dataclass
class Source:
    """A person as the pipeline reads them, on its device: what every render of this source reuses."""

    person: Person
    image: torch.Tensor  # (3,H,W) in [-1, 1]
    keypoints: torch.Tensor  # (18,2)
    parsing: torch.Tensor  # (K,H,W) one-hot


@dataclass
class Session:
    """One browser tab: its source, the target pose being edited and what the page shows."""

    source: Source | None = None
    pose: np.ndarray | None = None  # (18,2) float32, the edited target pose
    reference: np.ndarray | None = None  # the target pose picked in the gallery (reset); None: the source's own
    selected: int | None = None  # the joint being edited
    armed: bool = False  # the next click on the editor places the selected joint
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # OUTPUTS at the model's size, when rendered
    message: str = ""


def display_scale(height: int, target: int = 384) -> int:
    """The integer enlargement that shows a frame `height` pixels high at about `target` pixels."""
    return max(1, round(target / height))


class Studio:
    """The shared half of the app: pipeline, galleries and photo estimators (module docstring)."""

    def __init__(self, cfg: Config, pipe: Pipeline, device: torch.device, people: list[Person],
                 poses: list[tuple[str, np.ndarray]], estimators: PhotoEstimators, workdir: Path):
        self.cfg, self.pipe, self.device = cfg, pipe, device
        self.people, self.poses, self.estimators, self.workdir = people, poses, estimators, workdir
        self.frame: tuple[int, int] = tuple(cfg.data.image_size)
        self.scale = display_scale(self.frame[0])

    # ------------------------------------------------------------------------------------------ pictures

    def enlarge(self, picture: np.ndarray) -> np.ndarray:
        """(H,W,3) at the model's size -> (sH,sW,3), each pixel a s x s block (what the model made, unsmoothed)."""
        return np.repeat(np.repeat(picture, self.scale, axis=0), self.scale, axis=1)

    def to_display(self, keypoints: np.ndarray) -> np.ndarray:
        """(18,2) model-frame keypoints -> the editor picture's pixels (pixel centres map to block centres)."""
        return np.where(is_missing(keypoints)[:, None], MISSING, (keypoints + 0.5) * self.scale - 0.5)

    def from_display(self, x: float, y: float) -> np.ndarray:
        """A click on the editor picture, (x, y) in its pixels -> (y, x) in the model's frame."""
        return np.array([(y + 0.5) / self.scale - 0.5, (x + 0.5) / self.scale - 0.5], np.float32)

    def pose_picture(self, keypoints: np.ndarray) -> np.ndarray:
        """A pose's skeleton on a dark ground, enlarged: a target-pose thumbnail."""
        ground = np.full((*self.frame, 3), 40, np.uint8)
        return skeleton_picture(self.enlarge(ground), self.to_display(keypoints))

    def editor(self, session: Session) -> np.ndarray | None:
        """The edited pose's skeleton over the generated person (the source before there is one), enlarged; the
        selected joint ringed."""
        if session.source is None:
            return None
        under = session.pictures.get("generated", session.source.person.image)
        picture = skeleton_picture(self.enlarge(under), self.to_display(session.pose))
        if session.selected is not None and not is_missing(session.pose[session.selected]):
            y, x = np.round(self.to_display(session.pose)[session.selected]).astype(int)
            cv2.circle(picture, (int(x), int(y)), 3 * self.scale + 2, SELECTED_COLOUR, max(1, self.scale // 2),
                       cv2.LINE_AA)
        return picture

    def outputs(self, session: Session) -> dict[str, np.ndarray | None]:
        """The page's pictures: source, editor and OUTPUTS (None where there is nothing to show), enlarged."""
        shown = {"source": None if session.source is None else session.source.person.image,
                 **{name: session.pictures.get(name) for name in OUTPUTS}}
        return {"editor": self.editor(session),
                **{name: None if picture is None else self.enlarge(picture) for name, picture in shown.items()}}

    # --------------------------------------------------------------------------------------- the source

    def set_source(self, session: Session, person: Person) -> Session:
        """Make `person` the session's source, in the picked target pose (or their own), and render."""
        image = from_uint8(person.image).to(self.device)  # (3,H,W)
        keypoints = torch.from_numpy(person.keypoints).to(self.device)  # (18,2)
        parsing = source_parsing(self.pipe, image, keypoints, person.labels, self.cfg)  # (K,H,W)
        session.source = Source(person, image, keypoints, parsing)
        return self.reset(session)

    def pick_person(self, session: Session, index: int) -> Session:
        return self.set_source(session, self.people[index])

    def upload(self, session: Session, path: Path) -> Session:
        """A photo as the source (its keypoints and parsing estimated); a refusal or a missing estimator is the
        session's message, the source unchanged."""
        try:
            photo = read_photo(path, self.frame)  # the cheap checks first: is it an image, is it large enough
            lacking = self.estimators.missing()
            if lacking:
                session.message = "An uploaded photo needs what is not here: " + "; ".join(lacking) + "."
                return session
            person = self.estimators.person(photo, path, self.frame, self.cfg.data.keypoint_margin)
        except InputError as err:  # the temporary folder of the upload means nothing to the user: name the file
            session.message = str(err).replace(str(path), path.name)
            return session
        return self.set_source(session, person)

    # ------------------------------------------------------------------------------------------ editing

    def pick_pose(self, session: Session, index: int) -> Session:
        session.reference = self.poses[index][1].copy()
        if session.source is None:
            session.pose = session.reference.copy()
            session.message = "Pick a person (or upload a photo) to see them in this pose."
            return session
        return self.reset(session)

    def reset(self, session: Session) -> Session:
        """Back to the picked target pose, or the source's own."""
        if session.source is None:
            session.message = "Pick a person (or upload a photo) first."
            return session
        start = session.reference if session.reference is not None else session.source.person.keypoints
        session.pose, session.selected, session.armed = start.copy(), None, False
        return self.render(session)

    def choose_joint(self, session: Session, name: str) -> Session:
        """Select a joint by name: the next click places it."""
        session.selected, session.armed = JOINT_NAMES.index(name), True
        session.message = f"Click where the {name} goes."
        return session

    def click(self, session: Session, x: float, y: float) -> Session:
        """A click on the editor at its pixel (x, y): place the selected joint, or select the joint clicked."""
        if session.source is None:
            session.message = "Pick a person (or upload a photo) first."
            return session
        point = self.from_display(x, y)  # (y, x) in the model's frame
        if session.armed and session.selected is not None:
            session.pose[session.selected], session.armed = point, False
            return self.render(session)
        present = ~is_missing(session.pose)
        distance = np.where(present, np.linalg.norm(session.pose - point, axis=1), np.inf)  # (18,)
        nearest = int(np.argmin(distance))
        if distance[nearest] > PICK_RADIUS * self.frame[0]:
            session.message = "Click on a joint to select it (or choose one in the list), then click where it goes."
            return session
        session.selected, session.armed = nearest, True
        session.message = f"{JOINT_NAMES[nearest].capitalize()} selected: click where it goes."
        return session

    def remove_joint(self, session: Session) -> Session:
        if session.source is None or session.selected is None:
            session.message = "Select a joint first."
            return session
        session.pose[session.selected], session.selected, session.armed = MISSING, None, False
        return self.render(session)

    # ---------------------------------------------------------------------------------------- rendering

    def refusal(self, pose: np.ndarray) -> str | None:
        """Why the pipeline would refuse the pose (infer.py's rule), or None."""
        try:
            check_pose(pose, "target", *self.frame, margin=self.cfg.data.keypoint_margin)
        except PoseError as err:
            return f"Pose refused: {err}."
        return None

    @torch.no_grad()
    def render(self, session: Session) -> Session:
        """Render the source in the edited pose: target parsing, warped source, generated person."""
        session.message = self.refusal(session.pose) or ""
        if session.message:
            session.pictures = {}
            return session
        src = session.source
        out = render_poses(self.pipe, src.image, src.keypoints, src.parsing,
                           torch.from_numpy(session.pose).to(self.device)[None])
        generated = to_uint8(out.image)[0]
        if src.person.random:
            generated = stamp(generated, "RANDOM WEIGHTS")
        session.pictures = {"parsing": parsing_picture(out.logits)[0],
                            "warped": to_uint8(warped_source(src.image[None], out.flow, out.vis))[0],
                            "generated": generated}
        return session

    def animate(self, session: Session, frames: int, fps: float) -> list[Path]:
        """The source from its own pose to the edited one in `frames` poses (data.animation.interpolate_poses):
        [GIF, mp4] written into the work folder, enlarged as the page shows them ([GIF] when OpenCV has no mp4v)."""
        if session.source is None:
            session.message = "Pick a person (or upload a photo) first."
            return []
        session.message = self.refusal(session.pose) or ""
        if session.message:
            return []
        src = session.source
        poses = interpolate_poses(src.person.keypoints, session.pose, frames)  # (N,18,2)
        images, _ = render_sequence(self.pipe, src.image, src.keypoints, src.parsing,
                                    torch.from_numpy(poses).to(self.device), self.cfg.test.batch_size, progress=False)
        if src.person.random:
            images = np.stack([stamp(image, "RANDOM WEIGHTS") for image in images])
        images = np.stack([self.enlarge(image) for image in images])
        stem = self.workdir / f"animation-{uuid.uuid4().hex[:12]}"
        written = [write_gif(images, stem.with_suffix(".gif"), fps)]
        try:
            written.append(write_mp4(images, stem.with_suffix(".mp4"), fps))
        except VideoWriterError as err:
            session.message = f"{err} (the GIF is written)"
        return written


# ------------------------------------------------------------------------------------------------ loading


def default_threads() -> int:
    """torch's CPU threads for the app: all the cores this process may use but one, at least one. The browser
    showing the page and the web server need a core; a torch thread that waits for a core another process holds
    stalls every operation of the render (on a busy 2-core machine 2 threads took several times 1 thread's time)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def default_checkpoint() -> Path | None:
    """The demo's last joint-stage checkpoint, when `make demo` has made one."""
    found = ck.step_checkpoints(DEMO_CHECKPOINTS)
    return found[-1] if found else None


def load_studio(checkpoint: Path | None, workdir: Path, device: str | None = None, data_root: str | None = None,
                gallery: int = 24, keypoints: str = "auto", keypoint_weights: str = "published",
                parser_weights: str = "published") -> tuple[Studio, str]:
    """A Studio on a joint-stage checkpoint (None: the demo's last), loaded once, with `gallery` test people and
    poses of `data_root` (default: the checkpoint's data.root) and the photo estimators (studio.gallery); and a note
    when the galleries are empty because the dataset is not there. A checkpoint that cannot be used raises its
    InputError (NO_CHECKPOINT when there is none)."""
    path = checkpoint or default_checkpoint()
    if path is None:
        raise InputError(NO_CHECKPOINT)
    saved = ck.load_checkpoint(path)
    cfg = config_from_dict(saved["config"], origin=f"the config saved in {path}")
    cfg.model.flow.source = "net"  # edited poses have no precomputed flow: the flow module computes it
    torch_device = parse_device(device)
    pipe = load_pipeline(cfg, saved, path, torch_device)
    try:
        people, poses = test_gallery(cfg, Path(data_root or cfg.data.root), gallery)
        note = ""
    except InputError as err:
        people, poses, note = [], [], f"{err}. Upload a photo instead."
    estimators = PhotoEstimators(keypoints, keypoint_weights, parser_weights,
                                 spatn_parses=cfg.model.spatn.input == "image", device=device)
    return Studio(cfg, pipe, torch_device, people, poses, estimators, workdir), note

"""Pose transfer in the browser: pick a person, move their joints, watch them re-rendered (a local Gradio page).

    make app                                   # after `make demo`: its last joint checkpoint, http://127.0.0.1:7860
    python app.py --checkpoint runs/00001-deepfashion/checkpoints/step-00200000.pt --port 7861

The page (served to this machine only, 127.0.0.1):
  source       a gallery of the dataset's test people (the checkpoint's data.root, or --data-root), or an uploaded
               photo of one person, framed and its keypoints and parsing estimated as infer.py does (photos/):
               MediaPipe or OpenPose for the keypoints, SCHP for the parsing unless the checkpoint's SPATN* predicts
               it. What an upload would need and is not installed is named in the page, with how to get it.
  target pose  a gallery of test poses, or edit the skeleton drawn over the generated person: click a joint, then
               click where it goes; a joint chosen in the list is placed by the next click (so a missing joint is
               added); "remove joint" takes the selected one out; "reset" returns to the picked pose.
  output       SPATN's predicted target parsing, the source warped by the flow module's flow and split by its
               visibility (what SPGNet's appearance path receives), and the generated person, re-rendered on every
               change; "animate" renders the poses between the source's own and the edited one into a GIF (and an mp4
               to download).
A pose with fewer than 4 joints in the frame or no torso is refused, the reason in the page (infer.py's rule). The
checkpoint is loaded once into one pipeline (models/pipeline.py), run on all the cores but one (--threads);
requests are queued and served one at a time (studio/ holds the work, app.py the page). Without a checkpoint (no
`make demo` yet, no --checkpoint) or with one that cannot be loaded, the page says so. One re-render's time:
scripts/benchmark_app.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

import torch

from data.pose import JOINT_NAMES
from studio.session import Session, Studio, default_threads, load_studio
from utils.cli import positive_int, run_main
from utils.distributed import parse_device
from utils.errors import InputError

try:
    import gradio as gr
except ModuleNotFoundError:  # the optional extra (requirements-app.txt): main() says how to install it
    gr = None

HOST = "127.0.0.1"  # this machine only
QUEUE_SIZE = 64  # requests waiting beyond this many are turned away, not piled up
SESSION_SECONDS = 3600  # a closed tab's state is dropped after this long
HINT = "Click a joint on the skeleton, then click where it goes."
WARPED_LABEL = "Warped source (dim: occluded in the source; white: background)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a joint-stage checkpoint (default: the last of runs/demo/joint/checkpoints)")
    p.add_argument("--data-root", default=None, help="the dataset of the galleries (default: the checkpoint's)")
    p.add_argument("--port", type=positive_int, default=7860)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch's CPU threads (default: all cores but one, left to the browser and the server)")
    p.add_argument("--gallery", type=positive_int, default=24, help="test people (and test poses) shown")
    p.add_argument("--keypoints", choices=("auto", "mediapipe", "openpose"), default="auto",
                   help="keypoint estimator of uploads (auto: MediaPipe when installed, else OpenPose)")
    p.add_argument("--keypoint-weights", default="published",
                   help="OpenPose's weights: 'published' (torch hub cache), a path, or 'random' (offline tests only)")
    p.add_argument("--parser-weights", default="published",
                   help="SCHP's weights: 'published' (torch hub cache), a path, or 'random' (offline tests only)")
    return p.parse_args(argv)


def open_studio(args: argparse.Namespace, workdir: Path) -> tuple[Studio, str]:
    """studio.session.load_studio with the command line's choices."""
    return load_studio(Path(args.checkpoint) if args.checkpoint else None, workdir, args.device, args.data_root,
                       args.gallery, args.keypoints, args.keypoint_weights, args.parser_weights)


# ------------------------------------------------------------------------------------------------- the page


def message_page(message: str) -> gr.Blocks:
    """The page when there is no model to serve: the reason and what to do."""
    with gr.Blocks(title="SPGNet pose transfer", analytics_enabled=False) as page:
        gr.Markdown("# SPGNet pose transfer")
        gr.Markdown(message, elem_id="status")
    return page


def upload_note(studio: Studio) -> str:
    lacking = studio.estimators.missing()
    if lacking:
        return "Uploads need what is not installed here: " + "; ".join(lacking) + "."
    return f"Keypoints by {studio.estimators.backend}; the person is framed as the training images are."


def build_page(studio: Studio, note: str = "") -> gr.Blocks:
    """The app's page: galleries and upload (left), editor and outputs (right); its events wired by wire_events."""
    image = {"interactive": False, "format": "png", "buttons": ["download"]}
    gallery = {"columns": 4, "height": 330, "allow_preview": False, "format": "png"}
    ui = {}
    with gr.Blocks(title="SPGNet pose transfer", analytics_enabled=False) as page:
        ui["session"] = gr.State(Session(), time_to_live=SESSION_SECONDS)
        gr.Markdown("# SPGNet pose transfer\nPick a person and a target pose, then move the joints.")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                ui["people"] = gr.Gallery([studio.enlarge(p.image) for p in studio.people], label="Source person",
                                          elem_id="people", **gallery)
                ui["upload"] = gr.File(label="or upload a photo of one person", type="filepath", elem_id="upload")
                gr.Markdown(upload_note(studio))
                ui["poses"] = gr.Gallery([studio.pose_picture(kp) for _, kp in studio.poses], label="Target pose",
                                         elem_id="poses", **gallery)
            with gr.Column(scale=3):
                ui["status"] = gr.Markdown(note or "Pick a person (or upload a photo).", elem_id="status")
                with gr.Row():
                    ui["editor"] = gr.Image(label="Pose editor: click a joint, then where it goes", elem_id="editor",
                                            **image)
                    ui["generated"] = gr.Image(label="Generated person", elem_id="generated", **image)
                with gr.Row():
                    ui["joint"] = gr.Dropdown(list(JOINT_NAMES), value=None, elem_id="joint",
                                              label="Joint (choose, then click where it goes)")
                    ui["remove"] = gr.Button("Remove joint", elem_id="remove")
                    ui["reset"] = gr.Button("Reset pose", elem_id="reset")
                with gr.Row():
                    ui["source"] = gr.Image(label="Source", elem_id="source", **image)
                    ui["parsing"] = gr.Image(label="Predicted target parsing", elem_id="parsing", **image)
                    ui["warped"] = gr.Image(label=WARPED_LABEL, elem_id="warped", **image)
                with gr.Row():
                    ui["frames"] = gr.Slider(2, 48, value=16, step=1, label="Frames", elem_id="frames")
                    ui["animate"] = gr.Button("Animate: source pose to edited pose", elem_id="animate")
                ui["animation"] = gr.Image(label="Animation", type="filepath", interactive=False, elem_id="animation")
                ui["files"] = gr.File(label="GIF and mp4", file_count="multiple", interactive=False, elem_id="files")
        wire_events(studio, ui)
    return page


VIEW = ("session", "source", "editor", "parsing", "warped", "generated", "joint", "status")  # what an edit updates


def wire_events(studio: Studio, ui: dict) -> None:
    """Each control's event -> a Studio operation -> the VIEW components (the animation: its own three). Every event
    of every tab is in one concurrency group of one: the model serves one request at a time, the rest queue."""

    def show(s: Session) -> tuple:
        pictures = studio.outputs(s)
        selected = None if s.selected is None else JOINT_NAMES[s.selected]
        return (s, pictures["source"], pictures["editor"], pictures["parsing"], pictures["warped"],
                pictures["generated"], gr.update(value=selected), s.message or HINT)

    def pick_person(s: Session, evt: gr.SelectData) -> tuple:
        return show(studio.pick_person(s, evt.index))

    def pick_pose(s: Session, evt: gr.SelectData) -> tuple:
        return show(studio.pick_pose(s, evt.index))

    def click(s: Session, evt: gr.SelectData) -> tuple:
        x, y = evt.index
        return show(studio.click(s, x, y))

    def upload(s: Session, path: str | None) -> tuple:
        return show(s if path is None else studio.upload(s, Path(path)))

    def animate(s: Session, frames: float) -> tuple:
        written = studio.animate(s, int(frames), fps=8.0)
        return (written[0] if written else None), [str(p) for p in written], s.message or HINT

    view = [ui[name] for name in VIEW]
    one = {"concurrency_id": "model", "concurrency_limit": 1}
    ui["people"].select(pick_person, [ui["session"]], view, **one)
    ui["poses"].select(pick_pose, [ui["session"]], view, **one)
    ui["editor"].select(click, [ui["session"]], view, **one)
    ui["upload"].upload(upload, [ui["session"], ui["upload"]], view, **one)
    ui["joint"].input(lambda s, name: show(studio.choose_joint(s, name)), [ui["session"], ui["joint"]], view, **one)
    ui["remove"].click(lambda s: show(studio.remove_joint(s)), [ui["session"]], view, **one)
    ui["reset"].click(lambda s: show(studio.reset(s)), [ui["session"]], view, **one)
    ui["animate"].click(animate, [ui["session"], ui["frames"]], [ui["animation"], ui["files"], ui["status"]], **one)


def serve(page: gr.Blocks, port: int, workdir: Path, block: bool = True) -> str:
    """Serve the page on 127.0.0.1:port, its events queued (at most QUEUE_SIZE waiting); returns the URL (block=False:
    at once, the server in a thread; page.close() stops it)."""
    page.queue(max_size=QUEUE_SIZE)
    try:
        _, url, _ = page.launch(server_name=HOST, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                                ssr_mode=False, allowed_paths=[str(workdir)], footer_links=[])
    except OSError as err:
        raise InputError(f"cannot serve on {HOST}:{port} ({err}); pass another --port") from err
    print(f"serving on {url} (Ctrl-C stops)", flush=True)
    if block:
        page.block_thread()
    return url


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if gr is None:
        raise InputError("the app needs Gradio: `make app` installs it (or pip install -r requirements-app.txt)")
    parse_device(args.device)  # a device this host lacks is a command-line error, not a page
    torch.set_num_threads(args.threads or default_threads())
    with tempfile.TemporaryDirectory(prefix="spgnet-app-") as workdir:
        # Gradio's copies of the pictures and uploads go here too, and are gone when the app stops
        os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(workdir) / "gradio"))
        try:
            studio, note = open_studio(args, Path(workdir))
            page = build_page(studio, note)
        except InputError as err:  # shown in the page, where the user looks
            print(f"no model to serve: {err}", file=sys.stderr, flush=True)
            page = message_page(str(err))
        # a stop by SIGTERM as by Ctrl-C: Gradio closes the server, and the temporary folder is removed
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        serve(page, args.port, Path(workdir))


if __name__ == "__main__":
    run_main(main)

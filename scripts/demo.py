"""The whole pipeline on synthetic people, on a laptop CPU: `make demo` runs this.

    generate the synthetic dataset -> train the flow module (stage 0) -> train SPATN + SPGNet jointly
    -> test.py on held-out pairs -> evaluate.py (the model and two baselines) -> runs/demo/report.html

    python scripts/demo.py                 # the whole demo; a second run finds everything done and only rewrites
                                           # the report
    python scripts/demo.py --minutes 30    # after a finished demo: train the joint stage 30 more minutes from its
                                           # last checkpoint, then test, evaluate and report that checkpoint

Every step resumes: re-running skips finished steps and continues an interrupted training run from its last
checkpoint (with what is left of the default budget). demo.yaml's learning rate is held for the first half of
each training invocation's budget and decays linearly to zero over the second, so a continuation (--minutes N)
restarts at the full rate and decays again over its N minutes. The test images and metrics of each joint checkpoint live
in <out>/test-<step>/, so a longer run is evaluated afresh and an evaluated one is never recomputed. The baselines
(copy the source image; a constant image of the training set's mean background colour) are scored by the same
evaluate.py. <out>/timings.json adds up the wall time of every step that ran, over all invocations, so the
report shows the real cost of the run even when the last invocation only re-evaluated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from data.annotations import read_pairs
from data.datasets import generated_image_name, stem
from data.synthetic import STYLES
from utils.checkpoint import load_checkpoint, step_checkpoints
from utils.cli import run_main
from utils.config import Config, ConfigError, load_config
from utils.io import ensure_writable_folder, read_image, write_image, write_json
from utils.report import write_report

ROOT = Path(__file__).resolve().parents[1]  # the demo's paths and commands are relative to it
# stage 0, demo.yaml's flow module with limb flows: 600 steps at batch 8 (an earlier variant's held-out
# end-point error at 128x88 was 3.6 px after 300 steps and 2.4 after 600; demo.yaml's reaches 1.5 after 600), at
# most 4 minutes; 2.6-2.8 on an idle 2-core AMD EPYC Zen 5. The two training stages share TRAIN_MINUTES: the
# joint stage gets what stage 0 left, so never less than 7.25. With the install, the data, the test and the
# evaluations (about 2 minutes) a fresh clone's `make demo` stays inside 15 minutes on the slower of our machines
# (README, "What the demo reaches")
TRAIN_MINUTES = 11.25
FLOW_STEPS, FLOW_MINUTES = 600, 4.0
# no FID: with the random-init Inception the demo has offline it compares nothing, and it took 35 s a demo
MODEL_METRICS = "ssim,mssim,lpips,mlpips,colour,texture,parsing"
BASELINE_METRICS = "ssim,mssim,lpips,mlpips,colour,texture"  # no parsing to score
BASELINES = ("copy_source", "background")


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


class Timings:
    """Seconds spent per demo step, summed over invocations, in <out>/timings.json."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text())["seconds"] if path.is_file() else {}

    def run(self, step: str, cmd: list[str]) -> None:
        start = time.time()
        try:
            run(cmd)
        finally:  # an interrupted step's time was spent too
            self.seconds[step] = self.seconds.get(step, 0.0) + time.time() - start
            write_json(self.path, {"seconds": self.seconds})


def dataset_style(cfg: Config) -> str:
    """The synthetic style whose image size the config trains at."""
    size = tuple(cfg.data.image_size)
    for name, style in STYLES.items():
        if (style.height, style.width) == size and style.cluttered == (cfg.data.name == "synthetic_market"):
            return name
    raise ConfigError(f"key 'data.image_size' = {list(size)}: no synthetic style renders {size[0]}x{size[1]}")


def finished(last: dict, max_steps: int) -> bool:
    """Whether a training run's last checkpoint ended it: max_steps reached or its time budget spent."""
    return last["step"] >= max_steps or last.get("reason") == "max_minutes reached"


def test_pairs(cfg: Config, limit: int) -> list[tuple[str, str]]:
    return read_pairs(Path(cfg.data.root) / cfg.data.pairs_test)[:limit]


def mean_background_colour(cfg: Config) -> np.ndarray:
    """(3,) uint8 RGB: the mean colour of the background pixels (parsing label 0) of the training images."""
    root = Path(cfg.data.root)
    total, count = np.zeros(3), 0
    for image_path in sorted((root / cfg.data.train_dir).glob("*.jpg")):
        labels = read_image(root / (cfg.data.train_dir + cfg.data.parsing_suffix) / (stem(image_path.name) + ".png"),
                            cv2.IMREAD_UNCHANGED)
        background = labels == 0  # (H,W)
        total += read_image(image_path)[background].sum(axis=0)[::-1]  # BGR -> RGB
        count += int(background.sum())
    return np.round(total / count).astype(np.uint8)


def write_baselines(cfg: Config, pairs: list[tuple[str, str]], out: Path) -> dict[str, Path]:
    """Per pair, <out>/copy_source/<name>.png (the source image) and <out>/background/<name>.png (a constant
    image of the mean background colour), unless every one exists; returns each baseline's image folder."""
    folders = {name: out / name for name in BASELINES}
    if all((folders[b] / generated_image_name(*pair)).is_file() for b in BASELINES for pair in pairs):
        return folders
    for folder in folders.values():
        ensure_writable_folder(folder)
    h, w = cfg.data.image_size
    test_dir = Path(cfg.data.root) / cfg.data.test_dir
    constant = np.broadcast_to(mean_background_colour(cfg), (h, w, 3))
    for src, tgt in pairs:
        name = generated_image_name(src, tgt)
        write_image(folders["copy_source"] / name, read_image(test_dir / src), rgb=False)  # BGR as read
        write_image(folders["background"] / name, np.ascontiguousarray(constant))
    return folders


def evaluate_command(py: str, images: Path, metrics: str, metrics_dir: Path, args: argparse.Namespace,
                     data: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """evaluate.py on a folder of generated (or baseline) images, with the demo's random-init backbones."""
    return [py, "evaluate.py", "--generated", str(images), "--dataset-config", args.config, *data, "--out",
            str(metrics_dir), "--weights", "random", "--metrics", metrics, *extra]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--data", default="datasets/synthetic_small", help="where the synthetic set is (made if missing)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--flow-steps", type=int, default=FLOW_STEPS)
    p.add_argument("--flow-minutes", type=float, default=FLOW_MINUTES)
    p.add_argument("--steps", type=int, default=20000, help="joint steps (the time budget usually ends it first)")
    p.add_argument("--minutes", type=float, default=None,
                   help=f"joint training budget: for a new demo, what stage 0 left of {TRAIN_MINUTES:g} min; after "
                        "a finished demo, train this many MORE minutes from its last checkpoint")
    p.add_argument("--test-pairs", type=int, default=200)
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides for every step, e.g. "
                   "model.generator.base_channels=16 (a changed model needs a new --out)")
    return p.parse_intermixed_args(argv)


class Demo:
    """The demo's steps over one output folder, each a subprocess timed in <out>/timings.json; a step skips what an
    earlier invocation finished."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.py, self.out = args, sys.executable, ROOT / args.out
        # every step's overrides: the dataset, the first N test pairs
        self.data = [f"data.root={args.data}", f"data.max_test_pairs={args.test_pairs}", *args.overrides]
        self.cfg = load_config(ROOT / args.config, [*args.overrides, f"data.root={ROOT / args.data}"])
        self.timings = Timings(self.out / "timings.json")
        self.flow_dir, self.joint_dir = self.out / "flow", self.out / "joint"

    def make_data(self) -> None:
        if not (ROOT / self.args.data / self.cfg.data.pairs_test).is_file():
            self.timings.run("data", [self.py, "scripts/make_synthetic.py", "--style", dataset_style(self.cfg),
                                      "--out", self.args.data])

    def train_flow(self) -> Path:
        """Stage 0, the flow module, on the exact flow the renderer writes; its last checkpoint."""
        a = self.args
        ckpts = step_checkpoints(self.flow_dir / "checkpoints")
        if not ckpts or not finished(load_checkpoint(ckpts[-1]), a.flow_steps):
            resume = ["--resume", str(ckpts[-1])] if ckpts else ["--run-dir", str(self.flow_dir)]
            self.timings.run("flow", [self.py, "train.py", "--config", a.config, *resume, "train.batch_size=8",
                                      *self.data, "train.stage=flow", f"train.max_steps={a.flow_steps}",
                                      f"train.max_minutes={a.flow_minutes}", "train.val_every=20",
                                      "train.log_every=5", "train.ckpt_every=50"])
        return step_checkpoints(self.flow_dir / "checkpoints")[-1]

    def joint_budget(self) -> tuple[float, int, list[str]] | None:
        """(minutes, max_steps, how to start) of the joint run still to do, or None when it is finished."""
        a = self.args
        ckpts = step_checkpoints(self.joint_dir / "checkpoints")
        last = load_checkpoint(ckpts[-1]) if ckpts else None
        if last is None:
            return a.minutes or self.default_joint_minutes(), a.steps, ["--run-dir", str(self.joint_dir)]
        if a.minutes is not None:  # continue a finished (or interrupted) run for that many more minutes
            return a.minutes, last["step"] + a.steps, ["--resume", str(ckpts[-1])]
        if not finished(last, a.steps):  # interrupted: what is left of the default budget
            spent = self.timings.seconds.get("joint", 0.0) / 60
            return max(self.default_joint_minutes() - spent, 0.5), a.steps, ["--resume", str(ckpts[-1])]
        return None

    def default_joint_minutes(self) -> float:
        """A default demo's joint budget: what stage 0 left of TRAIN_MINUTES, counting stage 0 at most at its
        default cap, so that a slow (or longer-capped) stage 0 never cuts it below TRAIN_MINUTES - FLOW_MINUTES."""
        flow_minutes = self.timings.seconds.get("flow", 60 * FLOW_MINUTES) / 60
        return TRAIN_MINUTES - min(flow_minutes, FLOW_MINUTES)

    def train_joint(self, flow_ckpt: Path) -> Path:
        """Stages 1 + 2 jointly, with the frozen flow module; the last joint checkpoint."""
        todo = self.joint_budget()
        if todo is not None:
            budget, max_steps, start = todo
            self.timings.run("joint", [self.py, "train.py", "--config", self.args.config, *start, *self.data,
                                       f"model.flow.checkpoint={flow_ckpt}", f"train.max_steps={max_steps}",
                                       f"train.max_minutes={budget}"])
        return step_checkpoints(self.joint_dir / "checkpoints")[-1]

    def test_and_evaluate(self, joint_ckpt: Path, step: int) -> Path:
        """test.py on held-out pairs (skipping complete images), then evaluate.py: each checkpoint once. Returns
        the test folder (images, parsing_labels, metrics)."""
        test_dir = self.out / f"test-{step:08d}"
        metrics_dir = test_dir / "metrics"
        if not (metrics_dir / "metrics.json").is_file():
            self.timings.run("test", [self.py, "test.py", "--config", self.args.config, "--checkpoint",
                                      str(joint_ckpt), *self.data, "--out", str(test_dir), "--grids", "--parsing",
                                      "--skip-existing"])
            self.timings.run("evaluate", evaluate_command(
                self.py, test_dir / "images", MODEL_METRICS, metrics_dir, self.args, self.data,
                ("--pred-parsing", str(test_dir / "parsing_labels"))))
        return test_dir

    def score_baselines(self) -> dict[str, Path]:
        """Each baseline's images (written once) scored by evaluate.py once; its metrics.json by name."""
        baselines = {}
        pairs = test_pairs(self.cfg, self.args.test_pairs)
        for name, folder in write_baselines(self.cfg, pairs, self.out / "baselines").items():
            baselines[name] = folder.parent / f"{name}-metrics" / "metrics.json"
            if not baselines[name].is_file():
                self.timings.run("evaluate", evaluate_command(self.py, folder, BASELINE_METRICS,
                                                              baselines[name].parent, self.args, self.data))
        return baselines

    def write_report(self, step: int, test_dir: Path, baselines: dict[str, Path], minutes: float) -> Path:
        """runs/demo/report.html: the curves, the test pictures, the metrics beside the baselines' and the cost."""
        seconds = self.timings.seconds
        spent = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
        note = (f"<p>Synthetic people, {self.args.config}, joint checkpoint step {step}. Wall time over all "
                f"invocations (min): {spent}; total {sum(seconds.values()) / 60:.1f} (this invocation: "
                f"{minutes:.1f}). LPIPS uses a RANDOM-INIT AlexNet here (no pretrained weights offline): it "
                "is not comparable to published numbers. The colour error, texture correlation and parsing scores "
                "are our own measures (evaluate.py).</p>")
        return write_report(self.out / "report.html", self.joint_dir, self.flow_dir, test_dir,
                            test_dir / "metrics" / "metrics.json", title="SPGNet demo: synthetic people", extra=note,
                            baselines={"copy the source": baselines["copy_source"],
                                       "mean background colour": baselines["background"]})


def main(argv: list[str] | None = None) -> None:
    started = time.time()
    demo = Demo(parse_args(argv))
    demo.out.mkdir(parents=True, exist_ok=True)
    demo.make_data()  # 1. the synthetic set
    flow_ckpt = demo.train_flow()  # 2. stage 0
    joint_ckpt = demo.train_joint(flow_ckpt)  # 3. stages 1 + 2
    step = load_checkpoint(joint_ckpt)["step"]
    test_dir = demo.test_and_evaluate(joint_ckpt, step)  # 4. test.py, 5. evaluate.py
    baselines = demo.score_baselines()
    report = demo.write_report(step, test_dir, baselines, (time.time() - started) / 60)  # 6. the report
    print(f"\nreport: {report}")


if __name__ == "__main__":
    run_main(main)

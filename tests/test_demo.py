"""scripts/demo.py and its report: test pairs spread over people, legends inside their charts, and the demo's
resume rules (a finished demo is not recomputed; --minutes N continues it from its last checkpoint)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import evaluate
import test as test_script
import train
from data.annotations import read_pairs
from scripts import demo as demo_script
from utils.config import load_config
from utils.report import person_of, spread_over_people, svg_chart

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/unit_test/tiny.yaml"  # tiny networks on 128x64 people


def test_report_pairs_span_people():
    names = [f"synthid{p:06d}_{a}front___synthid{p:06d}_{b}back.png" for p in (3, 1, 2) for a in range(3)
             for b in range(3) if a != b]
    chosen = spread_over_people(names, 5)
    people = [person_of(n.split("___")[0]) for n in chosen]
    assert people == ["synthid000001", "synthid000002", "synthid000003", "synthid000001", "synthid000002"]
    assert len(set(chosen)) == 5
    assert spread_over_people(names[:2], 8) == sorted(names[:2])  # fewer pairs than rows: all of them
    assert person_of("0002_c1s1_000451_03.jpg") == "0002"  # Market-1501's id field


def test_chart_legend_lies_inside_the_picture():
    series = {"val/flow_epe_zero_flow_with_a_long_name": [(0, 1.0), (10, 0.5)], "val/ssim_copy_source": [(5, 0.2)],
              "third": [(1, 0.1), (2, 0.3)]}
    svg = svg_chart("t", series)
    height = int(re.search(r'height="(\d+)"', svg).group(1))
    ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)"', svg)]
    assert max(ys) <= height and all(name in svg for name in series)
    xs = [float(x) for x in re.findall(r'<text x="([\d.]+)"', svg)]
    assert max(xs) < 460  # no legend entry starts past the right edge (each has its own line)


ENTRY_POINTS = {"train.py": train.main, "test.py": test_script.main, "evaluate.py": evaluate.main}


def demo(monkeypatch: pytest.MonkeyPatch, market_people: Path, out: Path, *extra: str) -> list[str]:
    """scripts/demo.py's main with the tiny networks, in this process, and each of its steps too: the entry point's
    main on the step's arguments instead of a fresh interpreter (seconds of imports each). Returns the entry points
    the demo ran, in order."""
    ran = []

    def run(cmd: list[str]) -> None:
        ran.append(cmd[1])
        ENTRY_POINTS[cmd[1]](cmd[2:])  # cmd[0] is the interpreter

    monkeypatch.setattr(demo_script, "run", run)
    monkeypatch.chdir(REPO)  # where demo.py runs its steps
    demo_script.main(["--config", CONFIG, "--data", str(market_people), "--out", str(out), "--flow-steps", "1",
                      "--test-pairs", "2", *extra, "train.batch_size=2"])
    return ran


def joint_steps(out: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (out / "joint" / "checkpoints").glob("step-*.pt"))


@pytest.mark.slow  # 17-29 s on the shared 2-core machine (three demo invocations)
def test_minutes_continues_a_finished_demo_and_a_finished_demo_is_not_recomputed(market_people, tmp_path,
                                                                                   monkeypatch):
    out = tmp_path / "demo"
    ran = demo(monkeypatch, market_people, out, "--steps", "1")
    # the flow, the joint stage, its test images, their evaluation and the two baselines'
    assert ran == ["train.py", "train.py", "test.py", "evaluate.py", "evaluate.py", "evaluate.py"]
    assert joint_steps(out)[-1] == 1
    metrics = out / "test-00000001" / "metrics" / "metrics.json"
    values = json.loads(metrics.read_text())["metrics"]
    assert {"ssim", "colour", "colour20", "texture", "texture50", "parsing_acc", "parsing_miou"} <= set(values)
    for baseline in ("copy_source", "background"):
        assert (out / "baselines" / f"{baseline}-metrics" / "metrics.json").is_file()
    first = metrics.stat().st_mtime_ns
    seconds = json.loads((out / "timings.json").read_text())["seconds"]
    assert set(seconds) == {"flow", "joint", "test", "evaluate"}

    # everything done: no training, no test, no evaluation, the report keeps the run's wall time
    assert demo(monkeypatch, market_people, out, "--steps", "1") == []
    assert metrics.stat().st_mtime_ns == first
    assert json.loads((out / "timings.json").read_text())["seconds"] == seconds
    report = (out / "report.html").read_text()
    assert f"total {sum(seconds.values()) / 60:.1f}" in report

    # --minutes N: N more minutes (here: until 1 more step) from the last checkpoint, evaluated afresh; the
    # baselines are done already
    assert demo(monkeypatch, market_people, out, "--steps", "1", "--minutes", "5") == [
        "train.py", "test.py", "evaluate.py"]
    assert joint_steps(out)[-1] == 2
    assert (out / "test-00000002" / "metrics" / "metrics.json").is_file()
    assert metrics.stat().st_mtime_ns == first  # the first checkpoint's evaluation is kept
    later = json.loads((out / "timings.json").read_text())["seconds"]
    assert later["flow"] == seconds["flow"] and all(later[k] > seconds[k] for k in ("joint", "test", "evaluate"))
    assert "joint checkpoint step 2" in (out / "report.html").read_text()


def test_baselines_copy_the_source_and_paint_the_mean_background(market_people, tmp_path):
    cfg = load_config(REPO / "configs/synthetic_market.yaml", [f"data.root={market_people}"])
    pairs = read_pairs(market_people / cfg.data.pairs_test)[:2]
    folders = demo_script.write_baselines(cfg, pairs, tmp_path / "b")
    pixels = []  # every training image's background pixels, gathered one image at a time
    for image in sorted((market_people / "train").iterdir()):
        labels = cv2.imread(str(market_people / "train_parsing" / (image.stem + ".png")), cv2.IMREAD_UNCHANGED)
        pixels.append(cv2.imread(str(image))[labels == 0][:, ::-1])
    expected = np.round(np.concatenate(pixels).astype(np.float64).mean(axis=0))
    for src, tgt in pairs:
        name = f"{Path(src).stem}___{Path(tgt).stem}.png"
        assert np.array_equal(cv2.imread(str(folders["copy_source"] / name)),
                              cv2.imread(str(market_people / "test" / src)))
        constant = cv2.imread(str(folders["background"] / name))[..., ::-1]
        assert (constant == expected).all() and constant.shape == (128, 64, 3)


@pytest.mark.parametrize("flow_seconds, joint_minutes", [(158.0, 11.25 - 158.0 / 60), (400.0, 7.25), (None, 7.25)])
def test_the_joint_stage_gets_what_stage_0_left_of_the_training_minutes(tmp_path, flow_seconds, joint_minutes):
    """A default demo trains both stages in 11.25 minutes: stage 0's wall time (timings.json) comes off the joint
    stage's budget, counted at most at stage 0's 4-minute cap; unknown, it counts as the cap."""
    out = tmp_path / "demo"
    out.mkdir()
    if flow_seconds is not None:
        (out / "timings.json").write_text(json.dumps({"seconds": {"flow": flow_seconds}}))
    demo = demo_script.Demo(demo_script.parse_args(["--out", str(out)]))
    minutes, _, start = demo.joint_budget()
    assert minutes == pytest.approx(joint_minutes) and start[0] == "--run-dir"

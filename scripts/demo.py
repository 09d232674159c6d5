"""The whole pipeline on synthetic people, on a laptop CPU: `make demo` runs this.

    generate the synthetic dataset -> train the flow module (stage 0) -> train SPATN + SPGNet jointly
    -> test.py on held-out pairs -> evaluate.py -> runs/demo/report.html

Every step resumes: re-running skips finished steps and continues an interrupted training run from its last
checkpoint. `--minutes` sets the joint training budget (the default fits the whole demo in about 15 minutes
on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.checkpoint import load_checkpoint, step_checkpoints  # noqa: E402
from utils.report import write_report  # noqa: E402


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def finished(run_dir: Path, max_steps: int) -> Path | None:
    """The final checkpoint of a training run that reached max_steps or spent its time budget."""
    ckpts = step_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        return None
    last = load_checkpoint(ckpts[-1])
    return ckpts[-1] if last["step"] >= max_steps or last.get("reason") == "max_minutes reached" else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/synthetic.yaml")
    p.add_argument("--data", default="datasets/synthetic", help="where the synthetic set is (made if missing)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--flow-steps", type=int, default=300)
    p.add_argument("--flow-minutes", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=5000, help="joint steps (the time budget usually ends it first)")
    p.add_argument("--minutes", type=float, default=7.0, help="joint training wall-clock budget")
    p.add_argument("--test-pairs", type=int, default=200)
    args = p.parse_args()
    py, out, started = sys.executable, Path(args.out), time.time()
    data = [f"data.root={args.data}", f"data.max_test_pairs={args.test_pairs}"]  # the first N test pairs

    # 1. data
    if not (ROOT / args.data / "fasion-resize-pairs-test.csv").is_file():
        run([py, "scripts/make_synthetic.py", "--out", args.data])

    # 2. stage 0: the flow module, on the exact flow the renderer writes
    flow_dir = out / "flow"
    flow_ckpt = finished(ROOT / flow_dir, args.flow_steps)
    if flow_ckpt is None:
        run([py, "train.py", "--config", args.config, "--run-dir", str(flow_dir), *data, "train.stage=flow",
             f"train.max_steps={args.flow_steps}", f"train.max_minutes={args.flow_minutes}", "train.val_every=100",
             "train.ckpt_every=100", "train.batch_size=8"])
        flow_ckpt = step_checkpoints(ROOT / flow_dir / "checkpoints")[-1]

    # 3. stages 1 + 2 jointly, with the frozen flow module
    joint_dir = out / "joint"
    joint_ckpt = finished(ROOT / joint_dir, args.steps)
    if joint_ckpt is None:
        run([py, "train.py", "--config", args.config, "--run-dir", str(joint_dir), *data,
             f"model.flow.checkpoint={flow_ckpt.relative_to(ROOT)}", f"train.max_steps={args.steps}",
             f"train.max_minutes={args.minutes}"])
        joint_ckpt = step_checkpoints(ROOT / joint_dir / "checkpoints")[-1]

    # 4. test.py on held-out pairs (skips images that exist), 5. evaluate.py
    test_dir = out / "test"
    run([py, "test.py", "--config", args.config, "--checkpoint", str(joint_ckpt.relative_to(ROOT)), *data,
         "--out", str(test_dir), "--grids", "--skip-existing"])
    metrics_dir = out / "metrics"
    run([py, "evaluate.py", "--generated", str(test_dir / "images"), "--dataset-config", args.config, *data,
         "--out", str(metrics_dir), "--weights", "random", "--metrics", "ssim,mssim,lpips,mlpips,fid",
         # FID against the 54 test images (not the training set) and the faster, equal square root: the
         # random-init Inception makes it a smoke test here, not a number to compare
         "--fid-network", "standard", "--fid-method", "eigh"])

    # 6. the report
    minutes = (time.time() - started) / 60
    note = (f"<p>Synthetic people, {args.config}; this invocation took {minutes:.1f} min. FID and LPIPS use "
            "RANDOM-INIT backbones here (no pretrained weights offline): they are not comparable to published "
            "numbers.</p>")
    report = write_report(ROOT / out / "report.html", ROOT / joint_dir, ROOT / flow_dir, ROOT / test_dir,
                          ROOT / metrics_dir / "metrics.json", title="SPGNet demo: synthetic people", extra=note)
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()

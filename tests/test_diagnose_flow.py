"""The flow diagnostic: metrics/flow.py's per-pair sums against loops over pixels, and scripts/diagnose_flow.py on
a tiny synthetic set with a random flow module (every row of its tables; the exact flow's warp carries the
texture, the zero flow's does not)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from data.synthetic import POSE_CHANGES, generate_dataset
from metrics.flow import flow_error_sums, visibility_sums
from models.build import build_flow
from scripts import diagnose_flow
from utils import checkpoint as ck
from utils.config import load_config


def slow_sums(pred: torch.Tensor, target: torch.Tensor, vis: torch.Tensor, s: int) -> list[tuple[float, float, int]]:
    """(EPE sum, zero-flow sum, count) per pair over the s x s blocks whose pixels are all visible."""
    out = []
    for b in range(pred.shape[0]):
        epe = zero = count = 0
        for i in range(pred.shape[2]):
            for j in range(pred.shape[3]):
                if (vis[b, i * s : (i + 1) * s, j * s : (j + 1) * s] == 0).all():
                    t = (target[b, :, i * s : (i + 1) * s, j * s : (j + 1) * s].mean(dim=(1, 2)) / s).tolist()
                    epe += math.dist(pred[b, :, i, j].tolist(), t)
                    zero += math.hypot(*t)
                    count += 1
        out.append((epe, zero, count))
    return out


def test_flow_error_sums_match_a_loop_over_blocks():
    torch.manual_seed(0)
    target = torch.randn(3, 2, 8, 8) * 4
    vis = torch.randint(0, 3, (3, 8, 8))
    vis[:, :4, :4] = 0
    flows = [torch.randn(3, 2, 4, 4), torch.randn(3, 2, 8, 8)]  # coarse to fine
    sums = flow_error_sums(flows, target, vis)
    assert all(v.shape == (3, 2) for v in sums.values())
    for level, (flow, s) in enumerate(zip(flows, (2, 1))):
        for b, (epe, zero, count) in enumerate(slow_sums(flow, target, vis, s)):
            assert sums["epe"][b, level].item() == pytest.approx(epe, rel=1e-5)
            assert sums["zero"][b, level].item() == pytest.approx(zero, rel=1e-5)
            assert sums["count"][b, level].item() == count


def test_visibility_sums_count_pixels():
    torch.manual_seed(1)
    vis = torch.randint(0, 3, (2, 5, 7))
    logits = torch.randn(2, 3, 5, 7)
    sums = visibility_sums(logits, vis)
    pred = logits.argmax(dim=1)
    for b in range(2):
        pairs = [(int(pred[b, i, j]), int(vis[b, i, j])) for i in range(5) for j in range(7)]
        assert sums["correct"][b] == sum(p == t for p, t in pairs) and sums["pixels"][b] == 35
        assert sums["body_correct"][b] == sum(p == t for p, t in pairs if t != 2)
        assert sums["body_pixels"][b] == sum(t != 2 for _, t in pairs)


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A tiny DeepFashion-like set (2 held-out people x 4 poses) and a random-init flow module's checkpoint."""
    root = tmp_path_factory.mktemp("people")
    generate_dataset(root, style="deepfashion_small", identities=6, poses=4, seed=1, test_fraction=0.34)
    overrides = [f"data.root={root}", "model.flow.base_channels=4", "model.flow.max_channels=8",
                 "model.flow.n_scales=3", "data.num_workers=0"]
    cfg = load_config("configs/demo.yaml", [*overrides, "train.stage=flow"])
    torch.manual_seed(0)
    path = root.parent / "run" / "checkpoints" / "step-00000000.pt"
    path.parent.mkdir(parents=True)
    ck.save_checkpoint(path, cfg, {"flow": build_flow(cfg).state_dict()})
    return root, path, overrides


def test_diagnosis_scores_every_kind_of_pose_change(flow_checkpoint, capsys):
    root, path, overrides = flow_checkpoint
    report = diagnose_flow.main(["--config", "configs/demo.yaml", "--checkpoint", str(path), *overrides,
                                 "--batch-size", "5"])
    printed = capsys.readouterr().out
    groups = report["groups"]
    assert groups["all"]["pairs"] == report["pairs"] == 24  # 2 people x 4 x 3 ordered pairs
    assert sum(g["pairs"] for k, g in groups.items() if k != "all") == 24
    assert set(groups) - {"all"} <= set(POSE_CHANGES)
    for name, g in groups.items():
        assert list(g["epe"]) == ["32x22", "64x44", "128x88"], name  # coarse to fine
        assert name in printed
    full = groups["all"]
    assert full["epe"]["128x88"] > 0 and full["epe_zero_flow"]["128x88"] > 5
    assert 0 <= full["visibility_accuracy"] <= 1
    texture = full["texture"]
    assert texture["exact flow (ceiling)"]["parts"] > 0
    assert texture["exact flow (ceiling)"]["correlation"] > texture["zero flow (source in place)"]["correlation"] + 0.3
    written = json.loads((path.parent.parent / "flow-diagnosis-00000000" / "flow_diagnosis.json").read_text())
    assert written == json.loads(json.dumps(report))

"""Stage 0's rendered pairs (data.flow_pairs=rendered): the training people of a synthetic set in fresh poses, the
same pair for the same index, samples shaped like PairDataset's, errors that name the manifest; the flow stage's
data and losses from the config, and train.py's flow stage on rendered pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data.datasets import PairDataset
from data.flow_pairs import RenderedFlowPairs
from data.pose import encode_pose
from data.synthetic import MANIFEST, STYLES, generate_dataset, pose_pair_flow, random_pose_pair, sample_appearance
from training.stages import FlowStage
from utils import checkpoint as ck
from utils.config import load_config
from utils.distributed import DistInfo
from utils.errors import InputError


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("people")
    generate_dataset(root, style="deepfashion_small", identities=6, poses=2, seed=4, test_fraction=0.34)
    return root


def people_of(root: Path, split: str) -> set[int]:
    """Identity numbers from the image names synthid{n:06d}_... (n = identity + 1)."""
    return {int(p.name[7:13]) - 1 for p in (root / split).iterdir()}


def test_rendered_pairs_draw_only_training_people(people: Path) -> None:
    ds = RenderedFlowPairs(people, 40, (128, 88))
    assert set(ds.identities) == people_of(people, "train") and not set(ds.identities) & people_of(people, "test")
    train_bodies = [sample_appearance(np.random.default_rng(np.random.SeedSequence([4, 1, i]))).body
                    for i in people_of(people, "train")]
    for index in range(40):
        app, _, _ = random_pose_pair(ds.style, ds.seed, ds.identities, index)
        assert app.body in train_bodies


def test_samples_are_the_renderers_pairs_shaped_like_pair_datasets(people: Path) -> None:
    ds = RenderedFlowPairs(people, 10, (128, 88))
    sample = ds[7]
    app, source, target = random_pose_pair(STYLES["deepfashion_small"], 4, ds.identities, 7)
    kp, flow, vis = pose_pair_flow(STYLES["deepfashion_small"], app, source, target)
    np.testing.assert_array_equal(sample["flow"].numpy(), flow)
    np.testing.assert_array_equal(sample["vis"].numpy(), vis)
    np.testing.assert_array_equal(sample["tgt_keypoints"].numpy(), kp[1])
    maps = encode_pose(torch.from_numpy(kp.astype(np.float32)), 128, 88)
    torch.testing.assert_close(sample["src_pose"], maps[0])
    files = PairDataset(people, "train", "fasion-resize-annotation-train.csv", "fasion-resize-pairs-train.csv",
                        "train_parsing", (128, 88), flow_dir="train_flow")[0]
    for key in ("src_keypoints", "tgt_keypoints", "src_pose", "tgt_pose", "flow", "vis"):
        assert sample[key].shape == files[key].shape and sample[key].dtype == files[key].dtype, key
    again = RenderedFlowPairs(people, 10, (128, 88))[7]
    assert all(torch.equal(sample[k], again[k]) for k in sample)
    assert not torch.equal(ds[6]["flow"], sample["flow"])
    with pytest.raises(IndexError):
        ds[10]


def test_bad_folders_name_the_manifest(people: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=MANIFEST):
        RenderedFlowPairs(tmp_path, 10, (128, 88))
    with pytest.raises(InputError, match="128x88.*256x176"):
        RenderedFlowPairs(people, 10, (256, 176))


def test_flow_stage_builds_its_data_and_losses_from_the_config(people: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"data.root={people}", "train.stage=flow", "data.flow_pairs=rendered",
                                            "loss.flow_coarse=valid_mean", "loss.visibility_class_weights=[2, 4, 1]"])
    stage = FlowStage(cfg, DistInfo())
    train_set, test_set = stage.datasets()
    assert isinstance(train_set, RenderedFlowPairs) and isinstance(test_set, PairDataset)
    assert stage.losses["flow_epe"].coarse == "valid_mean"
    assert stage.losses["visibility"].class_weights.tolist() == [2.0, 4.0, 1.0]


@pytest.mark.slow
def test_flow_stage_trains_on_rendered_pairs(people: Path, tmp_path: Path) -> None:
    run = tmp_path / "flow"
    train.main(["--config", "configs/demo.yaml", f"data.root={people}", "--run-dir", str(run), "train.stage=flow",
                "data.flow_pairs=rendered", "data.rendered_pairs=64", "data.num_workers=0", "data.val_pairs=2",
                "train.batch_size=2", "train.max_steps=2", "train.val_every=2",
                "model.flow.base_channels=4", "model.flow.max_channels=8", "model.flow.n_scales=3"])
    assert "64 training pairs, 32 steps/epoch" in (run / "log.txt").read_text()
    assert ck.load_checkpoint(ck.step_checkpoints(run / "checkpoints")[-1])["step"] == 2

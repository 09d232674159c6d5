"""The release recipe end to end on tiny synthetic data: both configs/release/*.yaml train (stage 0, then a
joint step) in the release's parsing layouts; release weights are imported (scripts/import_release.py) and
rendered by test.py from precomputed pair maps (--parsing-dir, the release's pred_seg/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import test as test_entry
import train
from benchmarks.inputs import tiny_overrides
from data.annotations import read_pairs
from data.datasets import stem
from data.visual import to_uint8
from models import release_keys as rk
from models.build import build_flow, build_spgnet
from utils import checkpoint as ck
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]

DATA = [
    "data.image_size=[128,64]", "data.annotation_train=market-annotation-train.csv",
    "data.annotation_test=market-annotation-test.csv", "data.pairs_train=market-pairs-train.csv",
    "data.pairs_test=market-pairs-test.csv", "data.num_workers=0", "data.val_pairs=2",
]
# tiny networks of the release's structure (configs/unit_test/tiny.yaml's widths, 3 generator scales; both release
# configs shrink alike) and one step of everything
TINY = [
    *tiny_overrides(load_config(ROOT / "configs/release/deepfashion.yaml")),
    "model.flow.n_scales=2", "model.generator.n_scales=3", "model.generator.n_warp_scales=2",
    "train.adv_start_step=0", "train.log_every=1", "train.val_every=1", "train.ckpt_every=1",
    "train.batch_size=2", "train.max_steps=1",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Synthetic Market-like people, plus the release's layouts: seg/<stem>.png, and the Market canvas maps
    (seg_canvas/<from>___<to>.png, 256x256, the person in columns 64..191) converted by our script."""
    root = tmp_path_factory.mktemp("release_synthetic")
    subprocess.run([sys.executable, "scripts/make_synthetic.py", "--out", str(root), "--style", "market",
                    "--identities", "4", "--poses", "3", "--seed", "5"], cwd=ROOT, check=True, capture_output=True)
    (root / "seg").mkdir()
    canvas_dir = root / "seg_canvas"
    canvas_dir.mkdir()
    for split in ("train", "test"):
        for path in (root / f"{split}_parsing").glob("*.png"):
            shutil.copy(path, root / "seg" / path.name)
        for a, b in read_pairs(root / f"market-pairs-{split}.csv"):
            for x, y in ((a, b), (a, a)):
                labels = cv2.imread(str(root / f"{split}_parsing" / f"{stem(y)}.png"), cv2.IMREAD_GRAYSCALE)
                canvas = np.zeros((256, 256), np.uint8)
                canvas[:, 64:192] = cv2.resize(labels, (128, 256), interpolation=cv2.INTER_NEAREST)
                assert cv2.imwrite(str(canvas_dir / f"{stem(x)}___{stem(y)}.png"), canvas)
    result = subprocess.run(
        [sys.executable, "scripts/convert_release_parsing.py", "--seg", str(canvas_dir), "--pairs",
         str(root / "market-pairs-train.csv"), "--pairs", str(root / "market-pairs-test.csv"),
         "--out", str(root / "release_parsing")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return root


def test_market_canvas_conversion_gives_back_the_maps(dataset):
    a, b = read_pairs(dataset / "market-pairs-train.csv")[0]
    converted = cv2.imread(str(dataset / "release_parsing" / f"{stem(a)}___{stem(b)}.png"), cv2.IMREAD_GRAYSCALE)
    original = cv2.imread(str(dataset / "train_parsing" / f"{stem(b)}.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(converted, original)
    source = cv2.imread(str(dataset / "release_parsing" / f"{stem(a)}.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(source, cv2.imread(str(dataset / "train_parsing" / f"{stem(a)}.png"), 0))


@pytest.mark.parametrize("config", ["deepfashion", "market"])
def test_release_config_trains_stage_0_and_a_joint_step(dataset, tmp_path, config):
    base = ["--config", f"configs/release/{config}.yaml", f"data.root={dataset}", *DATA, *TINY]
    flow_run = tmp_path / "flow"
    train.main([*base, "--run-dir", str(flow_run), "train.stage=flow", "data.target_augment=false"])
    flow_ckpt = ck.step_checkpoints(flow_run / "checkpoints")[-1]
    joint_run = tmp_path / "joint"
    train.main([*base, "--run-dir", str(joint_run), f"model.flow.checkpoint={flow_ckpt}"])
    saved = ck.load_checkpoint(ck.step_checkpoints(joint_run / "checkpoints")[-1])
    gen = saved["models"]["generator"]
    assert "up_norms.0.refine.weight" in gen and "dec_blocks.0.0.conv_in.weight_orig" in gen
    assert saved["models"]["discriminator"]["model.0.weight"].shape[1] == 3 + 3 + 18  # 18 joint maps
    assert saved["config"]["data"]["target_augment"] is (config == "market")


def release_files(cfg, folder: Path, seed: int) -> tuple[Path, Path, dict]:
    """Random release-format generator and flow state dicts (our modules' inverse mapping), saved as .pth."""
    torch.manual_seed(seed)
    gen, flow = build_spgnet(cfg), build_flow(cfg)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = gen.state_dict()
    paths = folder / "latest_net_netG.pth", folder / "best_net_netF.pth"
    torch.save(rk.ours_to_release(ours, rk.generator_rules(ours), rk.unused_release_keys(ours)), paths[0])
    torch.save(rk.ours_to_release(flow.state_dict(), rk.flow_rules(flow.state_dict())), paths[1])
    return *paths, ours


def import_release(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/import_release.py", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_imported_release_weights_render_from_precomputed_pair_parsing(dataset, tmp_path):
    overrides = [f"data.root={dataset}", *DATA, *TINY]
    cfg = load_config("configs/release/deepfashion.yaml", overrides)
    g_path, f_path, ours = release_files(cfg, tmp_path, seed=1)
    out = tmp_path / "release.pt"
    result = import_release("--config", "configs/release/deepfashion.yaml", "--generator", str(g_path),
                            "--flow", str(f_path), "--out", str(out), *overrides)
    assert result.returncode == 0, result.stderr
    ckpt = ck.load_checkpoint(out)
    assert sorted(ckpt["models"]) == ["flow", "generator"]
    for key, value in ours.items():
        assert torch.equal(ckpt["models"]["generator"][key], value), key

    # pred_seg: every pair's target map is the *source's* parsing, which no per-image file holds for the target
    pred = tmp_path / "pred_seg"
    pred.mkdir()
    pairs = read_pairs(dataset / "market-pairs-test.csv")[:2]
    for a, b in pairs:
        shutil.copy(dataset / "seg" / f"{stem(a)}.png", pred / f"{stem(a)}___{stem(b)}.png")
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    images = test_entry.main(["--config", "configs/release/deepfashion.yaml", "--checkpoint", str(out),
                              "--parsing-dir", str(pred), "--pairs", str(pairs_csv), "--out", str(tmp_path / "t"),
                              "--device", "cpu", "--batch-size", "2", "model.generator.noise=false", *overrides])

    # the same pair rendered by hand: the imported weights, the pair's map read directly
    cfg = load_config("configs/release/deepfashion.yaml", [*overrides, "model.generator.noise=false"])
    gen, flow = build_spgnet(cfg), build_flow(cfg)
    gen.load_state_dict(ckpt["models"]["generator"])
    flow.load_state_dict(ckpt["models"]["flow"])
    gen.eval(), flow.eval()
    dataset_ = test_entry.build_dataset(cfg, "test", pairs_file=str(pairs_csv))
    sample = dataset_[0]
    labels = cv2.imread(str(pred / f"{stem(pairs[0][0])}___{stem(pairs[0][1])}.png"), cv2.IMREAD_GRAYSCALE)
    parsing = F.one_hot(torch.from_numpy(labels).long(), 20).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        f = flow(sample["src_pose"][None], sample["tgt_pose"][None])
        fake = gen(sample["src_image"][None], sample["tgt_pose"][None], sample["src_parsing"][None], parsing,
                   f.flow, f.vis_logits.argmax(1))
    written = cv2.imread(str(images / f"{stem(pairs[0][0])}___{stem(pairs[0][1])}.png"))[..., ::-1]
    np.testing.assert_array_equal(written, to_uint8(fake)[0])


def test_import_names_every_missing_extra_and_misshaped_key(dataset, tmp_path):
    overrides = [f"data.root={dataset}", *DATA, *TINY]
    cfg = load_config("configs/release/deepfashion.yaml", overrides)
    g_path, f_path, _ = release_files(cfg, tmp_path, seed=2)
    state = torch.load(g_path, weights_only=True)
    del state["dec_fuse.1.running_var"]
    state["dec_2_res_1.conv_norm.fc_mu20.weight"] = torch.zeros(128, 128)
    state["Zencoder.model.14.weight"] = torch.zeros(128, 256, 1, 1)
    torch.save(state, g_path)
    out = tmp_path / "never.pt"
    result = import_release("--config", "configs/release/deepfashion.yaml", "--generator", str(g_path),
                            "--flow", str(f_path), "--out", str(out), *overrides)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and len(lines) == 3, result.stderr
    assert "missing key 'dec_fuse.1.running_var'" in result.stderr
    assert "unexpected key 'dec_2_res_1.conv_norm.fc_mu20.weight'" in result.stderr
    assert "'Zencoder.model.14.weight' (128, 256, 1, 1)" in result.stderr
    assert not out.exists()

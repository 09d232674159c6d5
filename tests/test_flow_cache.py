"""train.flow_cache_mb: the joint stage's cached flow is the frozen module's own output for each pair, the module
runs only on the pairs not yet cached, and the cache is refused wherever a pair's flow could change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.flow import FlowNet
from training.flow_cache import FlowCache
from utils.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
POSE = 30
H, W = 24, 16
ENTRY_BYTES = 9 * H * W  # (2,H,W) float32 flow + (H,W) uint8 labels


def pairs(n: int) -> dict[str, torch.Tensor]:
    """n distinct pairs' flow-module inputs: pose maps (n,30,H,W) and keypoints (n,18,2)."""
    gen = torch.Generator().manual_seed(5)
    keypoints = torch.rand(2, n, 18, 2, generator=gen) * torch.tensor([H, W])
    poses = torch.rand(2, n, POSE, H, W, generator=gen)
    return {"src_pose": poses[0], "tgt_pose": poses[1], "src_keypoints": keypoints[0], "tgt_keypoints": keypoints[1]}


def batch_of(inputs: dict[str, torch.Tensor], rows: list[int]) -> dict:
    batch = {k: v[rows] for k, v in inputs.items()}
    batch["src_name"] = [f"s{i}.jpg" for i in rows]
    batch["tgt_name"] = [f"t{i}.jpg" for i in rows]
    return batch


class CountingNet(torch.nn.Module):
    """The flow module, counting the pairs it is run on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = FlowNet(POSE, base_channels=4, max_channels=8, n_scales=3, norm="batch", limb_flows=True).eval()
        self.pairs_run = 0

    def forward(self, *args):
        self.pairs_run += args[0].shape[0]
        return self.net(*args)


@torch.no_grad()
def one_at_a_time(net: CountingNet, inputs: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair i through the module alone: the independent computation the cache must reproduce."""
    out = net.net(*(inputs[k][i : i + 1] for k in ("src_pose", "tgt_pose", "src_keypoints", "tgt_keypoints")))
    return out.flow[0].float(), out.vis_logits[0].argmax(dim=0)


def check(got: tuple[torch.Tensor, torch.Tensor], net: CountingNet, inputs: dict, rows: list[int]) -> None:
    flow, vis = got
    assert flow.shape == (len(rows), 2, H, W) and flow.dtype == torch.float32
    assert vis.shape == (len(rows), H, W) and vis.dtype == torch.long
    for b, i in enumerate(rows):
        want_flow, want_vis = one_at_a_time(net, inputs, i)
        torch.testing.assert_close(flow[b], want_flow, rtol=1e-5, atol=1e-4)
        assert torch.equal(vis[b], want_vis), (b, i)


def test_cached_flow_is_the_modules_output_and_the_module_runs_on_new_pairs_only():
    net, inputs = CountingNet(), pairs(5)
    cache = FlowCache(net, max_bytes=10**9)
    check(cache(batch_of(inputs, [0, 1, 2])), net, inputs, [0, 1, 2])
    assert net.pairs_run == 3 and len(cache.entries) == 3 and cache.bytes == 3 * ENTRY_BYTES
    # cached, new and repeated pairs in one batch: one forward, of the one new pair
    rows = [2, 3, 0, 0]
    check(cache(batch_of(inputs, rows)), net, inputs, rows)
    assert net.pairs_run == 4
    check(cache(batch_of(inputs, [1, 3])), net, inputs, [1, 3])
    assert net.pairs_run == 4
    assert cache.stats() == {"flow_cache/hit_rate": 5 / 9, "flow_cache/mib": 4 * ENTRY_BYTES / 2**20}


def test_pairs_beyond_the_budget_are_computed_at_every_visit():
    net, inputs = CountingNet(), pairs(3)
    cache = FlowCache(net, max_bytes=ENTRY_BYTES)  # room for one pair
    check(cache(batch_of(inputs, [0, 1])), net, inputs, [0, 1])
    assert list(cache.entries) == [("s0.jpg", "t0.jpg")] and cache.bytes == ENTRY_BYTES
    check(cache(batch_of(inputs, [1, 0, 2])), net, inputs, [1, 0, 2])
    assert net.pairs_run == 2 + 2 and len(cache.entries) == 1


@pytest.mark.parametrize("override, key", [("data.hflip_prob=0.5", "data.hflip_prob"),
                                           ("data.target_augment=true", "data.target_augment"),
                                           ("pose.learnable_kappa=true", "pose.learnable_kappa"),
                                           ("model.flow.source=files", "model.flow.source")])
def test_the_cache_is_refused_where_a_pairs_flow_can_change(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(DEMO, ["train.flow_cache_mb=100", override])
    load_config(DEMO, ["train.flow_cache_mb=0", override])  # off: nothing to refuse


def test_a_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="'train.flow_cache_mb' = -1"):
        load_config(DEMO, ["train.flow_cache_mb=-1"])

"""Checkpoint files, run folders, the sharded resumable sampler and CPU-synchronised batch norm."""

import os
import random
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests.host_syncs import HostSyncs
from training.loop import linear_decay, run_progress
from utils import checkpoint as ck
from utils.config import load_config, to_dict
from utils.distributed import ShardedEpochSampler, SyncBatchNorm2d, convert_sync_batchnorm
from utils.run import latest_checkpoint, new_run_folder, numbered_runs


def _ckpt(step: int = 3) -> dict:
    return {"format": ck.FORMAT, "step": step, "config": to_dict(load_config("configs/synthetic.yaml")),
            "models": {"net": {"w": torch.arange(1000.0)}}}


def test_atomic_save_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "c" / "step-00000003.pt"
    ck.atomic_save(_ckpt(), path)
    assert ck.load_checkpoint(path)["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "step-00000003.pt"
    ck.atomic_save(_ckpt(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="damaged"):
        ck.load_checkpoint(path)


def test_foreign_file_and_missing_file(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="not an SPGNet checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "nope.pt")


def test_incompatible_config_is_refused_naming_keys(tmp_path):
    ckpt = _ckpt()
    other = load_config("configs/synthetic.yaml", ["model.generator.style_dim=24", "train.lr=0.1"])
    with pytest.raises(ck.CheckpointError, match="model.generator.style_dim"):
        ck.check_compatible(ckpt, other, tmp_path / "x.pt")
    ck.check_compatible(ckpt, load_config("configs/synthetic.yaml", ["train.lr=0.1"]), tmp_path / "x.pt")


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002
    random.seed(3)
    state = ck.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    ck.atomic_save({"format": ck.FORMAT, "rng": state}, tmp_path / "r.pt")
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]


def test_prune_keeps_newest(tmp_path):
    for s in (1, 2, 3, 4):
        ck.atomic_save(_ckpt(s), ck.checkpoint_path(tmp_path, s))
    ck.prune(tmp_path, 2)
    assert [p.name for p in ck.step_checkpoints(tmp_path)] == ["step-00000003.pt", "step-00000004.pt"]


def test_run_folders_are_numbered_and_auto_resume_finds_newest(tmp_path):
    a = new_run_folder(tmp_path, "syn")
    b = new_run_folder(tmp_path, "other")
    c = new_run_folder(tmp_path, "syn")
    assert [p.name for p in (a, b, c)] == ["00000-syn", "00001-other", "00002-syn"]
    assert numbered_runs(tmp_path, "syn") == [a, c]
    ck.atomic_save(_ckpt(5), ck.checkpoint_path(a / "checkpoints", 5))
    assert latest_checkpoint(tmp_path, "syn") == ck.checkpoint_path(a / "checkpoints", 5)
    ck.atomic_save(_ckpt(2), ck.checkpoint_path(c / "checkpoints", 2))
    assert latest_checkpoint(tmp_path, "syn") == ck.checkpoint_path(c / "checkpoints", 2)


def test_sampler_shards_each_global_batch_and_resumes_mid_epoch():
    single = ShardedEpochSampler(20, 4, seed=5)
    single.set_epoch(1)
    order = list(single)  # (index, augmentation seed) pairs
    assert sorted(i for i, _ in order) == list(range(20))  # 20 // 4 = 5 full batches: everything once
    assert len({seed for _, seed in order}) == 20  # a seed of its own for every sample
    ranks = [ShardedEpochSampler(20, 4, rank=r, world_size=2, seed=5) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    shards = [list(s) for s in ranks]
    for b in range(5):  # global batch b = rank 0's two samples then rank 1's, each with the seed it has in one process
        assert order[4 * b : 4 * b + 4] == shards[0][2 * b : 2 * b + 2] + shards[1][2 * b : 2 * b + 2]
    single.set_epoch(1, start_batch=3)
    assert list(single) == order[12:]
    single.set_epoch(2)
    assert list(single) != order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _sync_bn_worker(rank: int, port: int, x: torch.Tensor, state: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for dtype in DTYPES:
        bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))
        assert isinstance(bn[0], SyncBatchNorm2d)
        bn.load_state_dict(state)
        part = x[2 * rank : 2 * rank + 2].to(dtype).requires_grad_(True)
        with HostSyncs() as syncs:
            y = bn(part)
        (y.float() * torch.arange(y.numel(), dtype=torch.float32).view_as(y)).sum().backward()
        out[rank, dtype] = (y.detach(), part.grad, bn[0].weight.grad.clone(), bn[0].running_mean.clone(),
                            bn[0].running_var.clone(), dict(syncs.found))
    dist.destroy_process_group()


def test_sync_batchnorm_matches_full_batch_batchnorm_in_float32_statistics():
    """2 gloo processes x 2 samples against nn.BatchNorm2d on all 4, with float32, float16 and bfloat16 inputs.
    A mean of 300: in float16 the sum of squares (60 x 9e4 per channel and rank) overflows, so the statistics
    must be float32; and the forward must not wait for the device (tests/host_syncs.py)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6) * 20 + 300
    ref = nn.Sequential(nn.BatchNorm2d(3))
    with torch.no_grad():
        ref[0].weight.uniform_(0.5, 1.5)
        ref[0].bias.uniform_(-1, 1)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    out = mp.Manager().dict()
    mp.spawn(_sync_bn_worker, args=(_free_port(), x, state, out), nprocs=2, join=True)
    for dtype in DTYPES:
        full = nn.Sequential(nn.BatchNorm2d(3))
        full.load_state_dict(state)
        xr = x.to(dtype).to(torch.float32, copy=True).requires_grad_(True)  # the same rounded inputs, in float32
        y = full(xr)
        weights = torch.arange(y[:2].numel(), dtype=y.dtype).view_as(y[:2])
        (y * torch.cat([weights, weights])).sum().backward()
        (y0, g0, w0, m0, v0, syncs0), (y1, g1, w1, _, _, syncs1) = out[0, dtype], out[1, dtype]
        assert syncs0 == syncs1 == {}, (dtype, syncs0)
        assert y0.dtype == g0.dtype == dtype
        torch.testing.assert_close(torch.cat([y0, y1]), y.detach().to(dtype))
        torch.testing.assert_close(torch.cat([g0, g1]).float(), xr.grad, rtol=2e-2 if dtype != torch.float32
                                   else 1e-4, atol=1e-4)
        # DDP averages parameter gradients over ranks; the losses here are sums, so the full-batch one is the sum
        torch.testing.assert_close(w0 + w1, full[0].weight.grad, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(m0, full[0].running_mean, atol=1e-4, rtol=1e-6)
        torch.testing.assert_close(v0, full[0].running_var, atol=1e-4, rtol=1e-5)


def _compile_worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    net = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(rank)) + 3 * rank
    y = torch.compile(net, fullgraph=True, backend="aot_eager")(x)  # fullgraph: a graph break is an error
    y.sum().backward()
    out[rank] = y.detach()
    dist.destroy_process_group()


@pytest.mark.slow  # two processes compiling
def test_sync_batchnorm_compiles_into_one_graph():
    """torch.compile traces the all-reduce batch norm whole (torch's SyncBatchNorm breaks the graph at its boolean
    mask), forward and backward, and the compiled layer normalises with the global batch's statistics."""
    out = mp.Manager().dict()
    mp.spawn(_compile_worker, args=(_free_port(), out), nprocs=2, join=True)
    both = torch.cat([out[0], out[1]])  # (4,4,6,6): the ranks' inputs differ by 3 in mean
    torch.testing.assert_close(both.mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(both.var((0, 2, 3), correction=0), torch.ones(4), atol=1e-3, rtol=0)


def test_metrics_rows_survive_a_last_line_cut_short_but_not_a_broken_one(tmp_path):
    from utils.run import MetricsFileError, read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "g/l1": 0.5}\n{"step": 2, "g/l')  # killed mid-append
    assert read_metrics(tmp_path) == [{"step": 1, "g/l1": 0.5}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl, line 2: not a JSON row"):
        read_metrics(tmp_path)


def test_linear_decay_and_run_progress_by_hand():
    assert [linear_decay(p, 0.5) for p in (0.0, 0.25, 0.5, 0.75, 1.0, 1.2)] == pytest.approx([1, 1, 1, 0.5, 0, 0])
    assert linear_decay(0.4, 0.0) == pytest.approx(0.6)
    assert run_progress(50, 200, 3.0, None) == pytest.approx(0.25)
    assert run_progress(50, 200, 3.0, 6.0) == pytest.approx(0.5)  # the time budget is further along
    assert run_progress(150, 200, 3.0, 6.0) == pytest.approx(0.75)

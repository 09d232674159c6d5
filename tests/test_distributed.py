"""The DDP path, on CPU with gloo: the device a process takes, the resumed random states of every rank, and
2-process runs of train.main (each rank in its own spawned process, torchrun's environment set by hand) that
check what a second rank changes: the release generator without noise, a learnable kappa, the augmentation
draws, the clock's broadcasts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train
from data.datasets import PairDataset
from tests.test_train import args, losses_by_step
from tests.test_training_utils import _free_port
from training.loop import Budget
from training.stages import JointStage
from utils import checkpoint as ck
from utils import distributed
from utils.cli import run_main
from utils.distributed import DistInfo
from utils.errors import InputError

# ------------------------------------------------------------------------------------------ a fake CUDA host


class FakeCuda:
    """The torch.cuda functions a process uses to pick its GPU and keep its random state, on a host with
    `devices` GPUs: each GPU's RNG state is a small tensor, and a state set on a GPU the host lacks raises
    IndexError, as torch's does."""

    def __init__(self, devices: int, current: int = 0, fill: int = 0):
        self.devices, self.current = devices, current
        self.states = {i: torch.full((8,), fill + i, dtype=torch.uint8) for i in range(devices)}

    def _index(self, device: int | str | torch.device | None) -> int:
        if isinstance(device, int):
            return device
        index = torch.device(device if device is not None else "cuda").index
        return self.current if index is None else index

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        index = self._index(device)
        if index >= self.devices:
            raise IndexError(f"tuple index out of range (no cuda:{index})")
        self.states[index] = state.clone()

    def set_device(self, device) -> None:
        self.current = self._index(device)

    def install(self, setattr: Callable[[object, str, object], None]) -> None:
        """Patch torch.cuda (and torch.cuda.random, which torch's *_all functions call) with `setattr`."""
        for module in (torch.cuda, torch.cuda.random):
            setattr(module, "get_rng_state", self.get_rng_state)
            setattr(module, "set_rng_state", self.set_rng_state)
            setattr(module, "device_count", lambda: self.devices)
            setattr(module, "current_device", lambda: self.current)
        setattr(torch.cuda, "is_available", lambda: True)
        setattr(torch.cuda, "set_device", self.set_device)


def test_rng_state_with_more_gpus_than_the_resuming_host_has(monkeypatch):
    """A checkpoint written on an 8-GPU host resumes on a 1-GPU host: the process restores the state of the GPU
    it draws on, and nothing is set on GPUs that do not exist."""
    FakeCuda(8, fill=10).install(monkeypatch.setattr)
    saved = ck.rng_state()
    one_gpu = FakeCuda(1)
    one_gpu.install(monkeypatch.setattr)
    ck.set_rng_state(saved)
    assert torch.equal(one_gpu.states[0], torch.full((8,), 10, dtype=torch.uint8))
    # an earlier version's checkpoint held every visible GPU's state: this process's GPU's entry is taken
    ck.set_rng_state({**saved, "cuda": [torch.full((8,), 50 + i, dtype=torch.uint8) for i in range(8)]})
    assert torch.equal(one_gpu.states[0], torch.full((8,), 50, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------ devices


def test_device_names(monkeypatch):
    FakeCuda(2).install(monkeypatch.setattr)
    assert distributed.parse_device("cpu") == torch.device("cpu")
    assert distributed.parse_device("cuda:1") == torch.device("cuda", 1)
    assert distributed.parse_device(None) == torch.device("cuda")
    for bad, message in (("foo", "expected cpu, cuda or cuda:N"), ("cuda:2", "this host has 2 GPUs"),
                         ("cpu:0", "expected cpu, cuda or cuda:N"), ("cuda1", "expected")):
        with pytest.raises(InputError, match=message):
            distributed.parse_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        distributed.parse_device("cuda")
    assert distributed.parse_device(None) == torch.device("cpu")


def test_a_single_process_takes_the_gpu_device_names(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    gpus = FakeCuda(2)
    gpus.install(monkeypatch.setattr)
    assert distributed.setup("cuda:1").device == torch.device("cuda", 1) and gpus.current == 1
    assert distributed.setup("cuda").device == torch.device("cuda", 1)  # the current GPU, named


def test_under_torchrun_each_process_takes_its_local_rank_gpu(monkeypatch):
    """Global rank 3 on its node's second GPU (LOCAL_RANK 1): cuda:1, NCCL, the configured timeout."""
    gpus = FakeCuda(2)
    gpus.install(monkeypatch.setattr)
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.setup("cuda", timeout_minutes=2)
    assert (info.rank, info.local_rank, info.world_size, info.device) == (3, 1, 4, torch.device("cuda", 1))
    assert not info.is_main and gpus.current == 1
    assert calls == [("nccl", {"timeout": timedelta(minutes=2), "device_id": torch.device("cuda", 1)})]
    with pytest.raises(InputError, match="LOCAL_RANK"):
        distributed.setup("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(InputError, match="LOCAL_RANK 2, but its node shows 2 GPUs"):
        distributed.setup("cuda")


def test_train_refuses_an_unknown_device_naming_it(market_people, capsys):
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: train.main(args(market_people, "model.flow.source=files", "--device", "foo", "--dry-run")))
    assert stop.value.code == 2
    assert "error: --device 'foo': expected cpu, cuda or cuda:N" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the clock


def test_the_clock_is_agreed_once_per_sync_point_and_extrapolated_between(monkeypatch):
    """Under DDP every rank extrapolates rank 0's minutes from the last sync point: no broadcast per step."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    broadcasts = []
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: broadcasts.append(float(tensor)))
    budget = Budget(max_steps=100, max_minutes=15.0, info=DistInfo(world_size=2))
    for step in range(1, 16):
        clock["now"] += 60  # one minute per step
        assert not budget.out_of_time(step) or step == 15
        budget.progress(step)
        if step == 10:
            budget.agree(step)
    assert broadcasts == [10.0]
    assert budget.minutes(13) == pytest.approx(13.0) and budget.out_of_time(15)


# ------------------------------------------------------------------------------------------ 2-process runs


def _rank(rank: int, ports: list[int], argvs: list[list[str]], probe: Callable, out: dict) -> None:
    """One rank of a 2-process gloo run: torchrun's environment, `probe(rank)` installed, then train.main for
    each argv in turn; out[rank, i] = what the probe reports after run i."""
    torch.set_num_threads(1)
    report = probe(rank)
    for i, (port, argv) in enumerate(zip(ports, argvs)):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        train.main([*argv, "--device", "cpu"])
        out[rank, i] = report()


def run_two_ranks(probe: Callable, *argvs: list[str]) -> dict:
    out = mp.Manager().dict()
    mp.spawn(_rank, args=([_free_port() for _ in argvs], list(argvs), probe, out), nprocs=2, join=True)
    return dict(out)


def no_probe(rank: int) -> Callable[[], None]:
    return lambda: None


def kappa_probe(rank: int) -> Callable[[], list[tuple[float, float]]]:
    """Reports the learnable kappa and its (averaged) gradient after every step."""
    seen = []
    step = JointStage.step

    def recording(self: JointStage, *a) -> dict:
        terms = step(self, *a)
        kappa = self.pose_encoder.distance.kappa
        seen.append((float(kappa), float(kappa.grad)))
        return terms

    JointStage.step = recording
    return lambda: list(seen)


def draws_probe(rank: int) -> Callable[[], dict]:
    """Reports, per training pair read, the next number torch's RNG would draw there (the flip decision's)."""
    draws = {}
    getitem = PairDataset.__getitem__

    def recording(self: PairDataset, index: int) -> dict:
        if self.hflip_prob > 0:
            with torch.random.fork_rng(devices=[]):
                draws[self.pairs[index]] = float(torch.rand(()))
        return getitem(self, index)

    PairDataset.__getitem__ = recording
    return lambda: dict(draws)


def broadcasts_probe(rank: int) -> Callable[[], int]:
    """Reports how many times the training loop broadcast (rank 0's clock, the validation loss)."""
    count = [0]
    broadcast = dist.broadcast

    def counting(*a, **kw):
        count[0] += 1
        return broadcast(*a, **kw)

    dist.broadcast = counting
    return lambda: count[0]


def fake_cuda_probe(rank: int) -> Callable[[], dict]:
    """A host with 2 GPUs whose RNG states this process starts with as 10 * rank + device (training runs on the
    CPU): reports the state of the GPU the process draws on (its current one, its LOCAL_RANK's), then moves
    every state on by 100, as drawing would."""
    gpus = FakeCuda(2, current=rank, fill=10 * rank)
    gpus.install(setattr)
    torch.accelerator.current_accelerator = lambda check_available=False: None  # Adam's CUDA-graph check

    def report() -> dict:
        own = int(gpus.states[rank][0])
        for i in gpus.states:
            gpus.states[i] = gpus.states[i] + 100
        return {"own_gpu": own}

    return report


RELEASE = ["model.generator.variant=release", "pose.limbs=false", "pose.heatmap=binary",
           "model.generator.n_scales=5", "model.generator.n_warp_scales=4"]


@pytest.mark.slow  # two processes
def test_release_generator_without_noise_trains_under_ddp(market_people, tmp_path):
    """Its noise scales are unused: as trainable parameters they would stop DDP at the second step."""
    run = tmp_path / "ddp"
    run_two_ranks(no_probe, args(market_people, "--run-dir", str(run), "model.flow.source=files", *RELEASE,
                                 "model.generator.noise=false", "train.max_steps=3", "train.val_every=100"))
    assert "finished at step 3" in (run / "log.txt").read_text()


@pytest.mark.slow  # two processes and one
def test_learnable_kappa_is_averaged_over_ranks_like_a_ddp_gradient(market_people, tmp_path, monkeypatch):
    """The pose encoder is outside DDP: its kappa's gradient must be averaged by hand, or each rank would step
    with its own half-batch gradient and the ranks' kappas would drift apart."""
    common = args(market_people, "model.flow.source=files", "pose.learnable_kappa=true", "train.batch_size=4",
                  "train.val_every=100")
    ddp = run_two_ranks(kappa_probe, [*common, "--run-dir", str(tmp_path / "ddp"), "train.max_steps=3"])
    monkeypatch.setattr(JointStage, "step", JointStage.step)  # put back after the test ...
    report = kappa_probe(0)  # ... which replaces it
    train.main([*common, "--run-dir", str(tmp_path / "single"), "train.max_steps=1"])
    single = report()
    assert ddp[0, 0] == ddp[1, 0]  # the same kappa and gradient on both ranks, step after step
    # step 1 starts from the same weights: the averaged gradient is the whole batch's, to summation order (float32
    # sums over the pose maps in two processes' order differed by 2e-4 relative on an AVX2 CPU; one rank's own
    # half-batch gradient differs from the whole batch's by tens of percent)
    assert abs(single[0][1]) > 1e-4
    assert ddp[0, 0][0][1] == pytest.approx(single[0][1], rel=1e-3)


@pytest.mark.slow  # two processes and one
def test_each_rank_draws_its_own_augmentation_as_one_process_would(market_people, tmp_path, monkeypatch):
    """Mirroring at p = 0.5: rank 1 must not repeat rank 0's draws; each pair is drawn as in a single-process run
    with the same global batch, so the losses agree too (to summation order)."""
    common = args(market_people, "model.flow.source=files", "data.hflip_prob=0.5", "train.batch_size=4",
                  "train.max_steps=2", "train.val_every=100")
    ddp = run_two_ranks(draws_probe, [*common, "--run-dir", str(tmp_path / "ddp")])
    monkeypatch.setattr(PairDataset, "__getitem__", PairDataset.__getitem__)  # put back after the test ...
    report = draws_probe(0)  # ... which replaces it
    train.main([*common, "--run-dir", str(tmp_path / "single")])
    single, rank0, rank1 = report(), ddp[0, 0], ddp[1, 0]
    assert len(rank0) == len(rank1) == 4 and not set(rank0) & set(rank1)  # 2 steps x 2 pairs each
    assert sorted(rank0.values()) != sorted(rank1.values())
    assert {**rank0, **rank1} == {pair: single[pair] for pair in {**rank0, **rank1}}
    ref, got = losses_by_step(tmp_path / "single"), losses_by_step(tmp_path / "ddp")
    for key, value in ref[1].items():
        assert got[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.slow  # two processes
def test_every_rank_resumes_its_own_random_states(market_people, tmp_path):
    """Each rank's GPU RNG (here a fake one) and its own torch stream (the release generator's noise, drawn per
    rank) come back from the checkpoint: the resumed step logs the losses of the uninterrupted run."""
    common = args(market_people, "model.flow.source=files", *RELEASE, "train.batch_size=4", "train.val_every=100",
                  "train.ckpt_every=2")
    out = run_two_ranks(fake_cuda_probe, [*common, "--run-dir", str(tmp_path / "whole"), "train.max_steps=3"],
                        [*common, "--run-dir", str(tmp_path / "cut"), "train.max_steps=2"],
                        [*common, "--run-dir", str(tmp_path / "cut"), "train.max_steps=3"])
    saved = ck.load_checkpoint(tmp_path / "cut" / "checkpoints" / "step-00000002.pt")["rng"]
    assert [int(s["cuda"][0]) for s in saved] == [100, 111]  # each rank saved the GPU it draws on ...
    assert [out[0, 2]["own_gpu"], out[1, 2]["own_gpu"]] == [100, 111]  # ... and took it back (not rank 0's 101)
    whole, cut = losses_by_step(tmp_path / "whole"), losses_by_step(tmp_path / "cut")
    assert cut[3] == pytest.approx(whole[3], rel=1e-6, abs=1e-7)


@pytest.mark.slow  # two processes
def test_the_clock_costs_one_broadcast_per_sync_point(market_people, tmp_path):
    """max_minutes with the linear schedule: 6 steps, logs at 3 and 6, the validation at 6. Rank 0's clock is
    broadcast at the two sync points (and the validation loss once), not twice per step."""
    out = run_two_ranks(broadcasts_probe, args(
        market_people, "--run-dir", str(tmp_path / "ddp"), "model.flow.source=files", "train.max_minutes=1000",
        "train.lr_schedule=linear", "train.max_steps=6", "train.log_every=3", "train.val_every=100",
        "train.ckpt_every=100"))
    assert out[0, 0] == out[1, 0] == 3


def test_ranks_that_resume_from_different_checkpoints_are_refused(monkeypatch):
    """Nodes that see different run folders (not one shared file system) must not train from different states."""

    def rank0_found(box: list, src: int) -> None:
        box[0] = "runs/00003-syn/checkpoints/step-00000400.pt"

    monkeypatch.setattr(dist, "broadcast_object_list", rank0_found)
    distributed.check_same_on_every_rank("runs/00003-syn/checkpoints/step-00000400.pt", "--resume",
                                         DistInfo(rank=1, world_size=2))
    with pytest.raises(InputError, match="process 1 finds None, process 0 finds runs/00003-syn/.*shared file"):
        distributed.check_same_on_every_rank(None, "--resume", DistInfo(rank=1, world_size=2))

"""train.py end to end on a tiny synthetic set: run folder, stage 0 -> joint, exact resume after SIGKILL, damaged
checkpoints, and a 2-process gloo torchrun run that matches a single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import losses
import train
from losses.reconstruction import L1Loss
from utils import checkpoint as ck
from utils.config import ConfigError
from utils.run import read_metrics

ROOT = Path(__file__).resolve().parents[1]

# Tiny networks on 128x64 synthetic people, and a schedule that runs every code path of the joint step (D on from
# step 0) within a few steps.
CONFIG = "configs/unit_test/tiny.yaml"
SCHEDULE = ["train.adv_start_step=0", "train.log_every=1", "train.val_every=2", "train.ckpt_every=2",
            "train.keep_checkpoints=10"]


@pytest.fixture(scope="module")
def dataset(market_people) -> Path:
    """The suite's synthetic people, 128x64 (tests/conftest.py)."""
    return market_people


def args(dataset: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, f"data.root={dataset}", *SCHEDULE, *extra]


def subprocess_env() -> dict:
    # one thread everywhere: the in-process and subprocess runs then reduce in the same order
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_train(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def losses_by_step(run: Path) -> dict[int, dict]:
    """The last logged training terms of each step (a resumed run re-logs the steps after its checkpoint)."""
    out: dict[int, dict] = {}
    for row in read_metrics(run):
        terms = {k: v for k, v in row.items() if k.startswith(("g/", "d/"))}
        if terms:
            out[row["step"]] = terms
    return out


def test_three_step_run_writes_a_complete_run_folder(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files",
                    "train.max_steps=3"))
    assert (run / "config.yaml").is_file() and (run / "log.txt").is_file()
    assert "finished at step 3" in (run / "log.txt").read_text()
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    assert [p.name for p in ck.step_checkpoints(run / "checkpoints")] == ["step-00000002.pt", "step-00000003.pt"]
    assert sorted(p.name for p in (run / "images").iterdir()) == ["step-00000002.png", "step-00000003.png"]
    rows = read_metrics(run)
    logged = set().union(*(r.keys() for r in rows))
    for key in ("g/ce", "g/l1", "g/perceptual", "g/perceptual/relu1_1", "g/adversarial", "g/total", "d/d_real",
                "d/d_fake", "lr/g", "lr/d", "perf/images_per_s", "val/ssim", "val/ssim_copy_source",
                "val/parsing_acc", "val/recon"):
        assert key in logged, key
    assert [r["step"] for r in rows if "g/l1" in r] == [1, 2, 3]
    ckpt = ck.load_checkpoint(run / "checkpoints" / "step-00000003.pt")
    assert ckpt["step"] == 3 and set(ckpt["models"]) >= {"spatn", "generator", "discriminator"}
    assert set(ckpt["optimizers"]) == {"g", "d"} and "scaler" in ckpt and "rng" in ckpt


def test_flow_stage_then_joint_stage_with_the_frozen_flow(dataset, tmp_path):
    flow_run = tmp_path / "flow"
    train.main(args(dataset, "--run-dir", str(flow_run), "train.stage=flow",
                    "train.max_steps=2"))
    flow_ckpt = ck.step_checkpoints(flow_run / "checkpoints")[-1]
    assert "val/flow_epe" in set().union(*(r.keys() for r in read_metrics(flow_run)))
    joint_run = tmp_path / "joint"
    train.main(args(dataset, "--run-dir", str(joint_run), f"model.flow.checkpoint={flow_ckpt}", "train.max_steps=1"))
    saved = ck.load_checkpoint(ck.step_checkpoints(joint_run / "checkpoints")[-1])
    flow_state = ck.load_checkpoint(flow_ckpt)["models"]["flow"]
    for key, value in flow_state.items():  # frozen: the joint stage carries the stage-0 weights unchanged
        assert torch.equal(saved["models"]["flow"][key], value), key


def test_joint_stage_with_the_flow_cache_trains_as_without_it(dataset, tmp_path):
    """train.flow_cache_mb: two pairs, so every step after the first serves both from memory; the losses of every
    step are those of the same run computing the flow each time."""
    flow_run = tmp_path / "flow"
    train.main(args(dataset, "--run-dir", str(flow_run), "train.stage=flow", "train.max_steps=1"))
    common = [f"model.flow.checkpoint={ck.step_checkpoints(flow_run / 'checkpoints')[-1]}", "train.max_steps=3",
              "data.max_train_pairs=2", "train.batch_size=2"]
    train.main(args(dataset, "--run-dir", str(tmp_path / "plain"), *common))
    train.main(args(dataset, "--run-dir", str(tmp_path / "cached"), *common, "train.flow_cache_mb=10"))
    plain, cached = losses_by_step(tmp_path / "plain"), losses_by_step(tmp_path / "cached")
    assert sorted(plain) == sorted(cached) == [1, 2, 3]
    for step in plain:
        assert cached[step] == pytest.approx(plain[step], rel=1e-5, abs=1e-6), step
    hit_rates = [r["flow_cache/hit_rate"] for r in read_metrics(tmp_path / "cached") if "flow_cache/hit_rate" in r]
    assert hit_rates == pytest.approx([0, 1 / 2, 2 / 3])


@pytest.mark.slow  # a train.py subprocess
def test_joint_stage_without_a_flow_module_names_the_key(dataset, tmp_path):
    result = run_train(args(dataset, "--run-dir", str(tmp_path / "r"), "train.max_steps=1"))
    assert result.returncode == 2
    assert "model.flow.checkpoint" in result.stderr


@pytest.mark.slow
def test_resume_after_sigkill_continues_with_identical_losses(dataset, tmp_path):
    common = args(dataset, "model.flow.source=files", "train.ckpt_every=3",
                  f"train.run_dir={tmp_path / 'runs'}")
    reference = run_train([*common, "train.name=ref", "train.max_steps=6"])
    assert reference.returncode == 0, reference.stderr

    # the same run, killed with SIGKILL once its step-3 checkpoint is on disk ...
    proc = subprocess.Popen([sys.executable, "train.py", *common, "train.name=killed", "train.max_steps=10000"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_path = tmp_path / "runs" / "00001-killed" / "checkpoints" / "step-00000003.pt"
    deadline = time.time() + 300
    while not ckpt_path.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt_path.is_file(), "the run never wrote its step-3 checkpoint"

    # ... then resumed: steps 4-6 must log the same losses as the uninterrupted run
    resumed = run_train([*common, "train.name=killed", "train.max_steps=6", "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr
    ref = losses_by_step(tmp_path / "runs" / "00000-ref")
    got = losses_by_step(tmp_path / "runs" / "00001-killed")
    for step in (4, 5, 6):
        assert got[step].keys() == ref[step].keys()
        for key, value in ref[step].items():
            assert got[step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)


@pytest.mark.slow  # a train.py subprocess
def test_truncated_checkpoint_is_refused_with_a_clear_error(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files",
                    "train.max_steps=2"))
    path = ck.step_checkpoints(run / "checkpoints")[-1]
    path.write_bytes(path.read_bytes()[:1000])
    result = run_train(args(dataset, "--resume", str(path), "model.flow.source=files",
                            "train.max_steps=3"))
    assert result.returncode == 2
    assert "damaged" in result.stderr and path.name in result.stderr


@pytest.mark.slow  # a train.py subprocess
def test_checkpoint_from_another_architecture_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files",
                    "train.max_steps=1"))
    result = run_train(args(dataset, "--run-dir", str(run), "model.flow.source=files",
                            "model.generator.style_dim=4", "train.max_steps=2"))
    assert result.returncode == 2
    assert "model.generator.style_dim" in result.stderr


@pytest.mark.slow  # three train.py subprocesses
def test_sigterm_checkpoints_the_step_in_flight_and_resume_auto_continues_bit_exact(dataset, tmp_path):
    """SIGTERM (a scheduler's preemption) killed the run without a checkpoint: up to train.ckpt_every steps were
    lost. Now the step in flight completes and is checkpointed, the run exits 143 with one line, and --resume auto
    logs the same losses and ends with the same weights as a run that was never stopped."""
    common = args(dataset, "model.flow.source=files", "train.ckpt_every=1000", "train.val_every=3",
                  f"train.run_dir={tmp_path / 'runs'}")
    proc = subprocess.Popen([sys.executable, "train.py", *common, "train.name=stopped", "train.max_steps=10000"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    run = tmp_path / "runs" / "00000-stopped"
    deadline = time.time() + 300
    while not losses_by_step(run).get(2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    saved = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(saved) == 1, saved  # no periodic checkpoint before step 1000: this one is the signal's
    stopped_at = ck.load_checkpoint(saved[0])["step"]
    assert max(losses_by_step(run)) == stopped_at >= 2  # the step in flight completed, was logged and saved
    last = stderr.strip().splitlines()[-1]
    assert last == (f"terminated (SIGTERM): the checkpoint of step {stopped_at} is written; the same command with "
                    "--resume auto continues the run exactly"), last

    end = stopped_at + 3
    resumed = run_train([*common, "train.name=stopped", f"train.max_steps={end}", "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = run_train([*common, "train.name=reference", f"train.max_steps={end}"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref, got = losses_by_step(tmp_path / "runs" / "00001-reference"), losses_by_step(run)
    assert [got[step] for step in range(1, end + 1)] == [ref[step] for step in range(1, end + 1)]  # bit-exact
    a = ck.load_checkpoint(tmp_path / "runs" / "00001-reference" / "checkpoints" / f"step-{end:08d}.pt")["models"]
    b = ck.load_checkpoint(run / "checkpoints" / f"step-{end:08d}.pt")["models"]
    for net in a:
        for key, value in a[net].items():
            assert torch.equal(b[net][key], value), f"{net}.{key}"


@pytest.mark.slow  # a two-process torchrun run
def test_sigterm_to_one_rank_stops_every_rank_at_one_sync_point_with_a_checkpoint(dataset, tmp_path):
    """Under torchrun the signal may reach one rank only (or the ranks at different steps): they agree on the stop
    at a sync point, rank 0 checkpoints that step, and every process exits 143, none left waiting in a collective."""
    common = args(dataset, "model.flow.source=files", "train.batch_size=4", "train.max_steps=10000",
                  "train.log_every=2", "train.val_every=1000", "train.ckpt_every=1000")
    run = tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "train.py", *common, "--run-dir", str(run)], cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not losses_by_step(run).get(2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = {int(p.name): (p / "environ").read_bytes() for p in Path("/proc").iterdir() if p.name.isdigit()
               and (p / "stat").is_file() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == proc.pid}
    rank1 = next(pid for pid, env in workers.items() if b"\0RANK=1\0" in b"\0" + env)
    os.kill(rank1, signal.SIGTERM)  # rank 1 alone
    stderr = proc.communicate(timeout=300)[1]
    saved = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(saved) == 1, (saved, stderr[-3000:])
    step = ck.load_checkpoint(saved[0])["step"]
    assert step % 2 == 0 and step >= 2  # a sync point
    assert max(losses_by_step(run)) == step
    line = f"terminated (SIGTERM): the checkpoint of step {step} is written"
    assert stderr.count(line) == 2, stderr[-3000:]  # both ranks stopped there (run_main's line, then exit 143)


@pytest.mark.slow
def test_two_process_torchrun_matches_a_single_process_run(dataset, tmp_path):
    """Same global batch (4): 2 gloo processes x 2 samples vs 1 process x 4, synchronised batch norm."""
    common = args(dataset, "model.flow.source=files", "train.batch_size=4",
                  "train.max_steps=2", "train.val_every=100", "train.ckpt_every=1")
    single = run_train([*common, "--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py", *common, "--run-dir", str(tmp_path / "ddp")],
                         cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # step 1 sees identical parameters: its logged (rank-averaged) losses equal the single-process ones
    ref, got = losses_by_step(tmp_path / "single"), losses_by_step(tmp_path / "ddp")
    for key, value in ref[1].items():
        assert got[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # step 2 ran on parameters after one update; the rank-averaged losses still agree closely
    for key, value in ref[2].items():
        assert got[2][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    # Parameters after the first update. Adam's first step is lr * g / (|g| + eps): where the gradient is zero
    # analytically (a conv bias before batch norm, the SEAN blend weights at initialisation), rounding noise of a
    # different summation order is amplified up to lr (2 lr when it flips the sign). Every other element agrees
    # to 1e-5; wrong batch semantics (ranks seeing the same samples, unsynchronised statistics) moves most of them.
    a = ck.load_checkpoint(tmp_path / "single" / "checkpoints" / "step-00000001.pt")["models"]
    b = ck.load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step-00000001.pt")["models"]
    for net, allowed in (("spatn", 0.0), ("discriminator", 0.0), ("generator", 0.01)):
        differing = total = 0
        for key, value in a[net].items():
            if value.is_floating_point():
                diff = (b[net][key] - value).abs()
                assert diff.max() <= 2.02 * 2e-4, f"{net}.{key}: {diff.max()} more than a flipped Adam step"
                differing += int((diff > 1e-5).sum())
                total += value.numel()
        assert differing <= allowed * total, f"{net}: {differing} of {total} elements differ by more than 1e-5"


def test_metrics_jsonl_rows_are_json(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files",
                    "train.max_steps=1"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows, "metrics.jsonl is empty"
    assert all(isinstance(r["step"], int) for r in rows)
    logged = {k for r in rows for k in r}
    # step 1 is logged (log_every=1) and validated (the last step): training terms and validation values
    assert {"g/l1", "g/ce", "g/total", "val/ssim", "val/recon"} <= logged
    assert all(r["step"] == 1 for r in rows)


class NaNOnThirdCall(L1Loss):
    """The L1 loss, NaN on its third call: step 3's loss, as a diverging run would give."""

    calls = 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        loss = super().forward(pred, target)
        return loss * float("nan") if type(self).calls == 3 else loss


def nan_run_args(dataset: Path, run: Path, mode: str) -> list[str]:
    # checkpoints at 2, 4, 6; the first log at 4; validation only at the end
    return args(dataset, "--run-dir", str(run), "model.flow.source=files",
                "train.max_steps=6", "train.log_every=4", "train.val_every=100", "train.ckpt_every=2",
                f"train.nonfinite={mode}")


def test_nonfinite_loss_stops_the_run_at_the_next_sync_point_before_writing(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(NaNOnThirdCall, "calls", 0)
    monkeypatch.setitem(losses.LOSSES, "l1", NaNOnThirdCall)
    run = tmp_path / "run"
    # the steps do not wait for the device; step 4 (log + checkpoint) reads the sums and finds step 3's NaN
    with pytest.raises(FloatingPointError, match=r"in steps 3-4: .*g/l1"):
        train.main(nan_run_args(dataset, run, "stop"))
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step-00000002.pt"]
    state = ck.load_checkpoint(run / "checkpoints" / "step-00000002.pt")["models"]
    assert all(torch.isfinite(v).all() for net in state.values() for v in net.values() if v.is_floating_point())
    assert "run stopped" in (run / "log.txt").read_text()


def test_nonfinite_loss_skips_the_step_when_asked(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(NaNOnThirdCall, "calls", 0)
    monkeypatch.setitem(losses.LOSSES, "l1", NaNOnThirdCall)
    run = tmp_path / "run"
    train.main(nan_run_args(dataset, run, "skip"))
    assert "non-finite loss at step 3: l1 (step skipped)" in (run / "log.txt").read_text()
    state = ck.load_checkpoint(run / "checkpoints" / "step-00000006.pt")["models"]
    assert all(torch.isfinite(v).all() for net in state.values() for v in net.values() if v.is_floating_point())


def test_a_skipped_step_changes_nothing(dataset, tmp_path, monkeypatch):
    """A NaN input (as a broken flow file would give) at step 3 under train.nonfinite=skip: the generator's
    forward already moved its batch-norm statistics when the loss turns out NaN. Skipping must put them back,
    so the checkpoint after step 3 equals the one after step 2: weights, buffers and optimizer state."""
    import training.stages

    calls = {"n": 0}
    real = training.stages.flow_and_visibility

    def nan_on_third_step(flow_net, batch):
        calls["n"] += 1
        flow, vis = real(flow_net, batch)
        return (flow * float("nan"), vis) if calls["n"] == 3 else (flow, vis)

    monkeypatch.setattr(training.stages, "flow_and_visibility", nan_on_third_step)
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=3",
                    "train.ckpt_every=2", "train.val_every=100", "train.nonfinite=skip"))
    assert "non-finite loss at step 3" in (run / "log.txt").read_text()
    before = ck.load_checkpoint(run / "checkpoints" / "step-00000002.pt")
    after = ck.load_checkpoint(run / "checkpoints" / "step-00000003.pt")
    for net, state in before["models"].items():
        for key, value in state.items():
            assert torch.equal(after["models"][net][key], value), f"{net}.{key} changed in a skipped step"
    for name in ("g", "d"):
        for index, slot in before["optimizers"][name]["state"].items():
            for key, value in slot.items():
                assert torch.equal(after["optimizers"][name]["state"][index][key], value), f"optimizer {name}"


def test_consecutive_skips_stop_the_run(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(NaNOnThirdCall, "calls", 0)

    class AlwaysNaN(L1Loss):
        def forward(self, pred, target):
            return super().forward(pred, target) * float("nan")

    monkeypatch.setitem(losses.LOSSES, "l1", AlwaysNaN)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"3 steps in a row had non-finite losses \(steps 1-3"):
        train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=10",
                        "train.ckpt_every=2", "train.nonfinite=skip", "train.max_consecutive_skips=3"))
    saved = ck.load_checkpoint(run / "checkpoints" / "step-00000002.pt")["models"]  # before the stop: intact
    assert all(torch.isfinite(v).all() for net in saved.values() for v in net.values() if v.is_floating_point())


@pytest.mark.slow  # a train.py subprocess
def test_resume_into_the_other_stage_is_refused_before_writing(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=2"))
    config_before = (run / "config.yaml").read_text()
    result = run_train(args(dataset, "--run-dir", str(run), "train.stage=flow", "train.max_steps=4"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and "train.stage=joint checkpoint" in result.stderr
    assert (run / "config.yaml").read_text() == config_before


def test_resume_with_another_learning_rate_is_refused_before_writing(dataset, tmp_path):
    """The checkpoint's optimizer state won (the run stepped at lr 2e-4) while config.yaml was rewritten to say the
    new train.lr: the file said one thing and the run did another."""
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=2"))
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=4",
                        "train.lr=1e-9", "train.betas=[0.9, 0.99]"))
    message = str(err.value)
    assert message.startswith(f"resuming from {run / 'checkpoints' / 'step-00000002.pt'} with other settings")
    assert "train.lr: 0.0002 -> 1e-09; train.betas: [0.5, 0.999] -> [0.9, 0.99]" in message, message
    assert (run / "config.yaml").read_text() == config_before
    train.main(args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=3"))  # the rest may
    assert ck.load_checkpoint(run / "checkpoints" / "step-00000003.pt")["step"] == 3


@pytest.mark.slow  # two train.py subprocesses
def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(dataset, tmp_path):
    run = tmp_path / "run"
    common = args(dataset, "--run-dir", str(run), "model.flow.source=files", "train.max_steps=100000",
                  "train.ckpt_every=100000", "train.val_every=100000")
    first = subprocess.Popen([sys.executable, "train.py", *common], cwd=ROOT, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run / "log.txt").exists() and time.time() < deadline:  # the log starts once the lock is held
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.5)
        second = run_train(common)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by PID {first.pid} on host" in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def test_linear_schedule_holds_then_decays_and_survives_a_resume(dataset, tmp_path):
    """lr_schedule=linear, lr_decay_from=0.0, max_steps=4: the steps at progress 0, 1/4, 2/4, 3/4 run at
    lr x 1, 3/4, 1/2, 1/4 (logged after each step); a run resumed at step 2, whose optimizer was saved at a decayed
    rate, logs the same rates (the initial rate travels with the optimizer state)."""
    schedule = ["train.lr_schedule=linear", "train.lr_decay_from=0.0", "train.lr=1e-3", "train.lr_d=1e-4",
                "train.max_steps=4", "model.flow.source=files"]
    run = tmp_path / "run"
    train.main(args(dataset, "--run-dir", str(run), *schedule))
    rows = [r for r in read_metrics(run) if "lr/g" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr/g"] for r in rows] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert [r["lr/d"] for r in rows] == pytest.approx([1e-4, 7.5e-5, 5e-5, 2.5e-5])
    train.main(args(dataset, "--resume", str(run / "checkpoints" / "step-00000002.pt"), *schedule))
    rows = [r for r in read_metrics(run) if "lr/g" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 3, 4]  # the resumed run re-logs steps 3 and 4
    assert [r["lr/g"] for r in rows[4:]] == pytest.approx([5e-4, 2.5e-4])


def test_balanced_cross_entropy_weights_come_from_the_training_parsing(dataset):
    """loss.ce_class_weights=inverse_sqrt_frequency: the weights of SPATN's loss are f_k^-1/2 (normalised) of the
    label frequencies counted here, pixel by pixel, over the distinct training targets' parsing PNGs."""
    import numpy as np

    from data.annotations import read_pairs
    from training.stages import JointStage
    from utils.config import load_config
    from utils.distributed import DistInfo
    from utils.io import read_image

    cfg = load_config(ROOT / CONFIG,
                      [f"data.root={dataset}", *SCHEDULE, "model.flow.source=files",
                       "loss.ce_class_weights=inverse_sqrt_frequency"])
    stage = JointStage(cfg, DistInfo(), None)
    assert stage.losses["ce"].class_weights is None  # set when the training data is read
    stage.datasets()
    counts = np.zeros(20)
    for target in sorted({tgt for _, tgt in read_pairs(dataset / cfg.data.pairs_train)}):
        labels = read_image(dataset / "train_parsing" / (Path(target).stem + ".png"), -1)
        for value, n in zip(*np.unique(labels, return_counts=True)):
            counts[value] += n
    f = counts / counts.sum()
    expected = np.where(f > 0, np.maximum(f, 1e-12) ** -0.5, 0.0)
    expected /= (expected * f).sum()
    np.testing.assert_allclose(stage.losses["ce"].class_weights.numpy(), expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------ --dry-run


def files_under(root: Path) -> dict[str, int]:
    """Every path under `root` with its modification time: equal before and after means nothing was written."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_dry_run_prints_settings_networks_and_pairs_and_writes_nothing(dataset, tmp_path, capsys):
    """--dry-run loads the frozen flow module, builds the joint stage and checks the data; it prints the overrides
    among the settings that differ from the defaults, each network's parameter count and the number of pairs,
    and exits without creating a run folder or writing any file."""
    from data.annotations import read_pairs
    from models.build import build_all
    from utils.config import TrainConfig, load_config

    runs = tmp_path / "runs"
    overrides = [f"train.run_dir={runs}", "train.max_steps=7", f"train.seed={TrainConfig.seed}"]
    cfg = load_config(ROOT / CONFIG, [f"data.root={dataset}", *SCHEDULE, *overrides])
    nets = build_all(cfg)
    flow_ckpt = tmp_path / "flow.pt"
    ck.save_checkpoint(flow_ckpt, cfg, {"flow": nets["flow"].state_dict()})
    before, data_before = files_under(tmp_path), files_under(dataset)

    train.main(args(dataset, "--dry-run", f"model.flow.checkpoint={flow_ckpt}", *overrides))
    out = capsys.readouterr().out
    assert files_under(tmp_path) == before and files_under(dataset) == data_before
    assert not runs.exists()
    assert f"  train.max_steps: {TrainConfig.max_steps} -> 7\n" in out
    assert "  model.spatn.ngf: 64 -> 4\n  model.spatn.n_blocks: 9 -> 1\n" in out
    assert f"  data.root: 'datasets/synthetic' -> '{dataset}'\n" in out
    assert "train.seed" not in out  # set to its default: no difference
    for name, net in nets.items():
        count = f"{name}: {sum(p.numel() for p in net.parameters()):,}"
        assert count + (" (frozen)" if name == "flow" else ",") in out, count
    n_train = len(read_pairs(dataset / cfg.data.pairs_train))
    n_test = len(read_pairs(dataset / cfg.data.pairs_test))
    assert f"{n_train} training pairs" in out and f"{n_test} test pairs" in out


def test_dry_run_names_a_missing_data_file_and_exits_2(dataset, tmp_path, capsys):
    import shutil

    from data.annotations import read_pairs
    from utils.cli import run_main

    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    source = read_pairs(root / "market-pairs-train.csv")[-1][0]
    (root / "train" / source).unlink()
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: train.main(args(root, "--dry-run", "model.flow.source=files", f"train.run_dir={runs}")))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and source in err and "Traceback" not in err
    assert not runs.exists()

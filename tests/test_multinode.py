"""torchrun across nodes, simulated on one machine: two torchrun invocations (--nnodes 2, one process each, node
ranks 0 and 1) meet at one c10d rendezvous on 127.0.0.1. They must train as one process with the same global
batch does (to summation order), write once (global rank 0), fail fast when a node dies, and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_train import ROOT, args, losses_by_step, run_train, subprocess_env
from tests.test_training_utils import _free_port
from utils import checkpoint as ck
from utils.run import read_metrics


def start_node(node_rank: int, port: int, argv: list[str], log: Path) -> subprocess.Popen:
    """One 'node': torchrun with one training process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node_rank={node_rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               f"--rdzv_id=spgnet-test-{port}", "train.py", *argv, "--device", "cpu"]
    return subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def kill_node(agent: subprocess.Popen) -> None:
    """SIGKILL a 'node': its torchrun agent and the training processes it started (each in a session of its own,
    so killing the agent's group alone would leave them running)."""
    for pid in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split():
        os.kill(int(pid), signal.SIGKILL)
    agent.kill()


def run_two_nodes(argv: list[str], logs: Path) -> list[int]:
    """Both nodes to the end; their exit codes. Node 0 starts first and hosts the rendezvous store."""
    port = _free_port()
    logs.mkdir(parents=True, exist_ok=True)
    nodes = [start_node(0, port, argv, logs / "node0.txt")]
    try:
        time.sleep(2)
        nodes.append(start_node(1, port, argv, logs / "node1.txt"))
        return [node.wait(timeout=900) for node in nodes]
    finally:
        stop_nodes(nodes)


def stop_nodes(nodes: list[subprocess.Popen]) -> None:
    """Kill whatever a failed test left running."""
    for node in nodes:
        if node.poll() is None:
            kill_node(node)
            node.wait()


def tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("node*.txt")))


@pytest.mark.slow  # a single process and two torchrun nodes
def test_two_nodes_train_as_one_process_and_write_once(market_people, tmp_path):
    common = args(market_people, "model.flow.source=files", "train.batch_size=4", "train.max_steps=2",
                  "train.val_every=2", "train.ckpt_every=1")
    single = run_train([*common, "--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    codes = run_two_nodes([*common, f"train.run_dir={tmp_path / 'runs'}", "train.name=nodes"], tmp_path / "logs")
    assert codes == [0, 0], tail(tmp_path / "logs")

    # one run folder, numbered by rank 0 and shared with rank 1, written once: one log, one event file
    [run] = list((tmp_path / "runs").iterdir())
    assert run.name == "00000-nodes"
    assert (run / "log.txt").read_text().count("new run:") == 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert [r["step"] for r in read_metrics(run) if "g/l1" in r] == [1, 2]
    assert not (run / "run.lock").exists()  # released by its one holder
    # the same losses as one process with the whole batch, to summation order (as 2 processes on one node)
    ref, got = losses_by_step(tmp_path / "single"), losses_by_step(run)
    for key, value in ref[1].items():
        assert got[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for key, value in ref[2].items():
        assert got[2][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


@pytest.mark.slow  # three pairs of torchrun nodes
def test_a_dead_node_stops_the_other_within_seconds_and_the_run_resumes(market_people, tmp_path):
    common = args(market_people, "model.flow.source=files", "train.batch_size=4", "train.val_every=100",
                  "train.ckpt_every=2", "train.dist_timeout_minutes=0.5", f"train.run_dir={tmp_path / 'runs'}")
    port, logs = _free_port(), tmp_path / "logs"
    logs.mkdir()
    argv = [*common, "train.name=cut", "train.max_steps=100000"]
    nodes = [start_node(0, port, argv, logs / "node0.txt")]
    try:
        time.sleep(2)
        nodes.append(start_node(1, port, argv, logs / "node1.txt"))
        checkpoints = tmp_path / "runs" / "00000-cut" / "checkpoints"
        deadline = time.time() + 600
        while not ck.step_checkpoints(checkpoints) and time.time() < deadline and nodes[0].poll() is None:
            time.sleep(0.2)
        assert ck.step_checkpoints(checkpoints), tail(logs)

        kill_node(nodes[1])
        killed = time.time()
        code = nodes[0].wait(timeout=120)
        waited = time.time() - killed
        assert code != 0 and waited < 60, f"node 0 exited {code} after {waited:.0f} s\n{tail(logs)}"
    finally:
        stop_nodes(nodes)

    # --resume auto continues from the newest checkpoint, and the steps after it are those of an unbroken run
    last = int(ck.step_checkpoints(checkpoints)[-1].stem.split("-")[1])
    until = f"train.max_steps={last + 2}"
    assert run_two_nodes([*common, "train.name=whole", until], tmp_path / "logs-whole") == [0, 0]
    codes = run_two_nodes([*common, "train.name=cut", until, "--resume", "auto"], tmp_path / "logs-resumed")
    assert codes == [0, 0], tail(tmp_path / "logs-resumed")
    log = (tmp_path / "runs" / "00000-cut" / "log.txt").read_text()
    assert f"resuming from {checkpoints / f'step-{last:08d}.pt'}" in log and f"finished at step {last + 2}" in log
    whole, cut = losses_by_step(tmp_path / "runs" / "00001-whole"), losses_by_step(tmp_path / "runs" / "00000-cut")
    for step in (last + 1, last + 2):
        assert cut[step] == pytest.approx(whole[step], rel=1e-6, abs=1e-7), step

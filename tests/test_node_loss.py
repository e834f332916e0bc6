"""A node of a multi-node run that dies ends the run on the other node promptly, with one message
saying what happened and how to go on, and ``--resume auto`` on both nodes then finishes the run.

Two "nodes" on this machine: two torchrun launches of 2 processes each (``fsdp2``, gloo), meeting
through a c10d rendezvous that the first one hosts, as the documented multi-node command does. Once
the run has a complete checkpoint the second node dies: its agent and its workers are SIGKILLed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgmm_ascend.testing.ranks import free_port
from pgmm_core.run_dir import RunDirectory
from pgmm_core.testing import log_records, no_dropout_config, write_config
from pgmm_core.train import checkpoint as ckpt

STEPS = 8
TIMEOUT_S = 30  # strategy.timeout_s: how long a collective waits for a silent peer


def _node(config: Path, port: int, log: Path, *, host: bool, resume: bool = False) -> subprocess.Popen:
    """One node: ``torchrun`` with 2 processes; the first node hosts the rendezvous (``is_host``:
    on one machine both would match the endpoint's host name). Its temporary files (torchrun's
    logs, the claim of the node's report) stay in the test's directory."""
    tmp = config.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
               "--max-restarts=0", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               "--rdzv_id=pgmm-node-loss", f"--rdzv_conf=is_host={int(host)}",
               "-m", "pgmm_core.train", "--config", str(config), *(["--resume", "auto"] if resume else [])]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "TMPDIR": str(tmp)})


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts each worker in a session of its own, so a
    process group does not hold them all)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def _kill_tree(pid: int) -> None:
    for each in _process_tree(pid):
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:  # ended meanwhile
            pass


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(nodes: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    for node, log in zip(nodes, logs):
        try:
            assert node.wait(timeout=timeout) == 0, log.read_text()[-4000:]
        finally:
            if node.poll() is None:
                _kill_tree(node.pid)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds a node's processes through /proc")
def test_a_dead_node_ends_the_run_on_the_other_with_one_message_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    config = no_dropout_config(out, strategy={"type": "fsdp2", "timeout_s": TIMEOUT_S},
                               train={"log_every": 1, "max_steps": STEPS, "save_every": 2})
    config["data"].update({"batch_size": 2, "val": []})
    path = write_config(tmp_path / "config.json", config)
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    port = free_port()
    nodes = [_node(path, port, logs[0], host=True), _node(path, port, logs[1], host=False)]
    try:
        deadline = time.monotonic() + 240
        while ckpt.latest_complete(RunDirectory(out).checkpoints) is None:
            assert all(n.poll() is None for n in nodes), "\n".join(log.read_text()[-3000:] for log in logs)
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.02)
        survivors = _process_tree(nodes[0].pid)
        _kill_tree(nodes[1].pid)  # the node dies: its agent and workers at once
        killed = time.monotonic()
        returncode = nodes[0].wait(timeout=TIMEOUT_S + 60)
        took = time.monotonic() - killed
    finally:
        for node in nodes:
            if node.poll() is None:
                _kill_tree(node.pid)
            node.wait()
    print(f"the surviving node exited {took:.1f} s after the other died")
    output = logs[0].read_text()
    assert returncode != 0, output[-3000:]
    # a process that dies closes its connections: the others learn at once, not after the timeout
    assert took < TIMEOUT_S, output[-3000:]
    assert not [pid for pid in survivors if _alive(pid)]  # no worker left behind

    errors = output.split("pgmm: error: ")[1:]
    assert len(errors) == 1, output[-6000:]  # one message for the node, not one per process
    message = errors[0]
    assert re.match(r"rank [0-3] of 4 lost contact with the other ranks: a process or node of this run died "
                    r"or stopped answering \((Read error|Connection closed by peer|.*Connection reset by peer|"
                    r".*Broken pipe)", message), message[:500]
    assert f"A collective waits at most {TIMEOUT_S} s for the other ranks (strategy.timeout_s" in message
    step = int(re.search(r"checkpoints/step-(\d+) \(step (\d+)\)", message).group(1))
    assert step >= 2 and (out / "checkpoints" / f"step-{step:06d}").is_dir()
    assert "running the same command on every node with --resume auto" in message
    assert not re.search(r"\[rank\d\]: Traceback", output)  # the workers' tracebacks are not shown

    port = free_port()
    nodes = [_node(path, port, logs[0], host=True, resume=True), _node(path, port, logs[1], host=False, resume=True)]
    _wait(nodes, logs, timeout=240)
    resumed = logs[0].read_text() + logs[1].read_text()  # rank 0's node says it (ranks go by node pid)
    assert f"resumed from {out / 'checkpoints' / f'step-{step:06d}'} (step {step}," in resumed
    assert [r["step"] for r in log_records(out)] == list(range(1, STEPS + 1))
    assert ckpt.latest_complete(RunDirectory(out).checkpoints)[1]["step"] == STEPS

"""Run a function in fresh Python processes, set up like ``torchrun`` would set up its workers.

Tests use it for anything that must not share a process with pytest: multi-rank collectives, and
fakes that change torch's global device registry. The function must be defined at module level in a
file (a test file is fine): each child loads that file by path, calls the function, and pickles its
return value back. Nothing is forked, so every child starts from a clean torch.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

CHILD = "from pgmm_ascend.testing.ranks import _child_main; _child_main()"


class RankFailed(AssertionError):
    """A child process failed or timed out; the message holds its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(target: Callable[..., Any], world_size: int = 2, *, args: Sequence[Any] = (),
              env: Mapping[str, str] | None = None, timeout: float = 120.0) -> list[Any]:
    """Call ``target(*args)`` on ``world_size`` ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT set as torchrun does) and return the values they returned, in rank order."""
    source = inspect.getsourcefile(target)
    if source is None or "." in target.__qualname__:
        raise ValueError("run_ranks needs a function defined at module level in a file")
    port = str(free_port())
    with tempfile.TemporaryDirectory(prefix="pgmm-ranks-") as tmp:
        work = Path(tmp)
        (work / "args.pkl").write_bytes(pickle.dumps(tuple(args)))
        procs, logs = [], []
        for rank in range(world_size):
            rank_env = {**os.environ, **(env or {}), "RANK": str(rank), "LOCAL_RANK": str(rank),
                        "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            log = (work / f"rank{rank}.log").open("w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CHILD, source, target.__name__, str(work / "args.pkl"),
                 str(work / f"rank{rank}.pkl")], env=rank_env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        timed_out = False
        try:
            while True:
                codes = [p.poll() for p in procs]
                if all(code is not None for code in codes):
                    break
                timed_out = time.monotonic() > deadline
                if timed_out or any(code not in (None, 0) for code in codes):
                    break  # a failed rank leaves the others waiting in a collective: stop them all
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
        if any(p.returncode != 0 for p in procs):
            report = "\n".join(
                f"--- rank {r} (exit {p.returncode}{', killed' if p.returncode and p.returncode < 0 else ''}) ---\n"
                + (work / f"rank{r}.log").read_text(errors="replace")[-6000:]
                for r, p in enumerate(procs))
            why = f"timed out after {timeout:.0f} s" if timed_out else "failed"
            raise RankFailed(f"{target.__name__} {why} on {world_size} rank(s):\n{report}")
        return [pickle.loads((work / f"rank{r}.pkl").read_bytes()) for r in range(world_size)]


def run_isolated(target: Callable[..., Any], *args: Any, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> Any:
    """Call ``target(*args)`` in one fresh process and return its value."""
    return run_ranks(target, 1, args=args, env=env, timeout=timeout)[0]


def _child_main() -> None:
    source, name, args_path, result_path = sys.argv[1:5]
    spec = importlib.util.spec_from_file_location(f"_pgmm_rank_target_{Path(source).stem}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        args = pickle.loads(Path(args_path).read_bytes())
        result = getattr(module, name)(*args)
        Path(result_path).write_bytes(pickle.dumps(result))
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)  # skip interpreter teardown: peers may still hold this rank's sockets
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is on disk. Skip interpreter teardown here too: destroying torch.distributed's C++
    # objects at exit, while a slower peer still talks to the store, now and then ends in
    # std::terminate ("terminate called without an active exception") and fails a finished rank.
    os._exit(0)

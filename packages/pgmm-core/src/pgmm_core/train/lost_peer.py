"""A rank or node of a multi-process run that dies, or stops answering, ends the run on the others
with one message per node: what happened, how long a collective waits, the last complete
checkpoint, and how to go on (``--resume auto`` on every node) — instead of each rank's traceback.

The strategy recognises its process group's reports of a lost peer (:meth:`Strategy.lost_peer
<pgmm_core.strategies.base.Strategy.lost_peer>`); every other failure keeps its traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from pgmm_core.errors import PeerLostError
from pgmm_core.run_dir import RunDirectory
from pgmm_core.strategies.process_group import first_report_on_this_node
from pgmm_core.train import checkpoint as ckpt

QUIET_RANK_GRACE_S = 5.0
"""How long a process that leaves the report to another one of its node waits before exiting."""


@contextlib.contextmanager
def explain_lost_peer(strategy: Any, run_dir: RunDirectory) -> Iterator[None]:
    """Turn a collective failed by a lost peer into :class:`~pgmm_core.errors.PeerLostError`
    (exit code 7), shown by the first process of this node to see it."""
    try:
        yield
    except Exception as exc:
        what = strategy.lost_peer(exc)
        if what is None:
            raise
        if first_report_on_this_node("lost-peer"):
            raise PeerLostError(f"{what}.\n{how_to_go_on(run_dir)}") from None
        # torchrun stops a node's other workers as soon as one exits: let the one that reports print
        # first (this one is stopped meanwhile, or goes on after the grace period)
        time.sleep(QUIET_RANK_GRACE_S)
        raise PeerLostError(what, shown=False) from None


def how_to_go_on(run_dir: RunDirectory) -> str:
    found = ckpt.latest_complete(run_dir.checkpoints)
    if found is None:
        return "No checkpoint was saved before it: once every node is up, start the run again."
    return (f"The last complete checkpoint is {found[0]} (step {found[1]['step']}): once every node is up, "
            "continue from it by running the same command on every node with --resume auto.")

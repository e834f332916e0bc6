"""How every pgmm command ends: a :class:`PgmmError` or a known failure becomes one line and an exit code.

Shared by ``python -m pgmm_core`` (:mod:`pgmm_core.cli`) and ``python -m pgmm_core.train``
(:mod:`pgmm_core.train.__main__`), which import it from here rather than from each other.
"""

from __future__ import annotations

import sys
from typing import Callable

from pgmm_core.errors import PgmmError


def run_guarded(action: Callable[[], int]) -> int:
    """Run a command; a :class:`PgmmError` becomes a plain message and its exit code."""
    try:
        return action()
    except PgmmError as exc:
        if exc.shown:
            print(f"pgmm: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pgmm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a path that cannot be written or read: the message says which
        print(f"pgmm: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # `import torch` failing in an auto-loaded device extension (torch_npu)
        from pgmm_core.devices.probes import explain_torch_import_failure
        from pgmm_core.errors import DeviceUnavailableError

        message = explain_torch_import_failure(exc)
        if message is None:
            raise
        print(f"pgmm: error: {message}", file=sys.stderr)
        return DeviceUnavailableError.exit_code

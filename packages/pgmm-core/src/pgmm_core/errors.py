"""Errors that reach users as a message, not a traceback.

Everything pgmm raises on purpose derives from :class:`PgmmError`; the command-line entry points
print such errors plainly and exit with :attr:`PgmmError.exit_code`. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class PgmmError(Exception):
    """A problem the user can fix; its message says what and how."""

    exit_code = 1
    shown = True  # false when another process of the run prints the same message


class PluginError(PgmmError):
    """A plugin is broken, missing or conflicts with another one."""

    exit_code = 2


class ConfigError(PgmmError):
    """One or more problems in a configuration, each with its dotted path."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        count = len(self.problems)
        header = f"{where}{count} problem{'s' if count != 1 else ''} in the configuration"
        super().__init__(header + "\n" + "\n".join(f"  - {p}" for p in self.problems))


class CheckpointError(PgmmError):
    """A checkpoint is missing, incomplete, corrupt or belongs to another model."""

    exit_code = 3


class DeviceUnavailableError(PgmmError):
    """The requested device backend cannot run on this machine; the message says why."""

    exit_code = 4


class DataError(PgmmError):
    """Annotation files are malformed or too many images are unreadable."""

    exit_code = 5


class NotUtf8Error(PgmmError):
    """A config or annotation file is not UTF-8 text; the one-line message names the file and byte."""

    exit_code = 2

    def __init__(self, path: str, offset: int, byte: int) -> None:
        self.path = path
        self.offset = offset
        super().__init__(f"{path}: not UTF-8 text: byte 0x{byte:02x} at offset {offset}; save the file as UTF-8")


class TooManyBadImagesError(DataError):
    """More than ``data.max_bad_fraction`` of the images read were unreadable; training stopped."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, quota, permissions); earlier ones are intact."""


class TrainingDivergedError(PgmmError):
    """Too many consecutive steps had a non-finite loss or gradient norm (or the weights became
    non-finite); the last good checkpoint is named."""

    exit_code = 6


class PeerLostError(PgmmError):
    """Another process or node of a multi-process run died or stopped answering, so a collective
    failed (at once, or after the process group's timeout); the message names the last complete
    checkpoint and how to continue from it. Each rank raises it; one process per node prints it."""

    exit_code = 7

    def __init__(self, message: str, *, shown: bool = True) -> None:
        super().__init__(message)
        self.shown = shown

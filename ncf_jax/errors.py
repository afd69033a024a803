"""The errors a user can cause, each with the exit status its command-line tool returns.

Expected mistakes (a bad option, a bad data line, a missing file, a resume that does not match)
raise one of these with a message that says what is wrong and how to fix it; `ncf_jax.commands.cli`
prints that one line and exits with `exit_code`, without a traceback. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """An invalid option or combination of options (exit status 2, as absl's flag errors)."""

    exit_code = 2


class ResumeError(UsageError):
    """WORKDIR holds a run with other options than the ones given (exit status 2)."""


class DataError(ValueError):
    """Bad input data. The message reads `FILE:LINE: PROBLEM` (or `FILE: PROBLEM`)."""

    exit_code = 1

    def __init__(self, path, problem: str, line: int | None = None):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")


class DownloadError(OSError):
    """A dataset could not be fetched or verified; the message says where to put it by hand."""

    exit_code = 1


class CheckpointError(OSError):
    """No checkpoint of WORKDIR can be read; the message names it and says what to do."""

    exit_code = 1


class WorkdirBusyError(OSError):
    """Another run holds WORKDIR (`ncf_jax.lock`); the message names it and says what to do."""

    exit_code = 1


class DivergedError(ArithmeticError):
    """The loss or a metric became NaN or infinite; the message names the epoch and the value."""

    exit_code = 1


USER_ERRORS = (UsageError, DataError, DownloadError, CheckpointError, WorkdirBusyError,
               DivergedError)  # fmt: skip

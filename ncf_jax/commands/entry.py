"""The front of every command-line tool: flags parsed, a user's mistake ended in one line.

`entry.run(main)` is `absl.app.run` with two changes. A flag absl cannot parse (an unknown
flag, a missing --flagfile, a value that is not a number) prints one line `SCRIPT: error:
MESSAGE` and exits 2, as every other usage error does. A user error raised by `main`
(`ncf_jax.errors`) prints the same one line and exits with its status (2 usage, 1 data, files,
checkpoints); `--verbosity=1` shows its traceback too. Anything else is a bug and keeps its
traceback. Importing this module does not import JAX, so light tools start fast.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app

from ncf_jax import flags
from ncf_jax.errors import USER_ERRORS, UsageError


def fail(message: str, code: int) -> None:
    """One line on stderr, `SCRIPT: error: MESSAGE`, then exit `code`."""
    script = pathlib.Path(sys.argv[0]).stem
    sys.stderr.write(f"{script}: error: {message}\n")
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, whose errors end in one line and exit status 2."""
    try:
        return flags.parse(argv)
    except UsageError as error:
        fail(str(error), error.exit_code)


def guarded(main):
    """`main(argv)` whose user errors end in one line on stderr and their exit status."""

    def run_main(argv):
        try:
            main(argv)  # app.run would sys.exit() with whatever main returned
        except USER_ERRORS as error:
            if flags.show_tracebacks():
                raise
            fail(str(error), getattr(error, "exit_code", 1))

    return run_main


def run(main) -> None:
    """`app.run(main)`, with flag errors and user errors each one line."""
    app.run(guarded(main), flags_parser=parse_flags)

"""The only module that reads absl FLAGS. Flags are generated from config fields.

A script calls `define_flags(task.CONFIGS)` at import time and `configs_from_flags(...)` in its
`main`: each `ncf_jax.config.option` field becomes one flag (its name, help, choices and default
come from the field), so a script defines exactly the flags its task reads: `--helpshort` lists
them, and another task's option is absl's unknown-flag error.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import typing

from absl import flags

from ncf_jax.config import default_data_dir
from ncf_jax.errors import UsageError

FLAGS = flags.FLAGS

_OURS: set[str] = set()


def _define(name: str, define, *args) -> None:
    """Define a flag unless an earlier call already did (scripts share the data flags), and make
    it a key flag of the main module, which `--helpshort` lists."""
    _OURS.add(name)
    if name not in FLAGS:
        define(name, *args)
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def _text(value) -> str:
    if value is None:
        return ""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _define_field(field: dataclasses.Field, kind, default) -> None:
    meta, name = field.metadata, field.metadata.get("flag") or field.name
    help_text = meta["help"]
    if meta.get("choices"):
        _define(name, flags.DEFINE_enum, default, list(meta["choices"]), help_text)
    elif meta.get("parse"):
        _define(name, flags.DEFINE_string, _text(default), help_text)
    elif kind is bool:
        _define(name, flags.DEFINE_bool, default, help_text)
    elif kind is int:
        _define(name, flags.DEFINE_integer, default, help_text)
    elif kind in (float, float | None):
        _define(name, flags.DEFINE_float, default, help_text)
    else:
        _define(name, flags.DEFINE_string, default, help_text)


def define_flags(configs: dict, *, defaults: dict | None = None) -> None:
    """One flag per option field of each config class in `configs` ({name: class}).

    defaults: {flag: value} overriding a field's default for this script (e.g. --model=gmf).
    """
    defaults = defaults or {}
    for cls in configs.values():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if "help" not in field.metadata:
                continue
            name = field.metadata.get("flag") or field.name
            _define_field(field, hints[field.name], defaults.get(name, field.default))


def config_from_flags(cls):
    """An instance of config class `cls` from the parsed flags (validated on construction)."""
    values = {}
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        value = FLAGS[field.metadata.get("flag") or field.name].value
        parse = field.metadata.get("parse")
        values[field.name] = parse(value) if parse and isinstance(value, str) else value
    return cls(**values)


def configs_from_flags(configs: dict) -> dict:
    """{name: config} for `configs` = {name: class}: every config is built (and validated)
    before any data is read."""
    return {name: config_from_flags(cls) for name, cls in configs.items()}


def define_workdir_flag(help_text="Output folder (results, checkpoints).") -> None:
    _define("workdir", flags.DEFINE_string, None, help_text)


def define_compilation_cache_flag() -> None:
    _define(
        "compilation_cache",
        flags.DEFINE_string,
        str(default_data_dir() / "xla"),
        "XLA's persistent compilation cache: each program is compiled once per machine, not "
        "once per run (a cached program is the same program: the same numbers). '' turns it off.",
    )


def compilation_cache_from_flags() -> str | None:
    return FLAGS.compilation_cache or None


def workdir_from_flags(*, writable: bool = True) -> str:
    if not FLAGS.workdir:
        raise UsageError("--workdir is required: the folder for results.json and checkpoints")
    check_folder(FLAGS.workdir, "--workdir", writable=writable)
    return FLAGS.workdir


def check_folder(path: str, flag: str, *, writable: bool = True) -> None:
    """UsageError unless `path` is a folder or can be made one (its nearest existing parent is
    a folder), writable when `writable`."""
    folder = pathlib.Path(path).expanduser()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if existing == folder and not folder.is_dir():
        raise UsageError(f"{flag}={path} is a file, not a folder: name a folder")
    if not existing.is_dir():
        raise UsageError(f"{flag}={path}: {existing} is a file, not a folder")
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={path}: {existing} is not writable")


def flag_values() -> dict:
    """The values of this module's flags, for results.json."""
    return {name: FLAGS[name].value for name in sorted(FLAGS) if name in _OURS}


def parse(argv: list[str]) -> list[str]:
    """Parses the command line into FLAGS; UsageError for what absl cannot parse (an unknown
    flag, a missing --flagfile, a value that is not a number)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = " ".join(str(error).split()).removeprefix("ERROR:: ")  # one line
        raise UsageError(f"{message} (--helpshort lists the flags)") from None


def show_tracebacks() -> bool:
    """absl's `--verbosity=1` (debug) or more also shows the traceback of a user error."""
    return FLAGS.is_parsed() and FLAGS.verbosity >= 1


# ------------------------------------------------------------------------- other scripts' flags
def define_recommend_flags() -> None:
    """Flags of `experiments.recommend`."""
    define_workdir_flag("WORKDIR of a finished training run.")
    _define("users", flags.DEFINE_string, None, "Comma-separated ORIGINAL user ids.")
    _define("k", flags.DEFINE_integer, 10, "Recommendations per user.")
    _define(
        "exclude_seen",
        flags.DEFINE_bool,
        True,
        "Leave out the items a user saw in training.",
    )
    _define(
        "data_dir_override",
        flags.DEFINE_string,
        None,
        "Read the dataset from here instead of the data_dir saved with the run.",
    )


def recommend_request_from_flags() -> tuple[str, list[str], int, bool, str | None]:
    """(workdir, ORIGINAL user ids, k, exclude_seen, data_dir_override) of experiments.recommend."""
    workdir = workdir_from_flags(writable=False)
    if not FLAGS.users:
        raise UsageError("--users is required: comma-separated ORIGINAL user ids, e.g. 1,42")
    users = [u.strip() for u in FLAGS.users.split(",") if u.strip()]
    return workdir, users, FLAGS.k, FLAGS.exclude_seen, FLAGS.data_dir_override


def define_bool(name: str, default: bool, help_text: str) -> None:
    """A script's own switch (e.g. experiments.prepare's --json)."""
    _define(name, flags.DEFINE_bool, default, help_text)


def value(name: str):
    """The parsed value of flag `name` (defined by `define_*` of this module)."""
    return FLAGS[name].value

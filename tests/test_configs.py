"""The flagfiles under experiments/configs: a base per protocol (base/), each table row a few
lines that include it. Every flagfile expands (nested --flagfile paths are relative to the
repository root, where the commands run), names only its script's flags, and parses into valid
configs with its script."""

import dataclasses
import os
import pathlib
import subprocess
import sys

from absl import flags as absl_flags

from ncf_jax import config, tasks

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
SCRIPT = {"biased_mf": "rating", "rating_mlp": "rating", "clicks": "clicks",
          "two_tower": "two_tower"}  # fmt: skip


def _task_name(path: pathlib.Path) -> str:
    return next((t for key, t in SCRIPT.items() if key in path.stem), "ncf")


def _rows() -> list[pathlib.Path]:
    return sorted(CONFIGS.glob("*.flags"))


def _expand(path: pathlib.Path) -> dict[str, str]:
    """{flag: value} as absl reads the file: includes expanded in place, the last value wins."""
    args = absl_flags.FlagValues().read_flags_from_files([f"--flagfile={path}"], force_gnu=True)
    return dict(arg[2:].partition("=")[::2] for arg in args)


def test_every_flagfile_names_only_its_scripts_flags(monkeypatch):
    monkeypatch.chdir(ROOT)  # includes are written relative to the repository root
    for path in _rows():
        task = tasks.TASKS[_task_name(path)]
        fields = [f for cls in task.CONFIGS.values() for f in dataclasses.fields(cls)]
        known = {config.flag_name(f) for f in fields} | {"workdir"}
        values = _expand(path.relative_to(ROOT))
        for name in values:
            assert name in known or name.removeprefix("no") in known, (path.name, name)


def test_rows_state_the_authors_settings_once(monkeypatch):
    """A paper row includes its dataset's base and repeats none of the base's flags."""
    base = _expand(CONFIGS / "base" / "ncf_authors.flags")
    assert base == {"num_neg": "4", "batch_size": "256", "epochs": "20", "top_k": "10",
                    "learner": "adam", "learning_rate": "0.001"}  # fmt: skip
    rows = [p for p in _rows() if p.stem.split("_")[0] in ("ml100k", "ml1m", "pinterest20")]
    paper = [p for p in rows if p.stem.rsplit("_", 1)[-1] in ("8", "16", "32", "64")]
    assert len(paper) == 48
    for path in paper:
        own = [line for line in path.read_text().splitlines() if line.startswith("--")]
        assert own[0].startswith("--flagfile=experiments/configs/base/"), path.name
        assert not {line.split("=")[0][2:] for line in own} & base.keys(), path.name
    monkeypatch.chdir(ROOT)
    assert _expand(CONFIGS / "ml100k_neumf.flags") == {
        **_expand(CONFIGS / "ml100k_neumf_8.flags"), "workdir": "runs/ml100k_neumf"}  # fmt: skip


# What a flagfile leaves to the command line (the CSV file a user passes).
_COMMAND_LINE = {"netflix_csv_biased_mf": "--dataset=csv:ratings.csv"}

_PARSE = """
import sys
from absl import flags as absl_flags
from ncf_jax import flags, tasks
from ncf_jax.commands import cli
task = tasks.TASKS[sys.argv[1]]
cli.define(task)
for arg in sys.argv[2:]:
    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["parse", *arg.split(" ")])
    flags.configs_from_flags(task.CONFIGS)  # validated, as a script does before reading data
print("parsed", len(sys.argv) - 2)
"""


def test_every_flagfile_parses_into_valid_configs():
    groups: dict[str, list[str]] = {}
    for path in _rows():
        arg = f"--flagfile={path.relative_to(ROOT)} {_COMMAND_LINE.get(path.stem, '')}"
        groups.setdefault(_task_name(path), []).append(arg.strip())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = {
        name: subprocess.Popen([sys.executable, "-c", _PARSE, name, *paths], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, paths in groups.items()
    }  # fmt: skip
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (name, err[-2000:])
        assert out.split() == ["parsed", str(len(groups[name]))], (name, out)

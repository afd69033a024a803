"""Classic baselines beside GMF, MLP and NeuMF, under the sampled (1 + 99) and full-catalogue
protocols (Ferrari Dacrema et al. 2021). Writes WORKDIR/compare.json, compare.md, compare.png;
a rerun skips every run that finished. Example:

  python -m experiments.compare --dataset=ncf:ml-100k --data_dir=../shared/data/ncf \
      --workdir=runs/compare --models=ease,ials,itemknn,neumf --num_seeds=3 --tune
"""

import pathlib
import subprocess

from ncf_jax import compare, entry, flags

flags.define_flags({"compare": compare.CompareConfig})
flags.define_workdir_flag("Output folder: one subfolder per model and protocol, compare.*.")


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True)
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv) -> None:
    if len(argv) > 1:
        raise flags.UsageError(f"unexpected arguments: {argv[1:]}")
    suite = flags.configs_from_flags({"compare": compare.CompareConfig})["compare"]
    workdir = flags.workdir_from_flags()
    head = {"flags": flags.flag_values(), "git_rev": git_rev()}
    result = compare.run_suite(suite, workdir, head=head)
    print(pathlib.Path(workdir, "compare.md").read_text())
    print(f"trained {len(result['ran'])} run(s) this time -> {workdir}")


if __name__ == "__main__":
    entry.run(main)

"""Every table and figure of He et al. (WWW 2017) in one command, beside the paper's numbers:

  python -m experiments.paper --dataset=ncf:ml-1m --workdir=runs/paper_ml1m --num_seeds=3
  python -m experiments.paper --dataset=ncf:ml-100k --data_dir=../shared/data/ncf \\
      --num_seeds=3 --workdir=runs/paper_ml100k --experiments=table2,figure4

Writes WORKDIR/paper.json, paper.md and figure4..7.png; trains each distinct configuration once
in WORKDIR/cells/<name> (all seeds in one program) and resumes cell by cell when run again.
The paper's settings are the defaults (4 negatives, batch 256, Adam 0.001, 20 epochs, NeuMF-pre
then SGD); any training or evaluation flag given here changes every cell (e.g. --epochs=5 for a
quick look).
"""

import dataclasses

from absl import flags as absl_flags
from absl import logging

from ncf_jax import config, flags
from ncf_jax.commands import entry, paper
from ncf_jax.commands.paper.run import format_seconds
from ncf_jax.config import DataConfig, EvalConfig
from ncf_jax.errors import UsageError
from ncf_jax.tasks import ncf

OPTION_CONFIGS = {"data": DataConfig, "train": ncf.NCFTrainConfig, "eval": EvalConfig}
flags.define_flags(OPTION_CONFIGS, defaults=paper.PAPER_OPTIONS)
flags.define_workdir_flag("Output folder: paper.json, paper.md, figures and cells/.")
flags.define_bool(
    "report_only", False, "Train nothing: write the report of the cells finished so far."
)
absl_flags.DEFINE_list(
    "experiments", list(paper.EXPERIMENTS), f"Subset to run: {','.join(paper.EXPERIMENTS)}."
)


def main(argv) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {argv[1:]} (flags look like --name=value)")
    configs = flags.configs_from_flags(OPTION_CONFIGS)  # validated before any data is read
    names = flags.value("experiments")
    workdir = flags.workdir_from_flags()
    fields = [f for cls in OPTION_CONFIGS.values() for f in dataclasses.fields(cls)]
    base = {config.flag_name(f): flags.value(config.flag_name(f)) for f in fields
            if "help" in f.metadata}  # fmt: skip
    base |= {k: v for k, v in paper.PAPER_OPTIONS.items() if k not in base}  # e.g. --alpha
    paper.plan_for(names, base)  # an unknown experiment fails before the data is read
    data = ncf.load_data(configs)
    logging.info("data: %s", data.stats())
    out = paper.reproduce(data, base, workdir, names, extra={"flags": flags.flag_values()},
                          train=not flags.value("report_only"))  # fmt: skip
    total = sum(c["seconds"] or 0.0 for c in out["cells"])
    done, cells = out["cells_finished"]
    print(f"{done} of {cells} cells ({format_seconds(total)} of training recorded) -> "
          f"{workdir}/paper.md, paper.json, figures")  # fmt: skip


if __name__ == "__main__":
    entry.run(main)

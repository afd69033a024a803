"""Train and evaluate the two-tower (DSSM-style) retrieval model, beside the most-popular
baseline under the same protocol. Example (ml-100k, global temporal split, full ranking):

  python -m experiments.two_tower --flagfile=experiments/configs/ml100k_two_tower.flags \
      --workdir=/tmp/two_tower
"""

import json

from absl import app, logging

from ncf_jax import flags as ncf_flags
from ncf_jax import reporting
from ncf_jax.data import load_dataset
from ncf_jax.retrieval import train_and_evaluate_two_tower

ncf_flags.define_run_flags(default_model="two_tower")
ncf_flags.define_two_tower_flags()


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    # Every config is built (and validated) before any data is read.
    data_config = ncf_flags.data_config_from_flags()
    model_config = ncf_flags.two_tower_model_config_from_flags()
    train_config = ncf_flags.two_tower_train_config_from_flags()
    eval_config = ncf_flags.eval_config_from_flags()
    workdir = ncf_flags.workdir_from_flags()
    data = load_dataset(data_config)
    logging.info("data: %s", json.dumps(data.stats()))
    results = train_and_evaluate_two_tower(
        data,
        model_config,
        train_config,
        eval_config,
        workdir,
        extra={"flags": ncf_flags.flag_values()},
        data_config=data_config,
    )
    print(
        f"{results['model']} ({results['loss']}) on {results['dataset']}, "
        f"{results['eval_protocol']} ranking: best epoch {results['best_epoch']} "
        f"({results['select_epoch']}) {reporting.format_metrics(results['best'])} -> {workdir}"
    )
    popular = results["baseline"]["popularity"]
    print(f"most-popular baseline: {reporting.format_metrics(popular)}")


if __name__ == "__main__":
    app.run(main)

"""Train and evaluate the two-tower (DSSM-style) retrieval model, beside the most-popular
baseline under the same protocol. Example (ml-100k, global temporal split, full ranking):

  python -m experiments.two_tower --flagfile=experiments/configs/ml100k_two_tower.flags \
      --workdir=/tmp/two_tower
"""

from absl import app

from experiments import _train
from ncf_jax import flags as ncf_flags
from ncf_jax import reporting
from ncf_jax.retrieval import train_and_evaluate_two_tower

ncf_flags.define_run_flags(default_model="two_tower")
ncf_flags.define_two_tower_flags()


def main(argv) -> None:
    results = _train.run(
        argv,
        train_and_evaluate_two_tower,
        ncf_flags.two_tower_model_config_from_flags,
        ncf_flags.two_tower_train_config_from_flags,
    )
    print(
        f"{_train.summary(results)}, {results['eval_protocol']} ranking, loss {results['loss']}"
        f" -> {ncf_flags.workdir_from_flags()}"
    )
    popular = results["baseline"]["popularity"]
    print(f"most-popular baseline: {reporting.format_metrics(popular)}")


if __name__ == "__main__":
    app.run(main)

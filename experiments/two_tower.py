"""Train and evaluate the two-tower (DSSM-style) retrieval model, beside the most-popular
baseline under the same protocol. Example (ml-100k, global temporal split, full ranking):

  python -m experiments.two_tower --flagfile=experiments/configs/ml100k_two_tower.flags \
      --workdir=/tmp/two_tower
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import two_tower

cli.define(two_tower)

if __name__ == "__main__":
    cli.run(two_tower)

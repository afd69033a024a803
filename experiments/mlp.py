"""Train and evaluate MLP (He et al., WWW 2017). Example:

python -m experiments.mlp --flagfile=experiments/configs/ml100k_mlp.flags --workdir=/tmp/mlp
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import ncf

cli.define(ncf, defaults={"model": "mlp"})

if __name__ == "__main__":
    cli.run(ncf)

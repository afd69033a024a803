"""Train and evaluate GMF (He et al., WWW 2017). Example:

python -m experiments.gmf --flagfile=experiments/configs/ml100k_gmf.flags --workdir=/tmp/gmf
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import ncf

cli.define(ncf, defaults={"model": "gmf"})

if __name__ == "__main__":
    cli.run(ncf)

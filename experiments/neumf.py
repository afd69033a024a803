"""Train and evaluate NeuMF (He et al., WWW 2017), optionally pre-trained from GMF + MLP.

Any registered pointwise model runs with --model=NAME (e.g. --model=mf). Example:

  python -m experiments.neumf --flagfile=experiments/configs/ml100k_neumf.flags --workdir=/tmp/neumf
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import ncf

cli.define(ncf, defaults={"model": "neumf"})

if __name__ == "__main__":
    cli.run(ncf)

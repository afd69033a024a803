"""Fit and evaluate a classic baseline (toppop, itemknn, userknn, rp3beta, puresvd, slim, ease,
ials) under the NCF protocols. Example (EASE^R on ML-100K, full-catalogue ranking):

  python -m experiments.classic --dataset=ncf:ml-100k --data_dir=../shared/data/ncf \
      --model=ease --ease_lambda=200 --eval_protocol=full --workdir=/tmp/ease
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import classic

cli.define(classic)

if __name__ == "__main__":
    cli.run(classic)

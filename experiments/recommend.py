"""Top-K recommendations of a trained run (any model), in ORIGINAL user and item ids:

  python -m experiments.recommend --workdir=/tmp/two_tower --users=1,42 --k=10

Prints one block per user: rank, item id, score and the title where the dataset has titles
(ml-100k u.item, ml-1m movies.dat, movies.csv). The user's training items are left out unless
--noexclude_seen.
"""

from absl import app, flags

from ncf_jax import flags as ncf_flags
from ncf_jax.recommend import load_run, recommend

ncf_flags.define_recommend_flags()
FLAGS = flags.FLAGS


def format_recommendations(recommendations: list) -> str:
    lines = []
    for rec in recommendations:
        lines.append(f"user {rec['user']}:")
        titles = rec["titles"] or [""] * len(rec["items"])
        for rank, (item, score, title) in enumerate(
            zip(rec["items"], rec["scores"], titles, strict=True), start=1
        ):
            lines.append(f"  {rank:3d}. item {item:<8} score {score:9.4f}  {title}".rstrip())
    return "\n".join(lines)


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    workdir = ncf_flags.workdir_from_flags()
    if not FLAGS.users:
        raise ValueError("--users is required: comma-separated ORIGINAL user ids, e.g. 1,42")
    users = [u.strip() for u in FLAGS.users.split(",") if u.strip()]
    run = load_run(workdir, data_dir=FLAGS.data_dir_override)
    print(format_recommendations(recommend(run, users, FLAGS.k, exclude_seen=FLAGS.exclude_seen)))


if __name__ == "__main__":
    app.run(main)

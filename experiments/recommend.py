"""Top-K recommendations of a trained run (any model), in ORIGINAL user and item ids:

  python -m experiments.recommend --workdir=/tmp/two_tower --users=1,42 --k=10

Prints one block per user: rank, item id, score and the title where the dataset has titles
(ml-100k u.item, ml-1m movies.dat, movies.csv). The user's training items are left out unless
--noexclude_seen.
"""

from ncf_jax import flags
from ncf_jax.commands import entry
from ncf_jax.commands.recommend import load_run, recommend

flags.define_recommend_flags()


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
        raise flags.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir, users, k, exclude_seen, data_dir = flags.recommend_request_from_flags()
    run = load_run(workdir, data_dir=data_dir)
    print(format_recommendations(recommend(run, users, k, exclude_seen=exclude_seen)))


if __name__ == "__main__":
    entry.run(main)

"""Stage: raw file. Synthetic rating files in the Netflix Prize layout, of the Netflix Prize or
the ML-20M shape (scaled), for benchmarks and tests that must not download anything.

`write_netflix(folder, shape=..., scale=...)` writes `combined_data_1.txt` .. `_4.txt`,
`probe.txt` and `movie_titles.csv` as `ncf_jax.data.netflix` reads them:
  * exactly round(scale x ratings) distinct (user, movie) pairs over round(scale x users)
    users (CustomerIDs sparse in 1..2,649,429 like the release) and all of the shape's movies;
    every user has at least two ratings and every movie at least one;
  * popularity skew: movies by a Zipf-like law (exponent 1), user activity log-normal;
  * ratings 1..5 from a user bias + a movie bias + noise (so a rating model has a signal);
    dates uniform over 1999-11-11 .. 2005-12-31;
  * probe.txt lists a seeded random 1.4 % of the ratings (the release's share; the release
    took them among each user's latest ratings).
Text is formatted by NumPy scatters into one byte array per file, not line by line.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ncf_jax.data import netflix

SHAPES = {  # (ratings, users, movies)
    "netflix": (100_480_507, 480_189, 17_770),
    "ml-20m": (20_000_263, 138_493, 26_744),
}
MAX_CUSTOMER_ID = 2_649_429
PROBE_FRACTION = 1_408_395 / 100_480_507
FIRST_DAY, LAST_DAY = 10_906, 13_148  # 1999-11-11 and 2005-12-31, days since 1970-01-01
_RATING_SHARES = np.array([0.046, 0.101, 0.287, 0.336, 0.230])  # the release's histogram


def _pairs(rng, num_ratings: int, num_users: int, num_items: int) -> np.ndarray:
    """Sorted distinct user * num_items + item keys, skewed, covering every user and item."""
    users = np.concatenate(
        [np.repeat(np.arange(num_users), 2), rng.integers(0, num_users, num_items)]
    )
    items = np.concatenate([rng.integers(0, num_items, 2 * num_users), np.arange(num_items)])
    keys = seeded = _unique(users.astype(np.int64) * num_items + items)
    # Capped so no user nor movie nears saturation (the release: at most 17,653 ratings per
    # user, 232,944 per movie); saturated rows would make the distinct-pair top-up crawl.
    activity = _capped(rng.lognormal(0.0, 1.2, num_users), 0.3 * num_items / num_ratings)
    popularity = _capped(1.0 / np.arange(1, num_items + 1), 0.45 * num_users / num_ratings)
    popularity = rng.permutation(popularity)
    while len(keys) < num_ratings:
        extra = int((num_ratings - len(keys)) * 1.15) + 64
        drawn = rng.choice(num_users, extra, p=activity).astype(np.int64) * num_items
        drawn += rng.choice(num_items, extra, p=popularity)
        keys = _unique(np.concatenate([keys, drawn]))
    surplus = len(keys) - num_ratings
    if surplus:  # drop drawn pairs only: the seeded ones keep every user and item present
        drawn_at = np.flatnonzero(~np.isin(keys, seeded, assume_unique=True))
        keys = np.delete(keys, rng.choice(drawn_at, surplus, replace=False))
    return keys


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort: NumPy 2's hashing np.unique is slower on int64 keys)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def _capped(weights: np.ndarray, cap: float) -> np.ndarray:
    """Weights normalised to sum 1 with no entry above `cap` (excess spread over the rest)."""
    weights = weights / weights.sum()
    for _ in range(20):
        weights = np.minimum(weights, cap)
        weights /= weights.sum()
    return weights


def _ndigits(values: np.ndarray) -> np.ndarray:
    return np.floor(np.log10(np.maximum(values, 1))).astype(np.int64) + 1


def format_lines(ids: np.ndarray, tails: np.ndarray) -> bytes:
    """Lines `<id><tail>\\n`: ids [n] positive ints, tails [n, w] uint8 (0 bytes are skipped
    only at the end of a row, so a tail is a left-aligned string padded with zeros)."""
    digits = _ndigits(ids)
    tail_len = (tails != 0).sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(digits + tail_len + 1)[:-1]])
    out = np.zeros(int(starts[-1] + digits[-1] + tail_len[-1] + 1), np.uint8)
    value = ids.astype(np.int64)
    for k in range(int(digits.max())):
        present = k < digits
        out[(starts + digits - 1 - k)[present]] = (value % 10)[present] + ord("0")
        value //= 10
    for j in range(tails.shape[1]):
        present = j < tail_len
        out[(starts + digits + j)[present]] = tails[present, j]
    out[starts + digits + tail_len] = ord("\n")
    return out.tobytes()


def _date_table() -> np.ndarray:
    days = np.arange(FIRST_DAY, LAST_DAY + 1).astype("datetime64[D]")
    return np.frombuffer(np.datetime_as_string(days).astype("S10").tobytes(), np.uint8).reshape(
        -1, 10
    )


def _grouped(movies, customers, tails_of_rows, tail_width: int):
    """(ids, tails) of `MovieID:` header lines followed by each movie's rows (rows sorted)."""
    starts = np.flatnonzero(np.concatenate([[True], movies[1:] != movies[:-1]]))
    n = len(movies) + len(starts)
    is_head = np.zeros(n, bool)
    is_head[starts + np.arange(len(starts))] = True
    ids = np.empty(n, np.int64)
    ids[is_head], ids[~is_head] = movies[starts], customers
    tails = np.zeros((n, tail_width), np.uint8)
    tails[is_head, 0] = ord(":")
    tails[~is_head] = tails_of_rows
    return ids, tails


def write_netflix(folder, *, shape: str = "netflix", scale: float = 1.0, seed: int = 0) -> dict:
    """Write the synthetic files into `folder`; returns {"ratings", "users", "items", "probe"}."""
    total, total_users, num_items = SHAPES[shape]
    num_ratings, num_users = round(total * scale), max(2, round(total_users * scale))
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = _pairs(rng, num_ratings, num_users, num_items)
    customers = np.sort(rng.choice(MAX_CUSTOMER_ID, num_users, replace=False) + 1)
    users, items = keys // num_items, (keys % num_items).astype(np.int32)
    del keys
    bias = rng.normal(0, 0.5, num_users)[users] + rng.normal(0, 0.5, num_items)[items]
    cut = np.quantile(bias + rng.normal(0, 0.8, len(items)), np.cumsum(_RATING_SHARES)[:-1])
    ratings = (np.searchsorted(cut, bias + rng.normal(0, 0.8, len(items))) + 1).astype(np.uint8)
    del bias
    customer_of_row = customers[users].astype(np.int64)
    del users
    order = np.lexsort((rng.random(len(items)), items))  # by movie, customers in random order
    movies = items[order].astype(np.int64) + 1
    probe = rng.random(len(order)) < PROBE_FRACTION
    dates = _date_table()
    for part, chunk in enumerate(np.array_split(np.arange(1, num_items + 1), 4), start=1):
        rows = order[(movies >= chunk[0]) & (movies <= chunk[-1])]
        tails = np.zeros((len(rows), 13), np.uint8)
        tails[:, 0] = tails[:, 2] = ord(",")
        tails[:, 1] = ratings[rows] + ord("0")
        tails[:, 3:] = dates[rng.integers(0, len(dates), len(rows))]
        ids, lines = _grouped(items[rows] + 1, customer_of_row[rows], tails, 13)
        (folder / netflix.COMBINED.format(part)).write_bytes(format_lines(ids, lines))
    ids, lines = _grouped(
        movies[probe], customer_of_row[order[probe]], np.zeros((probe.sum(), 1), np.uint8), 1
    )
    (folder / netflix.PROBE).write_bytes(format_lines(ids, lines))
    _write_titles(folder / netflix.TITLES, num_items, rng)
    return {
        "ratings": num_ratings,
        "users": num_users,
        "items": num_items,
        "probe": int(probe.sum()),
    }


def _write_titles(path, num_items: int, rng) -> None:
    """Latin-1 titles, some with commas, some years NULL, as in the release."""
    years = rng.integers(1915, 2006, num_items)
    lines = [
        f"{i},{'NULL' if i % 97 == 0 else years[i - 1]},"
        + ("Amélie, Vol. " if i % 5 == 0 else "Movie ")
        + str(i)
        for i in range(1, num_items + 1)
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))

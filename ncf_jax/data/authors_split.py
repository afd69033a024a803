"""Stage: raw file. The NCF authors' ml-100k files (`ncf:ml-100k`), derived from GroupLens' u.data.

The authors published ML-1M and Pinterest files, not ml-100k; the `ncf:ml-100k` files used by
this project's results were made from the GroupLens archive by the authors' recipe, and this
module makes them again, byte for byte (checked against the SHA-256s below):

  ids          raw id - 1 (ml-100k's ids are 1..943 and 1..1682, so they stay contiguous)
  test         each user's latest rating; ties in time go to the largest item id
  train        every other rating, sorted by (user, timestamp, item)
  negatives    one `np.random.RandomState(0)` for all users, in user order:
               `rng.choice(never_rated, 99, replace=False)`, `never_rated` the sorted items
               the user never rated (train and test)

NumPy keeps RandomState's stream fixed (NEP 19), so the same u.data gives the same files on any
machine. When `--data_dir` lacks the files, `ensure` derives them into the cache root
(`$NCF_JAX_DATA`, else ~/.cache/ncf_jax), from the GroupLens archive it downloads there
(SHA-256-checked) or finds unpacked there.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import uuid

import numpy as np
from absl import logging

from ncf_jax.config import default_data_dir
from ncf_jax.data import download, readers
from ncf_jax.errors import DataError, DownloadError

NAME = "ml-100k"
NUM_NEGATIVES = 99
SUFFIXES = {"train": ".train.rating", "test": ".test.rating", "negatives": ".test.negative"}
# GroupLens' u.data, and the three files derived from it (equal to the authors' format files).
U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
SHA256 = {
    "train": "35b2a94938f40f79509b4a637f3596bd532c812c2c9ef17bcc8a709b036a2150",
    "test": "c145ba7bd24392f3638801e194f08fa9a0745fe75d7439702e724f7023e593d3",
    "negatives": "47a77ceefaacac8305855749aa5686db1d6bb440bd03a29cc4f8d848f4e9311a",
}


def _rows(table: np.ndarray) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in table.tolist())


def derive(u_data) -> dict[str, str]:
    """{role: file text} of the authors' ml-100k files from a u.data file (module docstring)."""
    frame = readers.read_movielens_ratings(u_data)
    table = np.stack([frame[c].to_numpy(np.int64) for c in readers.RAW_COLUMNS], axis=1)
    table[:, :2] -= 1
    num_users, num_items = int(table[:, 0].max()) + 1, int(table[:, 1].max()) + 1
    if len(np.unique(table[:, 0])) != num_users or table[:, :2].min() < 0:
        raise DataError(u_data, "user ids are not 1..N without gaps (not GroupLens' u.data?)")
    order = np.lexsort((table[:, 1], table[:, 3], table[:, 0]))  # user, then time, then item
    table = table[order]
    last = np.r_[table[1:, 0] != table[:-1, 0], True]
    test, train = table[last], table[~last]
    rng = np.random.RandomState(0)
    rated = np.zeros((num_users, num_items), bool)
    rated[table[:, 0], table[:, 1]] = True
    lines = []
    for user, item in test[:, :2].tolist():
        never_rated = np.flatnonzero(~rated[user])
        if len(never_rated) < NUM_NEGATIVES:
            raise DataError(u_data, f"user {user + 1} rated all but {len(never_rated)} items")
        negatives = rng.choice(never_rated, NUM_NEGATIVES, replace=False)
        lines.append(f"({user},{item})\t" + "\t".join(map(str, negatives.tolist())) + "\n")
    return {"train": _rows(train), "test": _rows(test), "negatives": "".join(lines)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(texts: dict[str, str], folder) -> dict[str, pathlib.Path]:
    """The files under `folder`, each written atomically (a temporary name, then a rename)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {role: folder / f"{NAME}{suffix}" for role, suffix in SUFFIXES.items()}
    for role, path in paths.items():
        part = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.part")
        part.write_text(texts[role])
        os.replace(part, path)
    return paths


def _check(texts: dict[str, str], u_data) -> None:
    """GroupLens' own u.data must give the authors' files; anything else is said in a warning."""
    if download.sha256_of(u_data) != U_DATA_SHA256:
        logging.warning("%s is not GroupLens' ml-100k u.data (SHA-256 differs): the derived "
                        "ncf:ml-100k files are not the NCF authors'", u_data)  # fmt: skip
        return
    wrong = [role for role, text in texts.items() if _sha256(text) != SHA256[role]]
    if wrong:  # a NumPy whose RandomState stream changed, which NEP 19 rules out
        raise DataError(u_data, f"derived {wrong} differ from the NCF authors' files: please "
                        "report it with your NumPy version")  # fmt: skip


def ensure(data_dir, *, opener) -> dict[str, pathlib.Path]:
    """The `ncf:ml-100k` files: from the cache root, else derived into it from GroupLens'
    archive (downloaded there when missing); DownloadError says where to put which file."""
    root = default_data_dir()
    paths = {role: root / f"{NAME}{suffix}" for role, suffix in SUFFIXES.items()}
    if all(p.is_file() for p in paths.values()):
        logging.info("ncf:%s: not in %s; using the files derived into %s", NAME, data_dir, root)
        return paths
    grouplens = download.SOURCES[NAME]
    try:
        u_data = download.ensure_files(grouplens, root, opener=opener)["ratings"]
    except DownloadError as error:
        raise DownloadError(
            f"ncf:{NAME}: the NCF authors' files are not in {data_dir}, and deriving them needs "
            f"GroupLens' archive: {error} (or put ml-100k.train.rating, .test.rating and "
            f".test.negative in {data_dir})"
        ) from None
    texts = derive(u_data)
    _check(texts, u_data)
    logging.warning("ncf:%s: not in %s; derived from %s into %s (the authors' split)",
                    NAME, data_dir, u_data, root)  # fmt: skip
    return write(texts, root)

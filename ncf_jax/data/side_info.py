"""Stage: raw file -> side features. MovieLens user and item attributes, indexed by original id.

Every item table has `title` and `genres` (genre names joined by "|", the MovieLens 1M spelling,
so `items.genres.str.get_dummies("|")` gives a multi-hot matrix for any release). User tables
have `gender`, `age`, `occupation` (a name, also for 1M whose file stores a code) and
`zip_code`. Only MovieLens 100K and 1M ship user attributes.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from ncf_jax.data import checks
from ncf_jax.data.netflix import TITLES, read_movie_titles
from ncf_jax.data.readers import DataError, parse_table, read_bytes

# Genre order of the 0/1 columns of 100K's u.item (its u.genre file lists the same).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Occupation codes of 1M's users.dat, as its README lists them.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


def _decode_guess(path) -> tuple[bytes, str]:
    """10M and later files are UTF-8, 100K and 1M are latin-1: try UTF-8 first."""
    data = read_bytes(path)
    try:
        data.decode("utf-8")
        return data, "utf-8"
    except UnicodeDecodeError:
        return data, "latin-1"


ML1M_AGES = (1, 18, 25, 35, 45, 50, 56)  # the age-group codes of 1M's users.dat (its README)


def _check_users(path, frame: pd.DataFrame, ages) -> None:
    gender = frame["gender"].to_numpy(dtype=str)
    checks.refuse(path, ~np.isin(gender, ["M", "F"]), "gender is not M or F", values=gender)
    age = frame["age"].to_numpy()
    allowed = np.isin(age, ages) if isinstance(ages, tuple) else (age >= 0) & (age <= ages)
    what = f"one of {ages}" if isinstance(ages, tuple) else f"0..{ages}"
    checks.refuse(path, ~allowed, f"age is not {what}", values=age)


def _ml100k_users(path) -> pd.DataFrame:
    columns = [("user", "int"), ("age", "int"), ("gender", "str"), ("occupation", "str")]
    frame = parse_table(path, [*columns, ("zip_code", "str")], sep="|", encoding="latin-1")
    _check_users(path, frame, 150)
    return frame.set_index("user")


def _ml1m_users(path) -> pd.DataFrame:
    columns = [("user", "int"), ("gender", "str"), ("age", "int"), ("occupation", "int")]
    frame = parse_table(path, [*columns, ("zip_code", "str")], sep="::", encoding="latin-1")
    _check_users(path, frame, ML1M_AGES)
    codes = frame["occupation"].to_numpy()
    bad = np.flatnonzero((codes < 0) | (codes >= len(ML1M_OCCUPATIONS)))
    if len(bad):
        raise DataError(path, f"unknown occupation code {codes[bad[0]]}", int(bad[0]) + 1)
    frame["occupation"] = np.asarray(ML1M_OCCUPATIONS)[codes]
    return frame.set_index("user")


def _ml100k_items(path) -> pd.DataFrame:
    head = [("item", "int"), ("title", "str"), ("release_date", "str?")]
    flags = [(genre, "int") for genre in ML100K_GENRES]
    columns = [*head, ("video_release_date", "str?"), ("imdb_url", "str?"), *flags]
    frame = parse_table(path, columns, sep="|", encoding="latin-1")
    flags = frame[list(ML100K_GENRES)].to_numpy()
    checks.refuse(path, ((flags != 0) & (flags != 1)).any(axis=1), "a genre flag is not 0 or 1")
    # A 0/1 matrix times "Name|" strings concatenates the names of the set flags, row-wise.
    names = pd.Series([f"{genre}|" for genre in ML100K_GENRES], index=list(ML100K_GENRES))
    genres = (frame[list(ML100K_GENRES)].astype(bool).astype(object) * names).sum(axis=1)
    frame["genres"] = genres.astype(str).str.rstrip("|")
    return frame[["item", "title", "genres", "release_date"]].set_index("item")


def _movies_dat(path) -> pd.DataFrame:
    data, encoding = _decode_guess(path)
    columns = [("item", "int"), ("title", "str"), ("genres", "str")]
    frame = parse_table(path, columns, sep="::", encoding=encoding, data=data)
    return frame.set_index("item")


def _movies_csv(path) -> pd.DataFrame:
    columns = [("item", "int"), ("title", "str"), ("genres", "str")]
    frame = parse_table(path, columns, sep=",", skip_lines=1, quoted=True)
    return frame.set_index("item")


_READERS = {
    "u.user": _ml100k_users,
    "users.dat": _ml1m_users,
    "u.item": _ml100k_items,
    "movies.dat": _movies_dat,
    "movies.csv": _movies_csv,
    TITLES: read_movie_titles,  # Netflix Prize movie_titles.csv
}


def read_side_table(path) -> pd.DataFrame:
    """A MovieLens user or item attribute file, chosen by its name, indexed by original id."""
    path = pathlib.Path(path)
    if path.name not in _READERS:
        raise DataError(path, f"not a MovieLens side-information file ({sorted(_READERS)})")
    frame = _READERS[path.name](path)
    duplicated = frame.index.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        line = row + 1 + (path.suffix == ".csv")
        raise DataError(path, f"id {frame.index[row]} appears twice", line)
    return frame


def titles_of(items: pd.DataFrame, original_ids) -> np.ndarray:
    """Titles of the given ORIGINAL item ids; KeyError names any id the table lacks."""
    original_ids = np.asarray(original_ids)
    missing = ~np.isin(original_ids, items.index.to_numpy())
    if missing.any():
        raise KeyError(f"item ids not in the item table: {original_ids[missing][:10].tolist()}")
    return items["title"].reindex(original_ids).to_numpy(dtype=str)

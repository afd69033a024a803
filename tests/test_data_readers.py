"""Readers: every MovieLens / generic format on tiny files, side information, real ml-100k."""

import numpy as np
import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, readers, side_info

ROWS = [(1, 10, 4.0, 100), (1, 12, 3.5, 90), (2, 10, 5.0, 80)]


def _check(table, ids=np.int64):
    assert list(table.columns) == ["user", "item", "rating", "timestamp"]
    assert table["user"].to_numpy().tolist() == [1, 1, 2]
    assert table["item"].to_numpy().tolist() == [10, 12, 10]
    assert table["rating"].dtype == np.float32
    assert table["rating"].tolist() == [4.0, 3.5, 5.0]
    assert table["timestamp"].dtype == np.int64
    assert table["timestamp"].tolist() == [100, 90, 80]


def test_ml100k_u_data(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in ROWS))
    _check(readers.read_movielens_ratings(path))


def test_ml1m_ratings_dat(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS))
    _check(readers.read_movielens_ratings(path))


def test_ml20m_ratings_csv_crlf(tmp_path):
    path = tmp_path / "ratings.csv"
    body = "".join(f"{u},{i},{r:g},{t}\r\n" for u, i, r, t in ROWS)
    path.write_bytes(("userId,movieId,rating,timestamp\r\n" + body).encode())
    _check(readers.read_movielens_ratings(path))


def test_ml10m_archive_layout_is_found(tmp_path):
    folder = tmp_path / "ml-10M100K"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS))
    cfg = DataConfig(dataset="ml-10m", data_dir=str(tmp_path), cache=False)
    paths = dataset.source_files(cfg)
    assert paths["ratings"] == folder / "ratings.dat"
    assert dataset.load_dataset(cfg).num_users == 2


def test_generic_csv_string_ids_and_optional_columns(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text('uid\textra\tsku\nalice\t"x"\tb-2\nbob\t\ta-1\nalice\tz\ta-1\n')
    table = readers.read_csv_interactions(
        path, user_col="uid", item_col="sku", rating_col=None, timestamp_col=None, sep="\t"
    )
    assert table["user"].tolist() == ["alice", "bob", "alice"]
    assert table["item"].tolist() == ["b-2", "a-1", "a-1"]
    assert table["rating"].tolist() == [1.0, 1.0, 1.0]
    assert table["timestamp"].tolist() == [0, 0, 0]


def test_generic_csv_numeric_ids_and_dataset(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("ts,user,item,rating\n5,7,3,1\n6,7,4,2\n7,9,3,3\n8,9,4,4\n")
    table = readers.read_csv_interactions(
        path, user_col="user", item_col="item", rating_col="rating", timestamp_col="ts"
    )
    assert table["user"].dtype == np.int64
    cfg = DataConfig(dataset=f"csv:{path}", csv_timestamp_col="ts", cache=False)
    data = dataset.load_dataset(cfg)
    assert data.user_ids.tolist() == [7, 9] and data.item_ids.tolist() == [3, 4]
    assert data.test_items.tolist() == [1, 1]  # latest item of each user: original id 4


def test_side_info_ml100k(tmp_path):
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags = ["0"] * 19
    flags[1], flags[5] = "1", "1"
    title = 'Caf\xe9 "Noir" (1995)'.encode("latin-1")
    (tmp_path / "u.item").write_bytes(
        b"7|" + title + b"|01-Jan-1995||http://x|" + "|".join(flags).encode() + b"\n"
    )
    users = side_info.read_side_table(tmp_path / "u.user")
    assert users.loc[2, "occupation"] == "other" and users.loc[1, "age"] == 24
    items = side_info.read_side_table(tmp_path / "u.item")
    assert items.loc[7, "title"] == 'Café "Noir" (1995)'
    assert items.loc[7, "genres"] == "Action|Comedy"


def test_side_info_ml1m_and_csv(tmp_path):
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "movies.dat").write_bytes("1::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1"))
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama\n'
    )
    users = side_info.read_side_table(tmp_path / "users.dat")
    assert users["occupation"].tolist() == ["K-12 student", "self-employed"]
    movies = side_info.read_side_table(tmp_path / "movies.dat")
    assert movies.loc[1, "title"] == "Amélie (2001)"
    movies_csv = side_info.read_side_table(tmp_path / "movies.csv")
    assert movies_csv.loc[1, "title"] == "American President, The (1995)"
    assert side_info.titles_of(movies_csv, [1]).tolist() == ["American President, The (1995)"]
    with pytest.raises(KeyError, match="99"):
        side_info.titles_of(movies_csv, [99])


def test_real_ml100k_statistics_and_titles(shared_data):
    table = readers.read_movielens_ratings(shared_data / "ml-100k" / "u.data")
    assert len(table) == 100_000
    assert table["user"].nunique() == 943 and table["item"].nunique() == 1682
    items = side_info.read_side_table(shared_data / "ml-100k" / "u.item")
    users = side_info.read_side_table(shared_data / "ml-100k" / "u.user")
    assert len(items) == 1682 and len(users) == 943
    assert side_info.titles_of(items, [1]).tolist() == ["Toy Story (1995)"]

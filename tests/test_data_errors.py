"""Bad input: each DataError names the file, the 1-based line and the problem."""

import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, ncf_format, readers, side_info
from ncf_jax.data.readers import DataError

GOOD = "1\t10\t4\t100\n2\t11\t3\t101\n3\t12\t5\t102\n"


def _raises(path, line, match, call):
    with pytest.raises(DataError, match=match) as info:
        call()
    assert info.value.path == str(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}:" if line else f"{path}:")


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("1\t10\t4\t100\n2\t11\t3\n", 2, "expected 4 fields"),
        ("1\t10\t4\t100\n2\t11\t3\t101\t9\n", 2, "expected 4 fields"),
        ("1\t10\t4\t100\n2\tabc\t3\t101\n", 2, "'item'.*not an integer"),
        ("1\t10\t4\t100\n2\t11\tfive\t101\n3\t12\t5\t102\n", 2, "'rating'.*not a finite"),
        ("1\t10\t4\t100\n2\t11\t3\t101\n3\t12\tnan\t102\n", 3, "'rating'.*not a finite"),
        ("1\t10\t4\t100\n2\t11\tinf\t101\n", 2, "'rating'.*not a finite"),
        ("1\t10\t4\t100\n2\t11\t3\t1.5\n", 2, "'timestamp'.*not an integer"),
        ("1\t10\t4\t100\n\n2\t11\t3\t101\n", 2, "empty line"),
        ("1\t10\t4\t100\n2\t\t3\t101\n", 2, "'item'.*not an integer"),
        ("1,10,4,100\n", 1, "expected 4 fields separated by '\\\\t'"),
    ],
)
def test_bad_u_data(tmp_path, text, line, match):
    path = tmp_path / "u.data"
    path.write_text(text)
    _raises(path, line, match, lambda: readers.read_movielens_ratings(path))


def test_bad_ratings_dat_and_csv(tmp_path):
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::4::100\n1::10::4\n")
    _raises(dat, 2, "expected 4 fields", lambda: readers.read_movielens_ratings(dat))
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,10,4,100\n1,x,4,100\n")
    _raises(csv, 3, "'item'", lambda: readers.read_movielens_ratings(csv))
    csv.write_text("user,movie,rating,timestamp\n1,10,4,100\n")
    _raises(csv, 1, "header should be", lambda: readers.read_movielens_ratings(csv))


def test_missing_and_empty_files(tmp_path):
    path = tmp_path / "u.data"
    _raises(path, None, "file not found", lambda: readers.read_movielens_ratings(path))
    path.write_text("\n\n")
    _raises(path, None, "file is empty", lambda: readers.read_movielens_ratings(path))
    cfg = DataConfig(dataset="ncf:nothing", data_dir=str(tmp_path), cache=False)
    missing = tmp_path / "nothing.train.rating"
    _raises(missing, None, "file not found", lambda: dataset.load_dataset(cfg))


def test_generic_csv_errors(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("u,i,r\n1,2,3\n")
    read = lambda: readers.read_csv_interactions(  # noqa: E731
        path, user_col="u", item_col="i", rating_col="r", timestamp_col="t"
    )
    _raises(path, 1, "no column 't'", read)
    path.write_text("u,i,r,t\n1,2,3,4\n1,,3,4\n")
    _raises(path, 3, "'i'.*empty", read)


def test_side_info_errors(tmp_path):
    path = tmp_path / "users.dat"
    path.write_text("1::F::1::10::48067\n2::M::56::99::70072\n")
    _raises(path, 2, "unknown occupation code 99", lambda: side_info.read_side_table(path))
    path = tmp_path / "movies.csv"
    path.write_text("movieId,title,genres\n1,A,Drama\n1,B,Drama\n")
    _raises(path, 3, "id 1 appears twice", lambda: side_info.read_side_table(path))


def _ncf(tmp_path, negatives, test="0\t2\t5\t20\n1\t1\t3\t20\n"):
    (tmp_path / "x.train.rating").write_text("0\t1\t5\t10\n1\t0\t4\t10\n1\t3\t4\t11\n")
    (tmp_path / "x.test.rating").write_text(test)
    (tmp_path / "x.test.negative").write_text(negatives)
    paths = {r: tmp_path / f"x{s}" for r, s in ncf_format.SUFFIXES.items()}
    return paths, lambda: ncf_format.read_ncf(paths)


@pytest.mark.parametrize(
    "negatives, line, match",
    [
        ("(0,2)\t0\t3\n(1,1)\t0\n", 2, "expected 2 negatives"),
        ("(0,2)\t0\t3\n1,1\t0\t2\n", 2, "start with '\\(user,item\\)'"),
        ("(0,2)\t0\t3\n(1 1)\t0\t2\n", 2, "start with"),
        ("(0,2)\t0\t3\n(1,1)\t0\tx\n", 2, "'x' is not an id"),
        ("(0,2)\t0\t3\n(1,1)\t0\t9\n", 2, "unknown item 9"),
        ("(0,2)\t0\t3\n(5,1)\t0\t2\n", 2, "does not match line 2 of"),
    ],
)
def test_bad_negatives(tmp_path, negatives, line, match):
    paths, read = _ncf(tmp_path, negatives)
    _raises(paths["negatives"], line, match, read)


def test_negatives_lines_do_not_match_test_file(tmp_path):
    paths, read = _ncf(tmp_path, "(0,2)\t0\t3\n")
    _raises(paths["negatives"], None, "has 1 lines but .*x.test.rating has 2", read)


def test_bad_ncf_rating_file(tmp_path):
    paths, read = _ncf(tmp_path, "(0,2)\t0\t3\n(1,1)\t0\t2\n", test="0\t2\t5\t20\n-1\t1\t3\t20\n")
    _raises(paths["test"], 2, "negative user id", read)

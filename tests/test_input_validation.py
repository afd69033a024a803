"""Inputs validated as a whole (docs/input-validation.md): every reader checks range, type,
encoding and structure and names FILE:LINE; the NCF files are checked against each other; each
coercion and drop is logged with its count; a damaged cache is set aside and rebuilt; the run's
record holds a digest of its data. The reader cases run in-process (fast); the command-line
cases (one message, no traceback, the exit status) are in test_input_validation_cli.py."""

import codecs
import logging
import pathlib

import numpy as np
import pytest

from ncf_jax.config import ClickConfig, DataConfig
from ncf_jax.data import clicks, dataset, ncf_format, readers, side_info
from ncf_jax.data.digest import data_digest
from ncf_jax.errors import DataError, UsageError

NCF_TRAIN = "0\t1\t5\t10\n0\t3\t4\t11\n1\t0\t4\t10\n1\t2\t4\t11\n2\t0\t3\t12\n2\t1\t3\t13\n"
NCF_TEST = "0\t2\t5\t20\n1\t1\t3\t20\n2\t3\t4\t20\n"
NCF_NEGATIVES = "(0,2)\t0\n(1,1)\t3\n(2,3)\t2\n"


def write_ncf_files(folder, train=NCF_TRAIN, test=NCF_TEST, negatives=NCF_NEGATIVES, name="x"):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".train.rating", train), (".test.rating", test),
                         (".test.negative", negatives)):  # fmt: skip
        (folder / f"{name}{suffix}").write_text(text)
    return {r: folder / f"{name}{s}" for r, s in ncf_format.SUFFIXES.items()}


def _messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def _refused(call, path, line, match):
    with pytest.raises(DataError, match=match) as info:
        call()
    assert (info.value.path, info.value.line) == (str(path), line), str(info.value)


def _csv(path, **columns):
    cols = dict(user_col="u", item_col="i", rating_col="r", timestamp_col=None) | columns
    return lambda: readers.read_csv_interactions(path, **cols)


# ----------------------------------------------------------------------------- refused, FILE:LINE
@pytest.mark.parametrize(
    "name, content, line, match",
    [
        # MovieLens: what the format holds (ratings 0.5..5, ids and times >= 0, int64 at most).
        ("u.data", "1\t2\t4\t5\n1\t3\t-1\t5\n", 2, "u.data:2: -1: rating outside 0.5..5 *$"),
        ("u.data", "1\t2\t4\t5\n1\t3\t6\t5\n", 2, "rating outside 0.5..5"),
        ("u.data", "1\t2\t4\t5\n-3\t3\t4\t5\n", 2, "-3: user below 0$"),
        ("u.data", "1\t2\t4\t5\n1\t3\t4\t-5\n", 2, "-5: timestamp below 0$"),
        ("u.data", "1\t2\t4\t5\n99999999999999999999\t3\t4\t5\n", 2, "does not fit a 64-bit"),
        ("ratings.dat", "1::2::4::5\n1::2.5::4::5\n", 2, "'item'.*'2.5' is not an integer"),
        ("u.data", "1\t2\t4\t5\n1\t\xff\t4\t5\n".encode("latin-1"), 2, "not valid utf-8"),
        ("u.data", "1\t2\t4\t5\n".encode("utf-16"), 1, "UTF-16 or UTF-32 text"),
        # Side information: codes the release defines.
        ("u.user", "1|24|M|technician|85711\n2|53|X|other|94043\n", 2, "'X': gender is not"),
        ("u.user", "1|24|M|technician|85711\n2|-4|F|other|94043\n", 2, "age is not 0..150"),
        ("users.dat", "1::F::1::10::48067\n2::M::17::16::70072\n", 2, "17: age is not one of"),
        ("u.item", "1|A|01-Jan-1995||u|" + "|".join("0" * 18 + "2") + "\n", 1, "genre flag"),
    ],
)
def test_readers_refuse_what_the_format_cannot_hold(tmp_path, name, content, line, match):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    read = readers.read_movielens_ratings if "rating" in name or name == "u.data" else (
        side_info.read_side_table)  # fmt: skip
    _refused(lambda: read(path), path, line, match)


@pytest.mark.parametrize(
    "text, columns, line, match",
    [
        ("u,i,r,u\n1,2,3,4\n", {}, 1, r"\['u'\] appear twice in the header"),
        ("u,i,r\n", {}, 1, "no data lines after the header"),
        ("u,i,r,t\n1,2,3,4\n1,2,3,99999999999999999999\n", {"timestamp_col": "t"}, 3, "64-bit"),
        ("u,i,r\n1,2,3\n1,2,\n", {}, 3, "'r'.*not a finite number"),
    ],
)
def test_csv_reader_refuses_bad_structure_and_values(tmp_path, text, columns, line, match):
    path = tmp_path / "x.csv"
    path.write_text(text)
    _refused(_csv(path, **columns), path, line, match)


def test_unreadable_and_folder_paths_are_data_errors(tmp_path, monkeypatch):
    _refused(lambda: readers.read_bytes(tmp_path), tmp_path, None, "is a folder, not a file")
    path = tmp_path / "u.data"
    path.write_text("1\t2\t4\t5\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    _refused(lambda: readers.read_bytes(path), path, None, r"cannot be read \(Permission denied")


def test_click_log_with_a_ragged_line_names_it(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,label,ts\n1,2,1,0\n1,3,0,5,extra\n")
    data = DataConfig(dataset=f"csv:{path}", csv_timestamp_col="ts")
    _refused(lambda: clicks.read_click_csv(path, data, ClickConfig()), path, 3, "expected 4")


@pytest.mark.parametrize(
    "role, text, line, match",
    [
        # A test pair that is also a training pair: leakage, refused at the training line.
        ("train", NCF_TRAIN + "1\t1\t5\t9\n", 7, r"\(1, 1\) is also the test pair of .*:2"),
        ("train", NCF_TRAIN + "2147483648\t1\t5\t9\n", 7, "user id above 2\\^31 - 1"),
        ("test", "0\t2\t5\t20\n1\t1\t3\t20\n2\t-3\t4\t20\n", 3, "negative item id"),
        ("negatives", "(0,2)\t0\n(1,1)\t3\n(2,3)\t9\n", 3, "unknown item 9"),
    ],
)
def test_ncf_reader_refuses(tmp_path, role, text, line, match):
    paths = write_ncf_files(tmp_path, **{role: text})
    _refused(lambda: ncf_format.read_ncf(paths), paths[role], line, match)


# ------------------------------------------------------------------- accepted, logged with counts
def test_ncf_findings_are_logged_with_counts_and_first_lines(tmp_path, caplog):
    """Repeated training rows dropped; a known positive, a repeat and the own item masked
    among the negatives; test users / items without training pairs kept."""
    train = NCF_TRAIN + "0\t1\t5\t30\n0\t1\t5\t31\n"  # (0, 1) three times: two repeats
    test = NCF_TEST + "3\t4\t1\t20\n"  # user 3 and item 4 occur in no training line
    negatives = "(0,2)\t0\t0\t2\n(1,1)\t3\t2\t3\n(2,3)\t2\t0\t1\n(3,4)\t0\t1\t2\n"
    paths = write_ncf_files(tmp_path, train=train, test=test, negatives=negatives)
    with caplog.at_level(logging.INFO):
        data = dataset.load_dataset(DataConfig(dataset="ncf:x", data_dir=str(tmp_path)))
    log = _messages(caplog)
    assert "2 repeated (user, item) training lines, dropped" in log
    assert f"(first at {paths['train']}:7)" in log
    assert len(data.train_users) == 6 and data.train_timestamps[0] == 31  # the latest kept
    # Line 2: user 1 knows items 0, 2 (train) and 1 (test): 2 is masked; the second 3 repeats.
    # Line 3: user 2 knows 0, 1 (train): both masked. Line 1: 0 repeats, 2 is its own item.
    assert data.test_negatives_mask.tolist() == [
        [True, False, False], [True, False, False], [True, False, False], [True, True, True]
    ]  # fmt: skip
    assert "2 lines list an item the user is known to like (3 such negatives" in log
    assert "2 lines repeat a negative (2 repeats, masked" in log
    assert f"{paths['negatives']}: 1 test pairs have their own item" in log
    assert "1 test pairs whose user has no training pair, kept" in log
    assert "1 test pairs whose item has no training pair, kept" in log
    assert f"(first at {paths['test']}:4)" in log


def test_integer_fields_written_oddly_are_counted(tmp_path, caplog):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t4\t5\n1.0\t3\t4\t5\n2\t 3\t4\t5\n2\t4\t4.5\t6\n")
    with caplog.at_level(logging.INFO):
        table = readers.read_movielens_ratings(path)
    assert table["user"].tolist() == [1, 1, 2, 2] and table["item"].tolist() == [2, 3, 3, 4]
    assert f"{path}: 2 lines hold an integer written as" in _messages(caplog)
    assert f"(first at {path}:2)" in _messages(caplog)  # the half star of line 4 is a rating


def test_csv_ids_and_ratings_coercions_are_counted(tmp_path, caplog):
    path = tmp_path / "x.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"u,i,r\n1, 7,3\n2,7 ,-1\n 1,8,2\n2,9,-2\n")
    with caplog.at_level(logging.INFO):
        table = _csv(path)()
    log = _messages(caplog)
    assert table["user"].tolist() == [1, 2, 1, 2] and table["item"].tolist() == [7, 7, 8, 9]
    assert f"{path}: skipped a UTF-8 byte-order mark" in log
    assert f"{path}: 1 user ids with surrounding whitespace, stripped (first at {path}:4)" in log
    assert f"{path}: 2 item ids with surrounding whitespace, stripped (first at {path}:2)" in log
    assert f"{path}: 2 rows rated below 0, kept" in log and f"(first at {path}:3)" in log
    path.write_text("u,i,r\n1,7,3\n1.0,8,3\nb,8,3\n")
    with caplog.at_level(logging.INFO):
        table = _csv(path)()
    assert table["user"].tolist() == ["1", "1.0", "b"]
    assert "1 user ids are numbers not written as plain integers" in _messages(caplog)
    assert f"(first at {path}:3)" in _messages(caplog)


# ------------------------------------------------------------------------------ options, cache
@pytest.mark.parametrize(
    "options, match",
    [
        ({"dataset": "ncf:x", "split": "temporal"}, "--split=temporal cannot apply"),
        ({"dataset": "ncf:x", "rating_threshold": 4.0}, "--rating_threshold=4.0 cannot apply"),
        ({"dataset": "ncf:x", "min_user_interactions": 5}, "--min_user_interactions=5"),
        ({"dataset": "ncf:x", "num_test_negatives": 50}, "--num_test_negatives=50"),
        ({"dataset": "netflix-probe", "split": "random"}, "probe.txt is the test split"),
        ({"dataset": "ml-100k", "csv_sep": ";"}, "--csv_sep=; cannot apply"),
        ({"dataset": "csv:x.csv", "csv_sep": "ab"}, "--csv_sep must be one character"),
        ({"dataset": "csv:x.csv", "csv_item_col": "user"}, r"column\(s\) \['user'\] twice"),
    ],
)
def test_options_a_dataset_cannot_apply_are_usage_errors(options, match):
    with pytest.raises(UsageError, match=match):
        DataConfig(**options)


def test_split_and_click_options_that_would_be_ignored_are_usage_errors(tmp_path):
    cfg = DataConfig(dataset="ml-100k", data_dir=str(tmp_path), test_fraction=0.1)
    with pytest.raises(UsageError, match="--test_fraction=0.1 cannot apply to --split=loo"):
        dataset.load_dataset(cfg)
    with pytest.raises(UsageError, match="--split cannot apply to the click task: use --click"):
        clicks.load_clicks(DataConfig(split="random"), ClickConfig())
    DataConfig(dataset="ncf:x", validation=True, num_test_negatives=50)  # validation uses it


def test_damaged_cache_is_named_set_aside_and_rebuilt(tmp_path, caplog):
    write_ncf_files(tmp_path)
    cfg = DataConfig(dataset="ncf:x", data_dir=str(tmp_path))
    first = dataset.load_dataset(cfg)
    (cache,) = dataset.default_data_dir().glob("processed/*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        again = dataset.load_dataset(cfg)
    assert f"damaged cache {cache} (BadZipFile" in _messages(caplog)
    assert f"moved to {cache}.damaged; rebuilding it" in _messages(caplog)
    assert cache.with_name(cache.name + ".damaged").exists() and cache.exists()
    assert data_digest(again) == data_digest(first) == data_digest(dataset.load_dataset(cfg))


def test_digest_identifies_the_prepared_arrays(tmp_path):
    write_ncf_files(tmp_path)
    data = dataset.load_dataset(DataConfig(dataset="ncf:x", data_dir=str(tmp_path)))
    other = write_ncf_files(tmp_path / "b", negatives="(0,2)\t3\n(1,1)\t3\n(2,3)\t2\n")
    changed = dataset.load_dataset(DataConfig(dataset="ncf:x", data_dir=str(other["train"].parent)))
    assert data_digest(data) != data_digest(changed)
    np.testing.assert_array_equal(data.train_items, changed.train_items)

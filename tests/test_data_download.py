"""Downloads from local file:// archives (no network), checksums, offline errors, registry docs."""

import dataclasses
import hashlib
import pathlib
import re
import urllib.error
import urllib.request
import zipfile

import pytest

from ncf_jax.config import DataConfig
from ncf_jax.data import dataset, download

REPO = pathlib.Path(__file__).resolve().parents[1]
U_DATA = "1\t10\t4\t100\n1\t11\t3\t101\n2\t10\t5\t102\n2\t12\t5\t103\n"


def _zip(path, top, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(f"{top}/{name}", text)
    return path


def _local_source(tmp_path, name="ml-100k", top="ml-100k", sha="auto"):
    archive = _zip(tmp_path / "remote" / f"{name}.zip", top, {"u.data": U_DATA, "u.item": ""})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest() if sha == "auto" else sha
    remote = download.Remote(archive.as_uri(), digest)
    return dataclasses.replace(download.SOURCES[name], remotes=(remote,), archive_dir=top)


def _offline(url):
    raise urllib.error.URLError("no network")


@pytest.fixture(autouse=True)
def _remote_dir(tmp_path):
    (tmp_path / "remote").mkdir()


def test_download_verify_unpack(tmp_path):
    source = _local_source(tmp_path)
    root = tmp_path / "data"
    paths = download.ensure_files(source, root)
    assert paths["ratings"] == root / "ml-100k" / "u.data"
    assert paths["ratings"].read_text() == U_DATA
    assert (root / "ml-100k.zip").is_file()
    # Present now: a second call must not download again.
    assert download.ensure_files(source, root, opener=_offline) == paths


def test_ml10m_archive_folder_is_renamed(tmp_path):
    source = _local_source(tmp_path, name="ml-10m", top="ml-10M100K")
    source = dataclasses.replace(source, files={"ratings": "u.data"})
    paths = download.ensure_files(source, tmp_path / "data")
    assert paths["ratings"] == tmp_path / "data" / "ml-10m" / "u.data"


def test_offline_error_names_url_and_path(tmp_path):
    cfg = DataConfig(dataset="ml-1m", data_dir=str(tmp_path), cache=False)
    with pytest.raises(download.DownloadError) as info:
        dataset.load_dataset(cfg, opener=_offline)
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert f"place it at {tmp_path / 'ml-1m.zip'}" in message
    assert not list(tmp_path.glob("*.part"))


def test_checksum_mismatch_via_redirected_url(tmp_path):
    archive = _zip(tmp_path / "remote" / "fake.zip", "ml-100k", {"u.data": U_DATA})
    opener = lambda url: urllib.request.urlopen(archive.as_uri())  # noqa: E731
    cfg = DataConfig(dataset="ml-100k", data_dir=str(tmp_path / "data"), cache=False)
    with pytest.raises(download.DownloadError, match="SHA-256 mismatch") as info:
        dataset.load_dataset(cfg, opener=opener)
    assert str(tmp_path / "data" / "ml-100k.zip") in str(info.value)
    assert download.SOURCES["ml-100k"].remotes[0].sha256 in str(info.value)


def test_missing_checksum_warns_and_records(tmp_path, caplog):
    source = _local_source(tmp_path, sha=None)
    with caplog.at_level("WARNING"):
        download.ensure_files(source, tmp_path / "data")
    digest = hashlib.sha256((tmp_path / "remote" / "ml-100k.zip").read_bytes()).hexdigest()
    assert any(digest in r.getMessage() for r in caplog.records)
    assert (tmp_path / "data" / "ml-100k.zip.sha256").read_text().startswith(digest)


def test_archive_placed_by_hand_is_verified_not_downloaded(tmp_path):
    source = _local_source(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "ml-100k.zip").write_bytes((tmp_path / "remote" / "ml-100k.zip").read_bytes())
    assert download.ensure_files(source, root, opener=_offline)["ratings"].is_file()


def test_ncf_files_download(tmp_path):
    remotes = []
    for suffix, text in (
        (".train.rating", "0\t1\t5\t9\n"),
        (".test.rating", "0\t0\t5\t9\n"),
        (".test.negative", "(0,0)\t2\n"),
    ):
        path = tmp_path / "remote" / f"tiny{suffix}"
        path.write_text(text)
        remotes.append(download.Remote(path.as_uri(), None))
    source = dataclasses.replace(download.source_for("ncf:tiny"), remotes=tuple(remotes))
    paths = download.ensure_files(source, tmp_path / "data")
    assert paths["negatives"].read_text() == "(0,0)\t2\n"


def test_zip_member_escaping_the_folder_is_refused(tmp_path):
    archive = _zip(tmp_path / "remote" / "evil.zip", "ml-100k", {"../../evil": "x"})
    with pytest.raises(download.DownloadError, match="escape"):
        download.unpack(archive, "ml-100k", tmp_path / "data" / "ml-100k")


def _documented():
    """(dataset, url, sha256 or None, archive folder or None) rows of third_party/*.md."""
    rows = set()
    for doc in sorted((REPO / "third_party").glob("*.md")):
        for line in doc.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[1].startswith("https://"):
                sha = None if cells[2] == "none found" else cells[2]
                rows.add((doc.name, cells[0], cells[1], sha, None if cells[3] == "-" else cells[3]))
    return rows


def test_registry_agrees_with_third_party_docs():
    registered = {
        (pathlib.Path(s.doc).name, s.name, r.url, r.sha256, s.archive_dir)
        for s in download.SOURCES.values()
        for r in s.remotes
    }
    assert registered == _documented()
    for _, _, _, sha, _ in registered:
        assert sha is None or re.fullmatch(r"[0-9a-f]{64}", sha)

"""Stage: raw file. The registry of dataset sources, and download + checksum + unpack.

`SOURCES` is the one place that says where each dataset comes from (address, SHA-256, archive
layout, file names); `third_party/<doc>.md` describes the same sources for people, and a test
checks that the two agree. A SHA-256 is recorded only where a public source published it (see
the .md files); where none was found, `sha256` is None and a download logs the computed hash
and writes it beside the file, so the user can pin it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import urllib.error
import urllib.request
import uuid
import zipfile

from absl import logging

from ncf_jax.errors import DataError, DownloadError, UsageError

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_NCF = "https://raw.githubusercontent.com/hexiangnan/neural_collaborative_filtering/master/Data/"


@dataclasses.dataclass(frozen=True)
class Remote:
    """One downloadable file: a zip archive (MovieLens) or a plain file (NCF authors' data)."""

    url: str
    sha256: str | None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's files live under DATA_DIR and where they come from.

    folder: sub-folder of DATA_DIR holding the files ("" for the NCF files, kept flat).
    files: role -> file name; roles "ratings", "users", "items" (MovieLens) or "train",
      "test", "negatives" (NCF format).
    required: the roles that must exist (side information is optional).
    remotes: what to download when the required files are missing.
    archive_dir: the top folder inside the zip (ml-10m unpacks to "ml-10M100K"); its files are
      moved to `folder`. A by-hand unpack into DATA_DIR/<archive_dir> is found as well.
    doc: the third_party/*.md file describing the source.
    """

    name: str
    folder: str
    files: dict[str, str]
    required: tuple[str, ...]
    remotes: tuple[Remote, ...] = ()
    archive_dir: str | None = None
    doc: str = ""


def _movielens(name, sha256, files, archive_dir=None) -> Source:
    roles = dict(zip(("ratings", "items", "users"), files, strict=False))
    remote = Remote(f"{_GROUPLENS}{name}.zip", sha256)
    doc = "third_party/movielens.md"
    return Source(name, name, roles, ("ratings",), (remote,), archive_dir or name, doc)


def _ncf(name) -> Source:
    files = {r: f"{name}.{ext}" for r, ext in _NCF_FILES.items()}
    remotes = tuple(Remote(_NCF + f, None) for f in files.values())
    return Source(f"ncf:{name}", "", files, tuple(files), remotes, None, "third_party/ncf.md")


_NCF_FILES = {"train": "train.rating", "test": "test.rating", "negatives": "test.negative"}
_CSV = ("ratings.csv", "movies.csv")
# SHA-256 of the MovieLens archives: tensorflow/datasets, url_checksums/movielens.txt.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        _movielens(
            "ml-100k",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            ("u.data", "u.item", "u.user"),
        ),
        _movielens(
            "ml-1m",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            ("ratings.dat", "movies.dat", "users.dat"),
        ),
        _movielens("ml-10m", None, ("ratings.dat", "movies.dat"), "ml-10M100K"),
        _movielens(
            "ml-20m", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", _CSV
        ),
        _movielens(
            "ml-25m", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa", _CSV
        ),
        _movielens("ml-latest", None, _CSV),
        _movielens(
            "ml-latest-small",
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            _CSV,
        ),
        _ncf("ml-1m"),
        _ncf("pinterest-20"),
    )
}


def source_for(dataset: str) -> Source:
    """The registered source; an unregistered "ncf:<name>" is a local-only NCF dataset."""
    if dataset in SOURCES:
        return SOURCES[dataset]
    if dataset.startswith("ncf:") and len(dataset) > 4:
        name = dataset[4:]
        files = {r: f"{name}.{ext}" for r, ext in _NCF_FILES.items()}
        return Source(dataset, "", files, tuple(files))
    known = sorted(SOURCES)
    raise UsageError(f"unknown dataset {dataset!r}: use one of {known}, ncf:<name> or csv:<path>")


def locate(source: Source, root) -> dict[str, pathlib.Path]:
    """Paths of the source's files under `root`, from the folder holding the required file."""
    root = pathlib.Path(root)
    folders = [root / source.folder]
    if source.archive_dir and source.archive_dir != source.folder:
        folders.append(root / source.archive_dir)
    required = source.files[source.required[0]]
    folder = next((f for f in folders if (f / required).is_file()), folders[0])
    return {role: folder / name for role, name in source.files.items()}


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: Remote, dest, *, opener=urllib.request.urlopen) -> pathlib.Path:
    """Download `remote` to `dest` (via a .part file), unless a file is already there; verify."""
    dest = pathlib.Path(dest)
    by_hand = f"download it by hand from {remote.url} and place it at {dest}"
    if not dest.is_file():
        if os.environ.get("NCF_JAX_OFFLINE"):  # air-gapped machines: say what to fetch, at once
            raise DownloadError(f"{dest} is missing and NCF_JAX_OFFLINE is set: {by_hand}")
        logging.info("downloading %s to %s", remote.url, dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DownloadError(f"cannot write to {dest.parent} ({error}); {by_hand}") from None
        part = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.part")  # one per process
        try:
            with opener(remote.url) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as error:
            part.unlink(missing_ok=True)
            raise DownloadError(f"could not download {remote.url} ({error}); {by_hand}") from error
        os.replace(part, dest)
    digest = sha256_of(dest)
    if remote.sha256 is None:
        dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
        logging.warning(
            "no published SHA-256 for %s; computed %s (written to %s.sha256)",
            remote.url,
            digest,
            dest,
        )
    elif digest != remote.sha256:
        raise DownloadError(
            f"SHA-256 mismatch for {dest} (from {remote.url}): expected {remote.sha256}, "
            f"got {digest}. Delete it and retry, or {by_hand}"
        )
    return dest


def unpack(archive, top: str, target) -> None:
    """Extract the members under `top/` of a zip into `target`, refusing paths that escape."""
    target = pathlib.Path(target).resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(top + "/"):
                continue
            out = (target / name[len(top) + 1 :]).resolve()
            if not out.is_relative_to(target):
                raise DownloadError(f"{archive}: member {name!r} would escape {target}")
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_name(out.name + ".part")
            with zf.open(info) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(part, out)


def ensure_files(source: Source, root, *, opener=urllib.request.urlopen) -> dict[str, pathlib.Path]:
    """The source's file paths under `root`, downloading and unpacking them when missing."""
    root = pathlib.Path(root)
    absent = missing(source, root)
    if not absent:
        return locate(source, root)
    if not source.remotes:
        raise DataError(absent[0], f"file not found (no download known for {source.name})")
    for remote in source.remotes:
        dest = fetch(remote, root / remote.filename, opener=opener)
        if source.archive_dir:
            unpack(dest, source.archive_dir, root / source.folder)
    absent = missing(source, root)
    if absent:
        raise DataError(absent[0], "file not found after download and unpack")
    return locate(source, root)


def missing(source: Source, root) -> list[pathlib.Path]:
    """The source's required files that are not under `root`."""
    paths = locate(source, root)
    return [paths[role] for role in source.required if not paths[role].is_file()]

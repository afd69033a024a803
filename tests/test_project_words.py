"""The project speaks of itself: no tracked text file names the tracker's issue numbers, the
sittings that produced it, or the assistants that worked on it. History, with its dates and
revisions, belongs in CHANGELOG.md, told as what changed."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = re.compile(
    "|".join(
        [r"\biss" + r"ues?\b", r"(?<![\w&/])#\d+\b", r"\bsess" + r"ions?\b", r"\bhelp" + r"ers?\b"]
    ),
    re.IGNORECASE,
)
# pytest's own hook and object names are not about the project.
ALLOWED = ("pytest_" + "sessionfinish(session)", "sess" + "ion.config")


def _tracked_text_files() -> list[pathlib.Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    files = [ROOT / n for n in names.stdout.decode().split("\0") if n]
    return [f for f in files if f.is_file() and f != pathlib.Path(__file__).resolve()]


def found(text: str) -> list[str]:
    """The lines of `text` that use one of the words."""
    lines = []
    for line in text.splitlines():
        for allowed in ALLOWED:
            line = line.replace(allowed, "")
        if WORDS.search(line):
            lines.append(line.strip())
    return lines


def test_the_words_are_caught():
    bad = ["see iss" "ue 12", "(iss" "ue-3 targets)", "fixed in #14", "this sess" "ion's run",
           "one help" "er renamed"]  # fmt: skip
    assert [found(text) for text in bad] == [[text] for text in bad]
    fine = ["color #1f77b4", "pytest_sessionfinish(session)", "url/#12", "a tissue"]
    assert [found(text) for text in fine] == [[] for _ in fine]


def test_no_tracked_file_uses_them():
    hits = []
    for path in _tracked_text_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary: images, archives
        for line in found(data.decode("utf-8", errors="replace")):
            hits.append(f"{path.relative_to(ROOT)}: {line[:120]}")
    assert not hits, "\n".join(hits)

"""The results tables of README.md and docs/*.md are what `python -m experiments.tables` writes
from the committed results files: a table cannot disagree with its data."""

import re

from experiments import tables


def _blocks() -> list[tuple[str, str]]:
    return [(page.name, m.group(2)) for page in tables.pages()
            for m in tables.BLOCK.finditer(page.read_text())]  # fmt: skip


def test_committed_pages_equal_what_their_data_give():
    for page in tables.pages():
        text = page.read_text()
        assert tables.render(text) == text, f"{page.name}: run python -m experiments.tables"


def test_every_table_is_on_a_page_and_every_block_names_a_table():
    names = [name for _, name in _blocks()]
    assert set(names) == set(tables.TABLES)
    assert ("README.md", "ncf_ml100k") in _blocks()


def test_a_number_typed_into_a_table_is_caught():
    readme = next(p for p in tables.pages() if p.name == "README.md").read_text()
    block = re.search(r"<!-- table:ncf_ml100k -->\n.*?<!-- /table:ncf_ml100k -->", readme, re.S)
    edited = readme.replace(block.group(0), block.group(0).replace("0.", "0.9", 1))
    assert edited != readme and tables.render(edited) == readme


def test_spread_is_mean_std_and_range_over_seeds():
    assert tables._spread([0.5, 0.7]) == "0.600 ± 0.100 (0.500..0.700)"
    assert tables._spread([0.25]) == "0.250"

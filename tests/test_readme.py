"""README.md's op table is generated from the registry and must not go stale."""
from __future__ import annotations

import os

from tflq.support_table import with_table

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_op_table_is_current():
    with open(README) as f:
        text = f.read()
    assert with_table(text) == text, "README.md's op table is stale: run `make readme`"


def test_readme_shows_the_two_commands():
    with open(README) as f:
        text = f.read()
    assert "make demo" in text and "make test" in text

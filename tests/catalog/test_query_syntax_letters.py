"""A letter outside a-z in a filter is a clear usage error naming it, never a crash."""

from __future__ import annotations

import pytest

from medcycle.catalog.query_syntax import parse
from medcycle.errors import UsageError


@pytest.mark.parametrize("expr", ["modalité == \"CT\"", "source == \"a\" and ß > 1", "Ω"])
def test_non_ascii_names_are_refused_with_the_character(expr: str) -> None:
    with pytest.raises(UsageError, match="unexpected character") as info:
        parse(expr)
    assert "a-z" in (info.value.hint or "")

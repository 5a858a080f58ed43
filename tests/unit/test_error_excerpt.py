"""heap.error_excerpt masks the app_id that an error page may echo with the request body."""

from __future__ import annotations

import pytest

from heap_dbt import heap


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        pytest.param('bad body {"app_id": "8675309123457"}', "8675309123457",
                     'bad body {"app_id": "86*********57"}', id="echoed-body"),
        pytest.param("8675309123457 8675309123457", "8675309123457",
                     "86*********57 86*********57", id="twice"),
        pytest.param("no app_id here", "8675309123457", "no app_id here", id="absent"),
        pytest.param("kept as is: 8675309123457", None, "kept as is: 8675309123457", id="no-secret"),
    ],
)  # fmt: skip
def test_the_secret_is_masked(text: str, secret: str | None, expected: str) -> None:
    assert heap.error_excerpt(text, secret=secret) == expected


def test_masking_comes_before_the_cut() -> None:
    secret = "8675309123457"
    excerpt = heap.error_excerpt("x" * 290 + secret, limit=300, secret=secret)

    assert secret[:10] not in excerpt and len(excerpt) == 300

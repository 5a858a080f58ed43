"""check_url: https anywhere, plain http only to loopback, never credentials in the URL."""

from __future__ import annotations

import pytest

from heap_dbt.errors import ConfigError
from heap_dbt.urls import check_url


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://heapanalytics.com", id="https"),
        pytest.param("https://c.eu.heap-api.com/", id="https-eu"),
        pytest.param("HTTPS://Heap.example.com:8443", id="https-upper-case-port"),
        pytest.param("https://203.0.113.7", id="https-to-an-ip"),
        pytest.param("http://127.0.0.1:8765", id="http-127.0.0.1"),
        pytest.param("http://127.42.0.9", id="http-127/8"),
        pytest.param("http://[::1]:8765", id="http-ipv6-loopback"),
        pytest.param("http://localhost:8765", id="http-localhost"),
        pytest.param("http://LOCALHOST.", id="http-localhost-fqdn"),
    ],
)
def test_allowed_urls_are_returned_unchanged(url: str) -> None:
    assert check_url(url, what="HEAP_BASE_URL") == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("http://heapanalytics.com", "plain http to heapanalytics.com", id="http-to-heap"),
        pytest.param("http://10.0.0.5:8765", "plain http to 10.0.0.5", id="http-private-ip"),
        pytest.param("http://0.0.0.0:8765", "plain http to 0.0.0.0", id="http-any-address"),
        pytest.param("http://[::ffff:10.0.0.1]", "plain http to ::ffff:10.0.0.1", id="http-ipv6"),
        pytest.param("http://127.0.0.1.example.com", "plain http to 127.0.0.1.example.com", id="lookalike"),
        pytest.param("http://localhost.example.com", "plain http to localhost.example.com", id="lookalike-2"),
        pytest.param("heapanalytics.com", "is not an http(s) URL", id="no-scheme"),
        pytest.param("ftp://127.0.0.1", "is not an http(s) URL", id="ftp"),
        pytest.param("https://", "is not an http(s) URL", id="no-host"),
        pytest.param("http://[::1", "is not an http(s) URL", id="unparsable"),
        pytest.param("", "is not an http(s) URL", id="empty"),
    ],
)
def test_refused_urls_raise_a_config_error_that_says_what_to_do(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url, what="HEAP_BASE_URL")

    message = str(info.value)
    assert message.startswith("HEAP_BASE_URL ")
    assert says in message
    assert "https://" in message and "127.0.0.1" in message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://user:hunter2-secret@heap.example.com", id="user-and-password"),
        pytest.param("http://hunter2-secret@127.0.0.1:8765", id="user-only"),
    ],
)
def test_credentials_in_the_url_are_refused_and_never_repeated(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url, what="HEAP_BASE_URL")

    assert "user name or password" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_the_message_names_what_was_checked() -> None:
    with pytest.raises(ConfigError, match=r"^The dbt Cloud host is .*plain http"):
        check_url("http://cloud.getdbt.com", what="The dbt Cloud host")

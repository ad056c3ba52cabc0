"""The settings of issue 18: sender shares, connection caps, the minimum body rate and
the trusted proxies, read from the environment with one-line errors."""

from __future__ import annotations

import ipaddress

import pytest

from myticket.config import ConfigError, default_max_connections, load_settings


def test_the_defaults_and_values_are_read():
    assert load_settings({}).sender_share_percent == 25
    assert load_settings({}).max_connections is None
    settings = load_settings({
        "MYTICKET_SENDER_SHARE_PERCENT": "10", "MYTICKET_MAX_CONNECTIONS": "500",
        "MYTICKET_MAX_CONNECTIONS_PER_SENDER": "20", "MYTICKET_MIN_BODY_BYTES_PER_SECOND": "0",
        "MYTICKET_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
    })
    assert (settings.sender_share_percent, settings.max_connections, settings.max_connections_per_sender) == (10, 500, 20)
    assert settings.min_body_bytes_per_second == 0
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32"))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MYTICKET_SENDER_SHARE_PERCENT", "101", "MYTICKET_SENDER_SHARE_PERCENT: must be at most 100"),
        ("MYTICKET_SENDER_SHARE_PERCENT", "0", "MYTICKET_SENDER_SHARE_PERCENT: must be at least 1"),
        ("MYTICKET_MAX_CONNECTIONS", "0", "MYTICKET_MAX_CONNECTIONS: must be at least 1"),
        ("MYTICKET_TRUSTED_PROXIES", "10.0.0.0/8,nope", "MYTICKET_TRUSTED_PROXIES: 'nope' is not an address"),
        ("MYTICKET_TRUSTED_PROXIES", "", "MYTICKET_TRUSTED_PROXIES: is set but empty"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert str(raised.value).startswith(message)


def test_the_default_connection_cap_leaves_descriptors_for_everything_else():
    assert default_max_connections(20_000, 10) == 20_000 - 64 - 10
    assert default_max_connections(64, 10) == 16  # never none

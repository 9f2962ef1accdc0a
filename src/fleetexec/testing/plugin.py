"""pytest fixtures for fleetexec's mock fleet (registered as the ``fleetexec`` plugin).

Installed with fleetexec, so any test can ask for them by name:

    def test_uptime(mock_fleet):
        assert len(mock_fleet) == 3

    def test_one_bad_host(mock_fleet_factory):
        fleet = mock_fleet_factory([MockHost(), MockHost(fault=Fault.hang())])

paramiko and mockssh are imported only when a fixture is used, so the plugin
costs nothing in test runs that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .mockfleet import MockFleet

__all__ = ["mock_fleet", "mock_fleet_factory"]


@pytest.fixture
def mock_fleet() -> Iterator[MockFleet]:
    """A started 3-host `MockFleet` (host1..host3, built-in replies), stopped after the test.

        def test_hostname(mock_fleet):
            _, out, _ = mock_fleet.client("host1").exec_command("hostname")
            assert out.read() == b"host1\n"
    """
    from .mockfleet import MockFleet

    with MockFleet(3) as fleet:
        yield fleet


@pytest.fixture
def mock_fleet_factory() -> Iterator[Callable[..., MockFleet]]:
    """Make started fleets with `MockFleet`'s arguments; all are stopped after the test.

        def test_hang(mock_fleet_factory):
            fleet = mock_fleet_factory([MockHost(fault=Fault.hang())], default=Reply("ok"))
    """
    from .mockfleet import MockFleet

    fleets: list[MockFleet] = []

    def make(*args: Any, **kwargs: Any) -> MockFleet:
        fleet = MockFleet(*args, **kwargs)
        fleets.append(fleet)
        return fleet.start()

    yield make
    for fleet in reversed(fleets):
        fleet.stop()

"""Small gadgets used only by the chain tests (importable by in-process and external runs)."""

from typing import Any

import ismrmrd


def double_acquisitions(connection: Any) -> None:
    """Doubles every acquisition's data; a filter passes everything else through untouched."""
    connection.filter(ismrmrd.Acquisition)
    for acquisition in connection:
        acquisition.data[:] *= 2
        connection.send(acquisition)


def fail_on_third(connection: Any) -> None:
    """Raises on the third item."""
    for count, item in enumerate(connection, start=1):
        if count == 3:
            raise ValueError("third item rejected")
        connection.send(item)


def send_unserialisable(connection: Any) -> None:
    """Sends something that cannot cross a Gadgetron chain."""
    for _ in connection:
        connection.send({"not": "an ISMRMRD type"})


class CountingGadget:
    """A class target (gadgetron-python instantiates it and calls handle)."""

    def handle(self, connection: Any) -> None:
        for item in connection:
            connection.send(item)

"""What a gadget is: a `Gadget` descriptor per gadget module (its name, its frozen typed `Settings`,
`run(connection, settings, scan)` and an optional `preload`), registered by name in
adacsc.gadgets.registry.

A host (the chain runner, `adacsc external`) parses a node's properties into the settings, builds
the scan's adacsc.scan_context.ScanContext and calls `execute`; the gadget reads nothing else. For
a node that Gadgetron starts with `<execute name="adacsc.gadgets.X" target="X">`, the module's
function `X(connection)` is the host: it calls `gadgetron_entry`, which builds the context from
the node's environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from adacsc.core import cancel
from adacsc.gadgets.properties import Property, declarations, parse_settings, raw_properties
from adacsc.limits import ScanLimits
from adacsc.scan_context import ScanContext

S = TypeVar("S")


class Connection(Protocol):
    """What a gadget reads from and sends to: gadgetron-python's Connection, or the chain runner's
    adacsc.chain.runner.LocalConnection."""

    header: Any
    config: Any

    def __iter__(self) -> Iterator[Any]: ...

    def send(self, item: object) -> None: ...

    def filter(self, predicate: Any) -> None: ...


@dataclass(frozen=True)
class Gadget(Generic[S]):
    """One gadget: its name (also its `<execute>` target), typed settings, its work and its warm-up."""

    name: str
    settings: type[S]
    run: Callable[[Connection, S, ScanContext], None]
    """the gadget's work for one scan: items from `connection`, results sent on"""
    preload: Callable[[], None] | None = None
    """loads what the default settings need (a long-running server calls it once at start)"""

    @property
    def module(self) -> str:
        """The module that defines it (what a chain XML's `<execute name=...>` names)."""
        return self.run.__module__

    def properties(self) -> tuple[Property, ...]:
        """Its chain properties, in declaration order."""
        return declarations(self.settings)

    def parse(self, raw: Mapping[str, str], limits: ScanLimits | None = None) -> S:
        """Settings from raw property values (PropertyError naming the property); with `limits`,
        held to the operator's limits."""
        return parse_settings(self.settings, self.name, raw, limits)

    def execute(self, connection: Connection, scan: ScanContext) -> None:
        """Run one scan: the settings from the connection's configuration, the solver's loops
        stopped by the scan's stop test, the warnings logged on this thread relayed to the scan."""
        settings = self.parse(raw_properties(getattr(connection, "config", None)), scan.limits)
        cancel.bind(scan.stop)
        with scan.relaying_warnings():
            self.run(connection, settings, scan)

    def gadgetron_entry(self, connection: Connection) -> None:
        """Gadgetron's `<execute>` path: a scan under the limits of the node's environment."""
        self.execute(connection, ScanContext.from_environment())

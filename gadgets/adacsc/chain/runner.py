"""Running a chain's Python nodes in process: one thread per node, connected by queues, each node
seeing a Connection-like object with gadgetron-python's API (iteration, iter_with_mids, next,
send, filter, header, config, raw_bytes, add_reader/add_writer). In strict mode every item that
passes between nodes is serialised and read back with gadgetron-python's own writers and readers,
as a real chain with one process per `<external>` node would do.

The chain is the host of its gadgets: it runs each registered gadget (adacsc.gadgets.registry) with
its typed settings and the scan's adacsc.scan_context.ScanContext (limits, budget, stop test,
warnings), which its caller builds (the server's session) or the chain builds from the environment
(offline replay). A chain can be cancelled (`cancel`): every node's next read raises `Cancelled`, and
the scan's stop test says stop, so the solver stops at its next iteration. A node that is not a
registered gadget (an operator-allowed module) is called as Gadgetron would call it."""

import functools
import importlib
import inspect
import logging
import queue
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import ismrmrd
from gadgetron.external import constants
from gadgetron.types import ImageArray, ReconData

from adacsc.chain import wire
from adacsc.chain.config import ChainConfig, ChainError, Node, gadget_for
from adacsc.chain.timing import ChainObserver, SliceClock
from adacsc.core import cancel
from adacsc.gadgets import registry
from adacsc.io.header import parse_header
from adacsc.scan_context import ScanContext

log = logging.getLogger(__name__)

_CLOSE = object()
_MESSAGE_IDS: tuple[tuple[type, int], ...] = (
    (ismrmrd.Acquisition, constants.GADGET_MESSAGE_ISMRMRD_ACQUISITION),
    (ismrmrd.Waveform, constants.GADGET_MESSAGE_ISMRMRD_WAVEFORM),
    (ismrmrd.Image, constants.GADGET_MESSAGE_ISMRMRD_IMAGE),
    (ImageArray, constants.GADGET_MESSAGE_IMAGE_ARRAY),
    (ReconData, constants.GADGET_MESSAGE_RECON_DATA),
)


BULK_MESSAGES = frozenset({constants.GADGET_MESSAGE_ISMRMRD_IMAGE, constants.GADGET_MESSAGE_IMAGE_ARRAY,
                           constants.GADGET_MESSAGE_RECON_DATA})
"""buffers and images: large items, of which at most MAX_PENDING_BULK wait in front of a node"""
MAX_PENDING_BULK = 2


def message_id(item: object) -> int:
    """The Gadgetron message id of an item that can cross a chain; TypeError otherwise."""
    for kind, mid in _MESSAGE_IDS:
        if isinstance(item, kind):
            return mid
    raise TypeError(f"a {type(item).__name__} cannot cross a Gadgetron chain")


class _Raw:
    """The raw CONFIG and HEADER bytes, as gadgetron-python exposes them."""

    def __init__(self, config: bytes, header: bytes) -> None:
        self.config = config
        self.header = header


class LocalConnection:
    """What a gadget sees: the same API as gadgetron.external.Connection, backed by queues."""

    def __init__(self, config: ET.Element, header: Any, raw: _Raw, inbox: "queue.Queue[Any]",
                 forward: Callable[[object], None], cancelled: Callable[[], str | None] = lambda: None,
                 taken: Callable[[int], None] = lambda mid: None) -> None:
        self._taken = taken
        self.config = config
        self.header = header
        self.raw_bytes = raw
        self._inbox = inbox
        self._forward = forward
        self._cancelled = cancelled
        self.filters: list[Callable[[object], bool]] = []
        self.readers: dict[int, Any] = {}
        self.writers: list[Any] = []

    def __iter__(self) -> Iterator[object]:
        for _, item in self.iter_with_mids():
            yield item

    def __next__(self) -> tuple[int, object]:
        return self.next()

    def iter_with_mids(self) -> Iterator[tuple[int, object]]:
        """(message id, item) pairs until the stream closes."""
        while True:
            try:
                yield self.next()
            except StopIteration:
                return

    def next(self) -> tuple[int, object]:
        """The next item that passes the filters; others are sent on untouched. Raises
        Cancelled once the chain is cancelled."""
        while True:
            entry = self._inbox.get()
            reason = self._cancelled()
            if reason is not None:
                raise cancel.Cancelled(reason)
            if entry is _CLOSE:
                self._inbox.put(_CLOSE)
                raise StopIteration
            mid, item = entry
            self._taken(mid)
            if all(predicate(item) for predicate in self.filters):
                return mid, item
            self.send(item)

    def send(self, item: object) -> None:
        """Pass an item to the next node (or the chain's output)."""
        self._forward(item)

    def filter(self, predicate: type | Callable[[object], bool]) -> None:
        """Only items passing `predicate` (a type or a callable) are returned; others pass on."""
        if isinstance(predicate, type):
            self.filters.append(lambda item, kind=predicate: isinstance(item, kind))
        else:
            self.filters.append(predicate)

    def add_reader(self, mid: int, reader: Any, *args: Any, **kwargs: Any) -> None:
        """Accepted for API compatibility: in process, items need no reader."""
        self.readers[mid] = reader

    def add_writer(self, accepts: Any, writer: Any, *args: Any, **kwargs: Any) -> None:
        """Accepted for API compatibility: in process, items need no writer."""
        self.writers.insert(0, (accepts, writer))


NodeRun = Callable[[Any, ScanContext], None]
"""what a node runs: a scan's work on its connection"""


def load_target(node: Node) -> NodeRun:
    """What a node runs: a registered gadget (adacsc.chain.config.gadget_for) with the scan's
    context, any other module's target as gadgetron-python calls it (a class gets .handle)."""
    if registry.by_module(node.module) is not None:
        return gadget_for(node).execute
    try:
        module = importlib.import_module(node.module)
    except ImportError as err:
        raise ChainError(f"cannot import gadget module {node.module!r}: {err}") from err
    target = getattr(module, node.target, None)
    if inspect.isclass(target):
        return lambda connection, scan: _foreign(lambda: target().handle(connection), scan)
    if callable(target):
        return lambda connection, scan: _foreign(lambda: target(connection), scan)
    raise ChainError(f"module {node.module!r} has no callable target {node.target!r}")


def _foreign(call: Callable[[], None], scan: ScanContext) -> None:
    """A module that is not a registered gadget: its solver loops, if any, stop with the scan and
    the warnings logged on its thread reach the scan."""
    cancel.bind(scan.stop)
    with scan.relaying_warnings():
        call()


def _node_configuration(node: Node) -> ET.Element:
    """A node's configuration as its gadget reads it; ChainError when it does not survive the
    round trip through XML (e.g. a property value with a NUL character)."""
    try:
        return ET.fromstring(node.configuration_bytes())
    except ET.ParseError as err:
        raise ChainError(f"the configuration of node {node.target} is not valid XML ({err}): a property value "
                         "holds a character XML cannot carry") from err


class NodeFailure(RuntimeError):
    """A node raised: names the node and the cause."""


class Chain:
    """A running chain: `push` items in, results arrive at `on_output`, `close` waits for the end."""

    def __init__(self, chain: ChainConfig, header: bytes, on_output: Callable[[object], None],
                 strict: bool = True, scan: ScanContext | None = None, observer: ChainObserver | None = None) -> None:
        self.chain = chain
        self.strict = strict
        self._on_output = on_output
        self._parsed_header = parse_header(header)
        self._queues = [queue.Queue() for _ in chain.nodes]
        self._threads: list[threading.Thread] = []
        self._errors: list[tuple[Node, BaseException]] = []
        self._targets = [load_target(node) for node in chain.nodes]
        self._configs = [_node_configuration(node) for node in chain.nodes]
        self._header = header
        self._cancel_reason: str | None = None
        self._cancel_event = threading.Event()
        given = scan if scan is not None else ScanContext.from_environment()
        self.scan = given.or_stop_when(self._cancel_event.is_set)
        """the scan's context as the gadgets get it: the caller's, stopped by `cancel` too"""
        self._bulk = [0 for _ in chain.nodes]
        self._ended = [False for _ in chain.nodes]
        self._room = threading.Condition()
        self.items_in = 0
        self.items_out = 0
        self._clocks: list[SliceClock] = []
        self._slice_clock: SliceClock | None = None
        if observer is not None:  # per-slice latencies of each node and of the whole chain (chain.timing)
            self._clocks = [SliceClock(functools.partial(observer.stage_latency, node.target)) for node in chain.nodes]
            self._slice_clock = SliceClock(observer.slice_latency)

    def _hop(self, item: object) -> tuple[int, object]:
        return wire.round_trip(item) if self.strict else (message_id(item), item)

    def _forwarder(self, index: int) -> Callable[[object], None]:
        def forward(item: object) -> None:
            if self._cancel_event.is_set():
                return
            if self._clocks:
                self._clocks[index].left(item)
                if index + 1 < len(self._clocks):
                    self._clocks[index + 1].entered(item)
                else:
                    self._slice_clock.left(item)
            if index + 1 < len(self._queues):
                entry = self._hop(item)
                if entry[0] in BULK_MESSAGES:
                    self._wait_for_room(index + 1)
                self._queues[index + 1].put(entry)
            else:
                self.items_out += 1
                self._on_output(item)
        return forward

    def _wait_for_room(self, index: int) -> None:
        """Block the sending node while node `index` has MAX_PENDING_BULK buffers or images
        waiting (back-pressure: a fast node cannot pile up memory in front of a slow one)."""
        with self._room:
            while (self._bulk[index] >= MAX_PENDING_BULK and not self._cancel_event.is_set()
                   and not self._ended[index]):
                self._room.wait(0.1)
            self._bulk[index] += 1

    def _taken(self, index: int) -> Callable[[int], None]:
        def taken(mid: int) -> None:
            if mid in BULK_MESSAGES:
                with self._room:
                    self._bulk[index] = max(0, self._bulk[index] - 1)
                    self._room.notify_all()
        return taken

    def _run(self, index: int) -> None:
        node = self.chain.nodes[index]
        started = time.perf_counter()
        try:
            connection = LocalConnection(
                self._configs[index], self._parsed_header, _Raw(node.configuration_bytes(), self._header),
                self._queues[index], self._forwarder(index), lambda: self._cancel_reason, self._taken(index))
            self._targets[index](connection, self.scan)
        except cancel.Cancelled as err:
            log.info("node %s stopped: %s", node.target, err)
        except BaseException as err:  # close() raises it (its caller reports it, once)
            log.debug("node %s.%s failed: %s", node.module, node.target, err)
            self._errors.append((node, err))
        finally:
            with self._room:  # nobody waits for room in front of a node that has stopped
                self._ended[index] = True
                self._room.notify_all()
            leftover = sum(1 for entry in list(self._queues[index].queue) if entry is not _CLOSE)
            if leftover and not self._cancel_event.is_set():
                log.warning("node %s stopped with %d unread items", node.target, leftover)
            if index + 1 < len(self._queues):
                self._queues[index + 1].put(_CLOSE)
            log.debug("node %s finished after %.3f s", node.target, time.perf_counter() - started)

    def start(self) -> "Chain":
        """Start one thread per node."""
        for index, node in enumerate(self.chain.nodes):
            thread = threading.Thread(target=self._run, args=(index,), name=f"adacsc-{node.target}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def push(self, item: object) -> None:
        """Feed one item (acquisition, waveform, image) from the client into the first node."""
        self.items_in += 1
        if self._clocks:
            self._clocks[0].entered(item)
            self._slice_clock.entered(item)
        self._queues[0].put(self._hop(item))

    def close(self) -> None:
        """End of input: wait for every node; raises Cancelled if the chain was cancelled, else
        NodeFailure if any node failed."""
        self._queues[0].put(_CLOSE)
        for thread in self._threads:
            thread.join()
        if self._cancel_reason is not None:
            raise cancel.Cancelled(self._cancel_reason)
        if self._errors:
            node, err = self._errors[0]
            raise NodeFailure(f"gadget {node.target} ({node.module}) failed: {err}") from err

    def cancel(self, reason: str) -> None:
        """Stop the chain: nodes stop at their next read or solver iteration, outputs are dropped."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._cancel_event.set()
        with self._room:
            self._room.notify_all()
        for inbox in self._queues:
            inbox.put(_CLOSE)  # wakes nodes waiting for input

    @property
    def pending(self) -> int:
        """Items waiting in front of the first node (for back-pressure)."""
        return self._queues[0].qsize()

    @property
    def failed(self) -> bool:
        """Whether a node has failed so far."""
        return bool(self._errors)

"""What every session of a server shares: timeouts, limits, bounds, folders."""

from dataclasses import dataclass, field, replace
from pathlib import Path

from adacsc.chain.timing import ChainObserver
from adacsc.limits import ScanLimits
from adacsc.server import protocol as proto

GiB = 1 << 30


@dataclass(frozen=True)
class SessionSettings:
    """What every session of a server shares."""

    config_dirs: tuple[Path, ...]
    trusted_modules: frozenset[str] = frozenset()
    """modules a client-sent chain XML (CONFIG_TEXT) may run, besides adacsc.gadgets.*"""
    strict: bool = False
    """round-trip every hop through gadgetron-python's serialisers (slower; see Chain)"""
    io_timeout_s: float = 300.0
    """a client silent this long mid-scan is dropped"""
    message_timeout_s: float = 10.0
    """a message must arrive within this long of its first byte, plus 1 s per MiB of its size"""
    write_stall_s: float = 20.0
    """a client that accepts none of its results for this long is dropped (its scan is cancelled)"""
    scan_timeout_s: float = 1800.0
    """the deadline of one scan, from connection to CLOSE; past it the scan is cancelled"""
    probe_s: float = 10.0
    """while the chain computes after the input ended, a progress TEXT is sent after this long
    without output: a client that is gone answers it with a reset, and its scan is cancelled"""
    outbox_bytes: int = 64 * proto.MiB
    limits: proto.Limits = proto.Limits()
    max_scan_bytes: int = 16 * GiB
    """the scan's budget: bytes received plus buffers allocated by the gadgets"""
    scan_limits: ScanLimits = field(default_factory=ScanLimits.from_environment)
    """the operator's limits on a scan's header and compute (`adacsc serve` options; its budget:
    `max_scan_bytes`)"""
    error_format: str = "text"
    """"text": TEXT "ERROR: ..." (Gadgetron's server); "error": ERROR (id 8, uint64 length)"""
    max_queued_items: int = 4096
    """readouts waiting in front of the first gadget before reading pauses (back-pressure)"""
    socket_send_buffer: int | None = None
    """SO_SNDBUF for session sockets (None: the system default)"""
    observer: ChainObserver | None = None
    """told each stage's and each slice's latency (the server's metrics)"""

    def operator_limits(self) -> ScanLimits:
        """The operator's limits for one scan, with the session's budget."""
        return replace(self.scan_limits, max_scan_bytes=self.max_scan_bytes)

    def trusts(self, module: str) -> bool:
        """Whether a client-sent chain may name `module`."""
        return module in self.trusted_modules or module.startswith("adacsc.gadgets.")

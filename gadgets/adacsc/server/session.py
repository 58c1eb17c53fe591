"""One connection = one scan: config, header, optional JSON parameters, data into a running chain,
images back as soon as the chain produces them, then CLOSE.

`Session` joins three parts: the `RequestBuilder` (adacsc.server.request: what the messages ask
for, and the rules they must follow), the `SessionIO` (adacsc.server.session_io: the sockets, the
writer thread, the outbox, the watchdog) and the chain.

Bounds: the header's matrix and coils are checked against the operator limits when it arrives;
the bytes received and the buffers the gadgets allocate are charged to one budget
(`max_scan_bytes`); each scan has a deadline (`scan_timeout_s`). A scan past its deadline, whose
client is gone or whose server is aborting is cancelled: the chain stops at the next item or
solver iteration and the client, where reachable, is told why.

Failure policy: whatever goes wrong in a session (bad input, a failing gadget, a lost client) ends
that session only. Where the socket still works, the client gets an error report and CLOSE. When
the client stops sending early (CLOSE, half-close or a disconnect), the data received so far still
run through the chain and every slice it completes is sent back.
"""

import logging
import socket
import threading
import time
from typing import Any

import ismrmrd

from adacsc.chain.config import ChainError
from adacsc.chain.runner import Chain, NodeFailure
from adacsc.core.cancel import Cancelled
from adacsc.io.header import HeaderError
from adacsc.limits import LimitError, ScanBudget
from adacsc.scan_context import ScanContext
from adacsc.server import protocol as proto
from adacsc.server.opening import Opening
from adacsc.server.request import Action, Phase, RequestBuilder, RequestRefused, config_name_warning, resolve_chain
from adacsc.server.session_io import InputEnded, InputFailed, SessionIO
from adacsc.server.session_report import SessionReport, log_accounting, log_summary
from adacsc.server.session_settings import SessionSettings

__all__ = ["Session", "SessionReport", "SessionSettings"]

log = logging.getLogger(__name__)

THROTTLE_EVERY = 64
"""items pushed between two looks at the chain's queue (see `_throttle`)"""


class _Prefixed(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"{self.extra['prefix']}: {msg}", kwargs


class Session:
    """Serves one connection; `run()` returns when the scan is done and the socket closed."""

    def __init__(self, sock: socket.socket, peer: str, session_id: int, settings: SessionSettings,
                 opening: Opening | None = None) -> None:
        self.settings = settings
        self.report = SessionReport(session_id, peer)
        self.log = _Prefixed(log, {"prefix": f"session {session_id} ({peer})"})
        self._budget = ScanBudget(settings.max_scan_bytes)
        self._io = SessionIO(sock, opening, settings, self.report, self.log, self._budget.release)
        self._limits = settings.operator_limits()
        self._request = RequestBuilder(self._limits, lambda name: config_name_warning(name, settings.config_dirs),
                                       self._io.answered, self.log)
        self._chain: Chain | None = None
        self._cancelled: str | None = None
        self._lock = threading.Lock()

    @property
    def budget_used(self) -> int:
        """Bytes of the scan budget in use (received plus allocated)."""
        return self._budget.used

    def cancel(self, reason: str) -> None:
        """Stop the scan (deadline, server abort): the chain stops at its next item or solver
        iteration, reading stops, and the client is told `reason` (where it still listens)."""
        with self._lock:
            if self._cancelled is not None or self._io.closed:
                return
            self._cancelled = reason
        self.log.warning("cancelling the scan: %s", reason)
        if self._chain is not None:
            self._chain.cancel(reason)
        self._io.stop_reading()

    def abandon(self, reason: str) -> None:
        """Give up on the connection now (the server stops): pending output is discarded, the
        socket shut down, so no send or read blocks any longer; the chain is cancelled."""
        self.cancel(reason)
        self._io.drop(reason)

    def run(self) -> SessionReport:
        """Serve the connection to its end."""
        self._io.start(on_deadline=self.cancel, on_drop=self._client_gone)
        try:
            self._read()
        except Exception as err:  # a bug must end this session only
            self.log.exception("unexpected failure")
            self._refuse(f"internal server error: {err}")
        finally:
            self._finish()
        return self.report

    def _client_gone(self, reason: str) -> None:
        if self._chain is not None:
            self._chain.cancel(f"the client is gone: {reason}")

    def _refuse(self, reason: str) -> None:
        self._request.refuse(reason)
        self._io.send_error(reason)

    def _read(self) -> None:
        """Read and act until CLOSE, the end of the input, a refusal or a cancellation."""
        try:
            while self._cancelled is None and self._request.phase.reading:
                try:
                    message = self._io.read()
                except InputEnded as end:
                    if self.report.dropped is None:
                        (self.log.warning if self._request.phase is not Phase.WAITING else self.log.info)(
                            "%s%s", end, ": finishing the scan with the data received" if self._chain else "")
                    return
                except InputFailed as err:
                    return self._refuse(str(err))
                self.report.bytes_in += message.size
                try:
                    self._budget.charge(message.size, f"a {message.name} message")
                    self._act(message, self._request.accept(message))
                except (LimitError, RequestRefused) as err:
                    return self._refuse(str(err))
                finally:
                    for warning in self._request.warnings:
                        self._io.send_warning(warning)
                    self._request.warnings.clear()
                if self._chain is not None and self._chain.failed:
                    self.log.warning("a gadget failed after %d items: no more data is read", self.report.pushed)
                    self._request.refuse("a gadget failed")
                    return
        finally:
            self._request.end()
            if self._chain is not None:
                self._io.watch_connection()

    def _act(self, message: proto.Message, action: Action) -> None:
        if action is Action.START:
            self._start_chain()
            if self._cancelled is not None:  # cancelled while the chain was starting
                self._chain.cancel(self._cancelled)
        if action in (Action.START, Action.PUSH):
            self._push(message)
        elif action is Action.STOP:
            self.report.closed_by_client = True

    def _start_chain(self) -> None:
        """Resolve the requested chain and start it: the one place a session builds its chain."""
        request = self._request.request()
        try:
            chain, warnings = resolve_chain(request, self.settings.config_dirs, self.settings.trusts)
            for warning in warnings:
                self._io.send_warning(warning)
            scan = ScanContext(self._limits, self._budget, warn=self._io.gadget_warning)
            self._chain = Chain(chain, request.header, self._on_output, strict=self.settings.strict, scan=scan,
                                observer=self.settings.observer)
            self._chain.start()  # after the assignment: _on_output reads the chain's scan
        except (ChainError, HeaderError, ValueError) as err:
            raise self._request.refuse(f"cannot run the config: {err}") from err
        self.report.config = chain.name
        self.log.info("running chain %s (%d nodes)", chain.name, len(chain.nodes))

    def _push(self, message: proto.Message) -> None:
        item = message.payload
        if message.mid == proto.ACQUISITION:
            self.report.acquisitions += 1
            if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                self.report.noise_readouts += 1
        elif message.mid == proto.WAVEFORM:
            self.report.waveforms += 1
        else:
            self.report.images_in += 1
        self._chain.push(item)
        self.report.pushed += 1
        if not self.report.pushed % THROTTLE_EVERY:
            self._throttle()

    def _throttle(self) -> None:
        """Pause reading while too many items wait in front of the first gadget, so a fast sender
        is slowed by TCP instead of filling memory."""
        limit = self.settings.max_queued_items
        while (self._chain.pending > limit and not self._chain.failed and self.report.dropped is None
               and self._cancelled is None):
            time.sleep(0.001)

    def _on_output(self, item: object) -> None:
        """Called by the chain's last node for every item it produces."""
        stop = self._chain.scan.stop_or_after(self.settings.write_stall_s)
        self._io.send_result(item, lambda nbytes, what: self._budget.charge(nbytes, what, stop))

    def _finish(self) -> None:
        """End the chain, send what it produced, report, CLOSE, close the socket."""
        phase = self._request.phase
        fatal = phase is Phase.REFUSED
        if self._chain is None:
            if phase is Phase.CLOSED and not self._request.missing():
                try:
                    self._start_chain()  # a scan without data: still validate the config and header
                except RequestRefused as err:
                    self._io.send_error(str(err))
            elif self._cancelled is not None:
                self._io.send_error(f"the scan was cancelled: {self._cancelled}")
            elif not fatal and self.report.bytes_in and self.report.dropped is None and self._request.missing():
                self._io.send_warning(f"the stream ended without {' and '.join(self._request.missing())}: "
                                      "nothing to reconstruct")
        if self._chain is not None:
            try:
                self._chain.close()
            except Cancelled as err:
                if self.report.dropped is None:
                    self._io.send_error(f"the scan was cancelled: {err}")
            except NodeFailure as err:
                self._io.send_error(str(err))
            except Exception as err:
                self.log.exception("chain failure")
                self._io.send_error(f"chain failure: {err}")
        log_accounting(self.report, self._chain, self.log)
        self._io.close(drain=fatal)
        self.report.seconds = self._io.seconds
        log_summary(self.report, self.log)

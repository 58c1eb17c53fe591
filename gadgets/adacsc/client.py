"""The `adacsc send` client: replays an ISMRMRD file to a Gadgetron-compatible server (ours or
Gadgetron itself) like gadgetron_ismrmrd_client does, stores the images that come back, and
measures per-slice latency: from the moment the last readout of a slice was sent to the moment
that slice's images arrived, beside the slice's own reconstruction time when the images carry it
(`ReconTimeMs` in their meta, as adacsc's CSC gadget writes): a latency close to the
reconstruction time means the slice was reconstructed as soon as its readouts were complete.

Sequence: CONFIG (by name, id 1, or the text of a local file, id 2), HEADER, optional TEXT with
JSON parameters ({"parameters": {property: value}}, only when overrides are given), the
acquisitions (optionally paced as a scanner would send them), CLOSE. A reader thread receives
images, TEXT and ERROR until the server's CLOSE.
"""

import json
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ismrmrd

from adacsc.io.dataset import InputScan
from adacsc.io.images import OutputWriter
from adacsc.server import protocol as proto

log = logging.getLogger(__name__)

TICK_S = 2.5e-3
"""ISMRMRD acquisition_time_stamp tick (Siemens convention, also the simulator's)."""
MAX_PACE_GAP_S = 5.0


class Pacer:
    """Sleeps between readouts: `realtime` follows acquisition_time_stamp (2.5 ms ticks; gaps capped
    at 5 s), `realtime:F` does so F times faster, a number N sends N readouts per second."""

    def __init__(self, mode: str | None) -> None:
        self.mode = mode
        self._start: float | None = None
        self._first_stamp: int | None = None
        self._offset = 0.0
        self._previous_target = 0.0
        self._count = 0
        self.speed = 1.0
        self.rate: float | None = None
        if mode is None or mode == "":
            return
        if mode.startswith("realtime"):
            _, _, factor = mode.partition(":")
            self.speed = float(factor) if factor else 1.0
            if self.speed <= 0:
                raise ValueError(f"--pace {mode}: the speed factor must be positive")
        else:
            try:
                self.rate = float(mode)
            except ValueError as err:
                raise ValueError(f"--pace expects 'realtime', 'realtime:F' or readouts per second, got {mode!r}") from err
            if self.rate <= 0:
                raise ValueError("--pace: the rate must be positive")

    def wait(self, acquisition: ismrmrd.Acquisition) -> None:
        """Sleep until this readout is due."""
        if not self.mode:
            return
        now = time.perf_counter()
        if self._start is None:
            self._start = now
            self._first_stamp = acquisition.acquisition_time_stamp
        if self.rate is not None:
            target = self._count / self.rate
        else:
            ticks = (acquisition.acquisition_time_stamp - self._first_stamp) % (1 << 32)
            target = ticks * TICK_S / self.speed + self._offset
            if target - self._previous_target > MAX_PACE_GAP_S:
                self._offset -= target - self._previous_target - MAX_PACE_GAP_S
                target = self._previous_target + MAX_PACE_GAP_S
            elif target < self._previous_target:  # stamps going backwards: send at once
                self._offset += self._previous_target - target
                target = self._previous_target
        self._previous_target = target
        self._count += 1
        delay = self._start + target - now
        if delay > 0:
            time.sleep(delay)


@dataclass
class SendResult:
    """What one send did."""

    acquisitions: int = 0
    images: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed: bool = False
    """the server ended with CLOSE"""
    seconds: float = 0.0
    send_seconds: float = 0.0
    slice_sent: dict[tuple[int, int], float] = field(default_factory=dict)
    """(slice, repetition) -> time its last readout was sent (perf_counter)"""
    slice_first_image: dict[tuple[int, int], float] = field(default_factory=dict)
    slice_last_image: dict[tuple[int, int], float] = field(default_factory=dict)
    slice_recon_s: dict[tuple[int, int], float] = field(default_factory=dict)
    """(slice, repetition) -> its reconstruction time from the images' meta (ReconTimeMs), seconds"""

    @property
    def ok(self) -> bool:
        """CLOSE received and no error reported."""
        return self.closed and not self.errors

    def latencies(self) -> dict[tuple[int, int], float]:
        """(slice, repetition) -> seconds from its last readout sent to its last image received."""
        return {key: self.slice_last_image[key] - sent for key, sent in sorted(self.slice_sent.items())
                if key in self.slice_last_image}

    def first_image_latencies(self) -> dict[tuple[int, int], float]:
        """(slice, repetition) -> seconds from its last readout sent to its first image received."""
        return {key: self.slice_first_image[key] - sent for key, sent in sorted(self.slice_sent.items())
                if key in self.slice_first_image}

    @property
    def readouts_per_second(self) -> float:
        """Acquisitions sent per second of sending."""
        return self.acquisitions / self.send_seconds if self.send_seconds > 0 else 0.0


class StreamClient:
    """A connection to a server: send messages, receive in a reader thread."""

    def __init__(self, host: str, port: int, on_image: Callable[[ismrmrd.Image], None] | None = None,
                 timeout: float | None = 600.0, connect_timeout: float = 10.0,
                 limits: proto.Limits = proto.Limits()) -> None:
        self.result = SendResult()
        self.on_image = on_image
        self._limits = limits
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as err:
            raise ConnectionError(f"cannot connect to {host}:{port}: {err.strerror or err}") from err
        self._sock.settimeout(timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._reader = threading.Thread(target=self._read_loop, name="adacsc-send-reader", daemon=True)
        self._reader_error: BaseException | None = None
        self._reader.start()

    def _read_loop(self) -> None:
        reader = proto.SocketReader(self._sock)
        result = self.result
        try:
            while True:
                message = proto.read_message(reader, self._limits)
                if message.mid == proto.CLOSE:
                    result.closed = True
                    return
                if message.mid == proto.IMAGE:
                    now = time.perf_counter()
                    image = message.payload
                    key = (image.slice, image.repetition)
                    result.slice_first_image.setdefault(key, now)
                    result.slice_last_image[key] = now
                    recon_ms = _recon_ms(image)
                    if recon_ms is not None:
                        result.slice_recon_s[key] = recon_ms / 1000
                    name = f"image_{image.image_series_index}"
                    result.images[name] = result.images.get(name, 0) + 1
                    if self.on_image is not None:
                        self.on_image(image)
                elif message.mid == proto.TEXT:
                    text = message.payload
                    result.texts.append(text)
                    if text.lstrip().upper().startswith("ERROR"):
                        result.errors.append(text)
                        log.error("server: %s", text)
                    elif text.lstrip().upper().startswith("WARNING"):
                        log.warning("server: %s", text)
                    else:
                        log.info("server: %s", text)
                elif message.mid == proto.ERROR:
                    result.errors.append(message.payload)
                    log.error("server error: %s", message.payload)
                else:
                    log.warning("ignoring a %s message from the server", message.name)
        except proto.EndOfStream:
            log.warning("the server closed the connection without CLOSE")
        except (proto.ProtocolError, OSError) as err:
            self._reader_error = err
            log.error("receiving failed: %s", err)
        except Exception as err:  # e.g. the output file cannot be written
            self._reader_error = err
            log.error("handling a received message failed: %s", err)
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send(self, data: bytes, flush: bool = True) -> None:
        """Send bytes (buffered up to 256 KiB unless flush)."""
        with self._send_lock:
            self._pending.append(data)
            self._pending_bytes += len(data)
            if flush or self._pending_bytes >= 256 * 1024:
                self._flush_locked()

    def flush(self) -> None:
        """Send what is buffered."""
        with self._send_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._pending_bytes = [], 0
            self._sock.sendall(data)

    def wait(self, timeout: float | None = None) -> SendResult:
        """Wait for the server's CLOSE (or the end of the connection); then close."""
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.result.errors.append(f"no CLOSE from the server within {timeout} s")
            log.error("%s", self.result.errors[-1])
        self.close()
        if self._reader_error is not None and not any("receiving" in e for e in self.result.errors):
            self.result.errors.append(f"receiving failed: {self._reader_error}")
        return self.result

    def close(self) -> None:
        """Close the socket."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _recon_ms(image: ismrmrd.Image) -> float | None:
    """The ReconTimeMs meta entry of an image, or None (absent or not a number)."""
    if "ReconTimeMs" not in image.attribute_string:
        return None
    value = ismrmrd.Meta.deserialize(image.attribute_string).get("ReconTimeMs")
    try:
        return float(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError):
        return None


def _slice_key(acquisition: ismrmrd.Acquisition) -> tuple[int, int]:
    return acquisition.idx.slice, acquisition.idx.repetition


def stream(client: StreamClient, header: bytes, acquisitions: Iterable[ismrmrd.Acquisition | bytes],
           config_name: str | None = None, config_text: str | None = None,
           overrides: dict[str, str] | None = None, pace: str | None = None) -> None:
    """Send one scan over `client`: config, header, parameters, acquisitions (ismrmrd objects, or
    pre-encoded ACQUISITION messages, which are sent unpaced and without latency tracking), CLOSE."""
    if (config_name is None) == (config_text is None):
        raise ValueError("give a config name or a config text (one of them)")
    result = client.result
    pacer = Pacer(pace)
    client.send(proto.config_text_message(config_text) if config_text is not None
                else proto.config_file_message(config_name), flush=False)
    client.send(proto.header_message(header), flush=False)
    if overrides:
        client.send(proto.text_message(json.dumps({"parameters": overrides})), flush=False)
    started = time.perf_counter()
    for acquisition in acquisitions:
        if isinstance(acquisition, bytes):
            client.send(acquisition, flush=False)
            result.acquisitions += 1
            continue
        paced = pacer.mode is not None and pacer.mode != ""
        if paced:
            client.flush()
            pacer.wait(acquisition)
        client.send(proto.item_message(acquisition), flush=paced)
        result.acquisitions += 1
        if not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if not paced and acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
                client.flush()
            result.slice_sent[_slice_key(acquisition)] = time.perf_counter()
    client.send(proto.close_message(), flush=True)
    result.send_seconds = time.perf_counter() - started


def send_scan(input_path: str | Path, output_path: str | Path | None, host: str = "127.0.0.1", port: int = 9002,
              config_name: str | None = None, config_text: str | None = None,
              overrides: dict[str, str] | None = None, pace: str | None = None, group: str | None = None,
              timeout: float | None = 600.0) -> SendResult:
    """Replay `input_path` to a server; store the images in `output_path` (None: do not store)."""
    started = time.perf_counter()
    scan = InputScan(input_path)
    header = scan.header_bytes()
    writer = None
    try:
        client = StreamClient(host, port, timeout=timeout)  # connect before creating the output file
    except BaseException:
        scan.close()
        raise
    try:
        if output_path is not None:
            writer = OutputWriter(output_path, group)
            writer.write_header(header)
            client.on_image = writer.write
        try:
            stream(client, header, scan.acquisitions(), config_name, config_text, overrides, pace)
        except OSError as err:
            client.result.errors.append(f"sending failed: {err}")
            log.error("sending failed after %d acquisitions: %s (waiting for what the server sends)",
                      client.result.acquisitions, err)
        result = client.wait(timeout)
    finally:
        client.close()
        scan.close()
        if writer is not None:
            writer.close()
    result.seconds = time.perf_counter() - started
    return result


def summarise(result: SendResult) -> list[str]:
    """Human-readable lines: counts, rates and per-slice latencies."""
    lines = [f"sent {result.acquisitions} acquisitions in {result.send_seconds:.2f} s "
             f"({result.readouts_per_second:.0f} readouts/s); received "
             + (", ".join(f"{n} x{c}" for n, c in sorted(result.images.items())) or "no images")
             + f"; total {result.seconds:.2f} s"]
    latencies = result.latencies()
    first = result.first_image_latencies()
    for (slice_, repetition), value in latencies.items():
        recon = result.slice_recon_s.get((slice_, repetition))
        own = f"; reconstruction {recon * 1000:.1f} ms, latency {value / recon:.2f}x" if recon else ""
        lines.append(f"slice {slice_} repetition {repetition}: last readout -> images "
                     f"{value * 1000:.1f} ms (first image {first[(slice_, repetition)] * 1000:.1f} ms{own})")
    if latencies:
        values = list(latencies.values())
        lines.append(f"latency over {len(values)} slices: median {statistics.median(values) * 1000:.1f} ms, "
                     f"max {max(values) * 1000:.1f} ms")
    missing = sorted(set(result.slice_sent) - set(result.slice_last_image))
    if missing:
        lines.append(f"no images for {len(missing)} slice(s): {missing[:10]}")
    return lines

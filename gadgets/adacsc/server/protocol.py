"""The ISMRMRD / Gadgetron stream framing: message ids, bounded reading from a socket, writing.

Every message is a little-endian uint16 id followed by its payload:
  CONFIG_FILE (1)   1024 bytes, a NUL-padded config name
  CONFIG_TEXT (2)   uint32 length + chain XML
  HEADER (3)        uint32 length + ISMRMRD XML header
  CLOSE (4)         no payload
  TEXT (5)          uint32 length + text (python-ismrmrd-server sends JSON parameters this way;
                    Gadgetron's server sends its error reports as TEXT)
  ERROR (8)         uint64 length + text (what a Gadgetron external node reports failures with)
  ACQUISITION (1008), IMAGE (1022), WAVEFORM (1026): ismrmrd's serialize_into/deserialize_from

Reading never allocates from an unchecked length: every length (text, readout, image, waveform)
is checked against `Limits` first, and payloads are received in bounded chunks, so memory only
grows with data that actually arrived. Texts may be NUL-terminated (trailing NULs are dropped).
"""

import ctypes
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import ismrmrd
from ismrmrd.image import get_dtype_from_data_type

CONFIG_FILE = 1
CONFIG_TEXT = 2
HEADER = 3
CLOSE = 4
TEXT = 5
ERROR = 8
ACQUISITION = 1008
IMAGE = 1022
WAVEFORM = 1026

NAMES = {CONFIG_FILE: "CONFIG_FILE", CONFIG_TEXT: "CONFIG_TEXT", HEADER: "HEADER", CLOSE: "CLOSE",
         TEXT: "TEXT", ERROR: "ERROR", ACQUISITION: "ACQUISITION", IMAGE: "IMAGE", WAVEFORM: "WAVEFORM"}

CONFIG_NAME_SIZE = 1024
MiB = 1 << 20

_ID = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ACQ_HEADER_SIZE = ctypes.sizeof(ismrmrd.AcquisitionHeader)
_IMAGE_HEADER_SIZE = ctypes.sizeof(ismrmrd.ImageHeader)
_WAVEFORM_HEADER_SIZE = ctypes.sizeof(ismrmrd.WaveformHeader)


class ProtocolError(ValueError):
    """The peer sent something that breaks the framing (unknown id, absurd length, bad data)."""


class EndOfStream(ConnectionError):
    """The peer closed its sending side at a message boundary."""


class TruncatedMessage(ProtocolError, ConnectionError):
    """The peer closed its sending side in the middle of a message."""


class ReadDeadline(TimeoutError):
    """A deadline of the reader passed (a message arriving too slowly, or the opening of a
    stream taking too long); the text says which."""


@dataclass(frozen=True)
class Limits:
    """Upper bounds checked before anything is allocated."""

    max_text_bytes: int = 8 * MiB
    """config text, header, TEXT, ERROR, image attribute strings"""
    max_readout_bytes: int = 64 * MiB
    """one acquisition's samples x channels x 8 plus its trajectory"""
    max_image_bytes: int = 512 * MiB
    """one image's pixel data"""
    max_waveform_bytes: int = 16 * MiB
    """one waveform's samples x channels x 4"""


class Message:
    """One decoded message: its id and payload (str for texts, bytes for the header, an ismrmrd
    object for data, None for CLOSE) and its size on the wire."""

    __slots__ = ("mid", "payload", "size")

    def __init__(self, mid: int, payload: Any, size: int) -> None:
        self.mid = mid
        self.payload = payload
        self.size = size

    def __repr__(self) -> str:
        return f"Message({self.name}, {self.size} bytes)"

    @property
    def name(self) -> str:
        """The message kind, for logs."""
        return NAMES.get(self.mid, str(self.mid))


MESSAGE_BYTES_PER_S = MiB
"""the slowest a message may arrive, past its allowance of `message_s` seconds (see SocketReader)"""


class SocketReader:
    """Reads exact byte counts from a socket through a small buffer; never reads ahead more than
    one chunk and never allocates for bytes that have not arrived.

    Deadlines, so that a peer trickling bytes cannot hold a connection: `message_s` (None: none)
    bounds one message, from its first byte, to that many seconds plus one second per
    MESSAGE_BYTES_PER_S of its size; `deadline` (a time.monotonic() value, None: none) bounds
    everything read until it is cleared. Between messages, the socket's own timeout applies."""

    def __init__(self, sock: socket.socket, chunk: int = 1024 * 1024, message_s: float | None = None) -> None:
        self._sock = sock
        self._chunk = chunk
        self._buffer = b""
        self._pos = 0
        self.bytes_read = 0
        self.message_s = message_s
        self.deadline: float | None = None
        self.deadline_reason = "the deadline passed"
        self._message_deadline: float | None = None

    def _recv(self) -> bytes:
        if self.deadline is not None or self._message_deadline is not None:
            end, reason = min((d, why) for d, why in ((self.deadline, "opening"), (self._message_deadline, "message"))
                              if d is not None)
            reason = self.deadline_reason if reason == "opening" else self._message_reason()
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise ReadDeadline(reason)
            idle = self._sock.gettimeout()
            self._sock.settimeout(remaining if idle is None else min(idle, remaining))
            try:
                data = self._sock.recv(self._chunk)
            except TimeoutError:
                if time.monotonic() >= end:
                    raise ReadDeadline(reason) from None
                raise
            finally:
                self._sock.settimeout(idle)
        else:
            data = self._sock.recv(self._chunk)
        self.bytes_read += len(data)
        return data

    def _message_reason(self) -> str:
        return f"a message did not arrive within {self.message_s:g} s (+1 s per MiB) of its first byte"

    def begin_message(self) -> None:
        """The first byte of a message has arrived: its deadline starts now."""
        if self.message_s is not None:
            self._message_deadline = time.monotonic() + self.message_s

    def end_message(self) -> None:
        """The message is complete: between messages only the socket's timeout applies."""
        self._message_deadline = None

    def read(self, size: int, boundary: bool = False) -> bytes:
        """Exactly `size` bytes. At EOF: EndOfStream when nothing of this read arrived and
        `boundary` says a message may end here, else TruncatedMessage."""
        if self._message_deadline is not None:
            self._message_deadline += size / MESSAGE_BYTES_PER_S
        available = len(self._buffer) - self._pos
        if available >= size:
            start = self._pos
            self._pos += size
            return self._buffer[start:self._pos]
        parts = [self._buffer[self._pos:]] if available else []
        got = available
        self._buffer, self._pos = b"", 0
        while got < size:
            data = self._recv()
            if not data:
                if got == 0 and boundary:
                    raise EndOfStream("peer closed the stream")
                raise TruncatedMessage(f"stream ended inside a message ({got} of {size} bytes)")
            need = size - got
            if len(data) > need:
                parts.append(data[:need])
                self._buffer, self._pos = data, need
                got = size
            else:
                parts.append(data)
                got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain(self, max_bytes: int, deadline_s: float) -> int:
        """Discard what the peer still sends (at most `max_bytes`, for at most `deadline_s` in
        all), so that closing does not reset the connection before the peer read our last
        messages. Returns the number of bytes discarded."""
        discarded = len(self._buffer) - self._pos
        self._buffer, self._pos = b"", 0
        end = time.monotonic() + deadline_s
        previous = self._sock.gettimeout()
        try:
            while discarded < max_bytes:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._sock.settimeout(remaining)
                data = self._sock.recv(self._chunk)
                if not data:
                    break
                discarded += len(data)
        except OSError:
            pass
        finally:
            try:
                self._sock.settimeout(previous)
            except OSError:
                pass
        return discarded


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def _sized(reader: SocketReader, length_struct: struct.Struct, limit: int, what: str) -> bytes:
    (length,) = length_struct.unpack(reader.read(length_struct.size))
    if length > limit:
        raise ProtocolError(f"{what} of {length} bytes exceeds the limit of {limit} bytes")
    return reader.read(length)


class _Chunks:
    """read_exactly over byte strings already received, in the order ismrmrd's deserialize_from
    asks for them (header, then each part); sizes must match exactly."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = list(parts)
        self._index = 0

    def __call__(self, size: int) -> bytes:
        if size == 0:
            return b""
        while self._index < len(self._parts) and not self._parts[self._index]:
            self._index += 1
        if self._index >= len(self._parts):
            raise ProtocolError("message shorter than its header declares")
        part = self._parts[self._index]
        if len(part) == size:
            self._index += 1
            return part
        if len(part) > size:
            self._parts[self._index] = part[size:]
            return part[:size]
        raise ProtocolError("message parts do not match its header")


def _acquisition(reader: SocketReader, limits: Limits) -> tuple[ismrmrd.Acquisition, int]:
    head = reader.read(_ACQ_HEADER_SIZE)
    header = ismrmrd.AcquisitionHeader.from_buffer_copy(head)
    samples, channels, dims = header.number_of_samples, header.active_channels, header.trajectory_dimensions
    size = samples * dims * 4 + samples * channels * 8
    if size > limits.max_readout_bytes:
        raise ProtocolError(f"acquisition of {samples} samples x {channels} channels (+{dims}-D trajectory) "
                            f"exceeds the limit of {limits.max_readout_bytes} bytes")
    trajectory = reader.read(samples * dims * 4)
    data = reader.read(samples * channels * 8)
    return ismrmrd.Acquisition.deserialize_from(_Chunks(head, trajectory, data)), _ACQ_HEADER_SIZE + size


def _image(reader: SocketReader, limits: Limits) -> tuple[ismrmrd.Image, int]:
    head = reader.read(_IMAGE_HEADER_SIZE)
    header = ismrmrd.ImageHeader.from_buffer_copy(head)
    try:
        itemsize = get_dtype_from_data_type(header.data_type).itemsize
    except Exception as err:
        raise ProtocolError(f"image with unknown data type {header.data_type}") from err
    x, y, z = header.matrix_size
    size = int(header.channels) * int(x) * int(y) * int(z) * itemsize
    if size > limits.max_image_bytes:
        raise ProtocolError(f"image of {header.channels} x {x} x {y} x {z} x {itemsize} bytes exceeds "
                            f"the limit of {limits.max_image_bytes} bytes")
    attributes = _sized(reader, _U64, limits.max_text_bytes, "image attribute string")
    body = reader.read(size)
    image = ismrmrd.Image.deserialize_from(_Chunks(head, _U64.pack(len(attributes)), attributes, body))
    return image, _IMAGE_HEADER_SIZE + 8 + len(attributes) + size


def _waveform(reader: SocketReader, limits: Limits) -> tuple[ismrmrd.Waveform, int]:
    head = reader.read(_WAVEFORM_HEADER_SIZE)
    header = ismrmrd.WaveformHeader.from_buffer_copy(head)
    size = int(header.channels) * int(header.number_of_samples) * 4
    if size > limits.max_waveform_bytes:
        raise ProtocolError(f"waveform of {header.channels} x {header.number_of_samples} samples exceeds "
                            f"the limit of {limits.max_waveform_bytes} bytes")
    body = reader.read(size)
    return ismrmrd.Waveform.deserialize_from(_Chunks(head, body)), _WAVEFORM_HEADER_SIZE + size


def read_message(reader: SocketReader, limits: Limits = Limits()) -> Message:
    """The next message. Raises EndOfStream at a clean end, TruncatedMessage when the stream ends
    inside a message, ProtocolError for an unknown id, an absurd length or undecodable data,
    ReadDeadline when one of the reader's deadlines passes."""
    first = reader.read(1, boundary=True)
    reader.begin_message()
    try:
        return _read_body(reader, limits, first)
    finally:
        reader.end_message()


def _read_body(reader: SocketReader, limits: Limits, first: bytes) -> Message:
    (mid,) = _ID.unpack(first + reader.read(1))
    if mid == ACQUISITION:
        item, size = _acquisition(reader, limits)
        return Message(mid, item, 2 + size)
    if mid == IMAGE:
        item, size = _image(reader, limits)
        return Message(mid, item, 2 + size)
    if mid == WAVEFORM:
        item, size = _waveform(reader, limits)
        return Message(mid, item, 2 + size)
    if mid == CLOSE:
        return Message(mid, None, 2)
    if mid == CONFIG_FILE:
        raw = reader.read(CONFIG_NAME_SIZE)
        return Message(mid, _text(raw.split(b"\0", 1)[0]), 2 + CONFIG_NAME_SIZE)
    if mid in (CONFIG_TEXT, TEXT):
        raw = _sized(reader, _U32, limits.max_text_bytes, f"{NAMES[mid]} message")
        return Message(mid, _text(raw), 6 + len(raw))
    if mid == HEADER:
        raw = _sized(reader, _U32, limits.max_text_bytes, "HEADER message")
        return Message(mid, raw.rstrip(b"\0"), 6 + len(raw))
    if mid == ERROR:
        raw = _sized(reader, _U64, limits.max_text_bytes, "ERROR message")
        return Message(mid, _text(raw), 10 + len(raw))
    raise ProtocolError(f"unknown message id {mid}")


# ---- writing -----------------------------------------------------------------------------------

def close_message() -> bytes:
    """CLOSE."""
    return _ID.pack(CLOSE)


def text_message(text: str, mid: int = TEXT) -> bytes:
    """TEXT (or CONFIG_TEXT with mid=CONFIG_TEXT): uint32 length + UTF-8 text."""
    data = text.encode("utf-8")
    return _ID.pack(mid) + _U32.pack(len(data)) + data


def error_message(text: str) -> bytes:
    """ERROR as Gadgetron's external nodes frame it: uint64 length + UTF-8 text."""
    data = text.encode("utf-8", errors="replace")
    return _ID.pack(ERROR) + _U64.pack(len(data)) + data


def config_file_message(name: str) -> bytes:
    """CONFIG_FILE: the name NUL-padded to 1024 bytes."""
    data = name.encode("utf-8")
    if len(data) >= CONFIG_NAME_SIZE:
        raise ValueError(f"config name longer than {CONFIG_NAME_SIZE - 1} bytes")
    return _ID.pack(CONFIG_FILE) + data.ljust(CONFIG_NAME_SIZE, b"\0")


def config_text_message(text: str) -> bytes:
    """CONFIG_TEXT: uint32 length + chain XML."""
    return text_message(text, CONFIG_TEXT)


def header_message(xml: bytes | str) -> bytes:
    """HEADER: uint32 length + XML."""
    data = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    return _ID.pack(HEADER) + _U32.pack(len(data)) + data


def item_message(item: object) -> bytes:
    """ACQUISITION, IMAGE or WAVEFORM through ismrmrd's own serialize_into."""
    if isinstance(item, ismrmrd.Acquisition):
        mid = ACQUISITION
    elif isinstance(item, ismrmrd.Image):
        mid = IMAGE
    elif isinstance(item, ismrmrd.Waveform):
        mid = WAVEFORM
    else:
        raise TypeError(f"a {type(item).__name__} has no ISMRMRD stream message")
    parts = [_ID.pack(mid)]
    item.serialize_into(lambda data: parts.append(bytes(data)))
    return b"".join(parts)

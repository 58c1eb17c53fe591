"""Serialising items exactly as they cross a real Gadgetron chain, with gadgetron-python's own
readers and writers: what survives this survives a process boundary."""

import io
import struct
import warnings

from gadgetron.external.connection import Connection

_MESSAGE_ID = struct.Struct("<H")
_WRITERS = Connection._default_writers()
_READERS = Connection._default_readers()

# gadgetron-python reads header arrays through numpy.asarray on ctypes structs, which makes numpy
# warn about the PEP 3118 format; the objects are kept as they are, so the warning is noise.
warnings.filterwarnings("ignore", message="A builtin ctypes object gave a PEP3118 format string",
                        category=RuntimeWarning)


class _Stream:
    """The read/write object gadgetron-python's readers and writers expect."""

    def __init__(self, data: bytes = b"") -> None:
        self._buffer = io.BytesIO(data)

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def read(self, size: int) -> bytes:
        data = self._buffer.read(size)
        if len(data) != size:
            raise EOFError(f"message truncated: wanted {size} bytes, got {len(data)}")
        return data

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()


def encode(item: object) -> bytes:
    """Message id and payload of `item`; TypeError when no writer exists (it could not cross)."""
    stream = _Stream()
    for accepts, writer in _WRITERS:
        if accepts(item):
            writer(stream, item)
            return stream.getvalue()
    raise TypeError(f"a {type(item).__name__} cannot cross a Gadgetron chain (no writer for it)")


def decode(message: bytes) -> tuple[int, object]:
    """(message id, item) from bytes made by `encode`."""
    stream = _Stream(message)
    (mid,) = _MESSAGE_ID.unpack(stream.read(_MESSAGE_ID.size))
    return mid, read_payload(mid, stream)


def read_payload(mid: int, stream: object) -> object:
    """The item of a message `mid` whose id has been read, from `stream` (anything with an exact
    `read(size)`, e.g. a socket reader), with gadgetron-python's reader for that id."""
    if mid not in _READERS:
        raise TypeError(f"no reader for message id {mid}")
    return _READERS[mid](stream)


def round_trip(item: object) -> tuple[int, object]:
    """`item` as the next node would receive it from Gadgetron."""
    return decode(encode(item))

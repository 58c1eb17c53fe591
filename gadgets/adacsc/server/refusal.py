"""The one place the servers frame an error report and refuse a connection: `adacsc serve`
(sessions and the admission of connections) and `adacsc external` both send what went wrong,
then CLOSE, and read what the peer still sends for a while before closing, so that it reads the
report instead of a reset connection."""

import socket

from adacsc.server import protocol as proto

ERROR_FORMATS = ("text", "error")
"""how an error report is framed: "text": TEXT "ERROR: ..." (Gadgetron's own server);
"error": ERROR (id 8, uint64 length; what Gadgetron reads from an external node)"""


def error_report(text: str, error_format: str = "text") -> bytes:
    """One error report in `error_format` (see ERROR_FORMATS)."""
    if error_format == "error":
        return proto.error_message(text)
    if error_format == "text":
        return proto.text_message(f"ERROR: {text}")
    raise ValueError(f"unknown error format {error_format!r} (one of {', '.join(ERROR_FORMATS)})")


def refuse(sock: socket.socket, text: str, error_format: str = "text", drain_s: float = 1.0,
           max_drain_bytes: int = 16 * proto.MiB) -> None:
    """Tell the peer `text` and CLOSE, read and drop what it still sends (at most
    `max_drain_bytes`, for at most `drain_s` seconds), close the socket."""
    try:
        sock.settimeout(5.0)
        sock.sendall(error_report(text, error_format) + proto.close_message())
        sock.shutdown(socket.SHUT_WR)
        proto.SocketReader(sock).drain(max_bytes=max_drain_bytes, deadline_s=drain_s)
    except OSError:
        pass
    finally:
        sock.close()

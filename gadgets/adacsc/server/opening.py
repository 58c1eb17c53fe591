"""The opening of a stream: the messages up to the ISMRMRD header (config, JSON parameters),
read before the connection takes a worker, within one deadline and a byte cap, so that a peer
that connects and sends nothing, or trickles bytes, holds no worker (adacsc.server.server)."""

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adacsc.server import protocol as proto

OPENING_KINDS = (proto.CONFIG_FILE, proto.CONFIG_TEXT, proto.TEXT, proto.ERROR)
"""messages that may come before the header; anything else ends the opening"""


@dataclass
class Opening:
    """What arrived before the header: the messages (the header, a data message or CLOSE last
    when one ended the opening), and the reader, whose buffer the session goes on reading."""

    reader: proto.SocketReader
    messages: list[proto.Message] = field(default_factory=list)
    failure: BaseException | None = None
    """what ended the reading early (the session reports it as if it had read it itself)"""
    answered: list[proto.Message] = field(default_factory=list)
    """messages `on_message` already answered (the session does not answer them again)"""

    @property
    def timed_out(self) -> bool:
        """Whether the deadline passed before the header (the connection gets no worker)."""
        return isinstance(self.failure, proto.ReadDeadline)


def read_opening(sock: socket.socket, limits: proto.Limits, deadline_s: float, message_s: float | None,
                 max_bytes: int, answer: Callable[[proto.Message], bytes | None] = lambda message: None) -> Opening:
    """Read until the header (or a data message, CLOSE, the end, an error) within `deadline_s`
    seconds of connecting and `max_bytes` bytes in all. What `answer` returns for a message is
    sent at once (e.g. a warning that a config name is unknown)."""
    reader = proto.SocketReader(sock, message_s=message_s)
    reader.deadline = time.monotonic() + deadline_s
    reader.deadline_reason = f"no ISMRMRD header within {deadline_s:g} s of connecting"
    opening = Opening(reader)
    received = 0
    try:
        while True:
            message = proto.read_message(reader, limits)
            opening.messages.append(message)
            received += message.size
            reply = answer(message)
            if reply is not None:
                sock.sendall(reply)
                opening.answered.append(message)
            if message.mid not in OPENING_KINDS:
                break
            if received > max_bytes:
                raise proto.ProtocolError(f"{received} bytes of config and text messages before the ISMRMRD "
                                          f"header, over the limit of {max_bytes} bytes")
    except (proto.ProtocolError, OSError) as err:  # EndOfStream, timeouts and resets are OSErrors
        opening.failure = err
    finally:
        reader.deadline = None
    return opening

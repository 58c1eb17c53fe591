"""Gadgetron's side of an `<external>` Python node, byte for byte, for tests: listen on a free
port, start `python -m gadgetron <port> <module> <target>` as Gadgetron does, send CONFIG,
HEADER, the items and CLOSE, and read back everything the node sends until its CLOSE."""

import socket
import struct
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

from adacsc.chain import wire

_ID = struct.Struct("<H")
_UINT32 = struct.Struct("<I")
CONFIG, HEADER, CLOSE = 2, 3, 4


class ExactReader:
    """socket -> read(n) that returns exactly n bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise EOFError("the node closed the socket without CLOSE")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def run_external_node(module: str, target: str, configuration: ET.Element, header: bytes,
                      items: list[object], timeout: float = 120.0) -> tuple[list[tuple[int, object]], str]:
    """Run one node in its own process; returns ((message id, item) received, the node's log)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(timeout)
    port = server.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), module, target],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    received: list[tuple[int, object]] = []
    try:
        conn, _ = server.accept()
        conn.settimeout(timeout)
        reader = ExactReader(conn)

        def send_all() -> None:
            config = ET.tostring(configuration)
            conn.sendall(_ID.pack(CONFIG) + _UINT32.pack(len(config)) + config)
            conn.sendall(_ID.pack(HEADER) + _UINT32.pack(len(header)) + header)
            for item in items:
                conn.sendall(wire.encode(item))
            conn.sendall(_ID.pack(CLOSE))

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        while True:
            (mid,) = _ID.unpack(reader.read(_ID.size))
            if mid == CLOSE:
                break
            received.append((mid, wire.read_payload(mid, reader)))
        sender.join(timeout)
        conn.close()
        log, _ = process.communicate(timeout=timeout)
    finally:
        server.close()
        if process.poll() is None:
            process.kill()
    return received, log

"""The keeper's wire format: one frame per message on a Unix stream socket.

A frame is an 8-byte prefix (the JSON header's length and the payload's length, both
big-endian u32), the header (a JSON object) and the payload (raw bytes: an agent's
buffered output). File descriptors (a PTY master) travel with a frame's first bytes as
SCM_RIGHTS ancillary data, so the receiver gets them with the frame that names them.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Sequence

PREFIX = struct.Struct(">II")
#: a header is small (an agent's argv and environment at most)
MAX_HEADER = 1 << 20
#: a payload is an agent's buffered output (bounded by the keeper's buffer)
MAX_PAYLOAD = 64 << 20
#: PTY masters per frame at most (one agent per frame)
MAX_FDS = 4


class ProtocolError(Exception):
    """The peer sent something that is not a frame (or too large a one)."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(head), len(payload)) + head + payload


def send(sock: socket.socket, header: dict, payload: bytes = b"",
         fds: Sequence[int] = ()) -> None:
    """Send one frame (blocking, under the socket's timeout)."""
    data = encode(header, payload)
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        sock.sendall(data)


def parse(buf: bytearray) -> tuple[dict, bytes] | None:
    """Take one whole frame off the front of `buf`, or None while it is incomplete."""
    if len(buf) < PREFIX.size:
        return None
    hlen, plen = PREFIX.unpack_from(buf)
    if hlen > MAX_HEADER or plen > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large ({hlen} + {plen} bytes)")
    end = PREFIX.size + hlen + plen
    if len(buf) < end:
        return None
    try:
        header = json.loads(bytes(buf[PREFIX.size:PREFIX.size + hlen]))
    except ValueError as err:
        raise ProtocolError(f"bad header: {err}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a header is a JSON object")
    payload = bytes(buf[PREFIX.size + hlen:end])
    del buf[:end]
    return header, payload


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED: the kernel's word, not the peer's)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid

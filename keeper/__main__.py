"""`python -m keeper --socket PATH`: run this machine's keeper (one per socket path)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import socket
import sys

from keeper.server import BUFFER_BYTES, GRACE_S, KILL_GRACE_S, Keeper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keeper", description=__doc__)
    p.add_argument("--socket", required=True, help="the Unix socket workers connect to")
    p.add_argument("--grace", type=float, default=GRACE_S,
                   help="seconds an agent may stay unclaimed before it is stopped")
    p.add_argument("--buffer-bytes", type=int, default=BUFFER_BYTES,
                   help="output kept per unclaimed agent before it must wait")
    p.add_argument("--kill-grace", type=float, default=KILL_GRACE_S)
    p.add_argument("--exit-when-idle", type=float, default=None,
                   help="exit after this many seconds with no agent and no worker")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s keeper[%(process)d] %(levelname)s %(message)s")
    path = os.path.abspath(args.socket)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # one keeper per socket: the lock is held for the process's life (and freed by its end,
    # however it ends), so a stale socket file is replaced only by the lock's holder
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"a keeper already serves {path}", file=sys.stderr)
        return 3
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is this user's only
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    keeper = Keeper(path, grace_s=args.grace, buffer_bytes=args.buffer_bytes,
                    kill_grace_s=args.kill_grace, exit_when_idle_s=args.exit_when_idle)
    try:
        keeper.serve(listener)
    finally:
        # the socket goes before the lock: a new keeper never sees ours half-gone
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener.close()
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())

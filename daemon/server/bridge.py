"""`overnight attach`: the daemon's connection on stdin/stdout, for clients that speak LSP over stdio.

Editors such as Neovim, Helix or Emacs (and pytest-lsp) start a language server as a child process
and talk to it over its stdio. This bridge is that child: it connects to the workspace's running
daemon and copies bytes both ways, unchanged. The client still authenticates itself in
``initialize`` (the token from ``.overnight/daemon.json``); the bridge adds no privilege.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from . import discovery
from .client import NoDaemon


def _fd_to_socket(fd: int, sock: socket.socket, done: threading.Event) -> None:
    try:
        while chunk := os.read(fd, 65536):  # raw reads: no buffered-reader lock held at interpreter exit
            sock.sendall(chunk)
    except OSError:
        pass  # either side went away: the bridge ends
    finally:
        done.set()


def _socket_to_fd(sock: socket.socket, fd: int, done: threading.Event) -> None:
    try:
        while chunk := sock.recv(65536):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    except OSError:
        pass
    finally:
        done.set()


def attach(state_dir: Path, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    info = discovery.read(state_dir)
    if info is None:
        raise NoDaemon(f"no Overnight daemon runs for this workspace (no live {discovery.path(state_dir)}); "
                       "start one with `overnight daemon --detach`")
    sock = socket.create_connection((info.host, info.port))
    done = threading.Event()
    threading.Thread(target=_fd_to_socket, args=(stdin_fd, sock, done), daemon=True).start()
    threading.Thread(target=_socket_to_fd, args=(sock, stdout_fd, done), daemon=True).start()
    done.wait()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    return 0

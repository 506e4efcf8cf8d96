"""The handshake: nothing is answered before a client proves it holds the workspace's token.

Before a successful ``initialize``, any other message closes the connection without a reply. An
``initialize`` with a wrong or missing token, or another major protocol version, gets an error
response and the connection is closed. After it, the connection is an ordinary pygls server,
except that ``exit`` closes only this connection (the daemon outlives its editors).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.protocol.language_server import lsp_method

from overnight.protocol import types as t
from overnight.protocol.wire import OvernightProtocol

log = logging.getLogger("overnight.daemon")

INTERNAL_ERROR = -32603

# What an unauthenticated non-initialize message becomes: handle_message drops the connection.
_REFUSED = object()


def _major(version: str) -> str:
    return version.split(".", 1)[0]


class DaemonProtocol(OvernightProtocol):  # type: ignore[misc]  # mypy sees overnight.protocol as Any
    token: str = ""  # set per connection by the server factory

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authenticated = False
        # The client runs markdown command links (initializationOptions.commandLinks: the VS Code extension):
        # hovers then link to the experiment; other clients get a plain reference.
        self.command_links = False
        # The client shows the loop's news itself (initializationOptions.showMessages false: the VS Code extension);
        # other clients get a window/showMessage when an experiment is kept or held.
        self.show_messages = True

    def structure_message(self, data: dict[str, Any]) -> Any:
        # json.loads calls this for every object, innermost first; only whole messages carry "jsonrpc".
        if not self.authenticated and "jsonrpc" in data and data.get("method") != lsp.INITIALIZE:
            return _REFUSED
        return super().structure_message(data)

    def handle_message(self, message: Any) -> None:
        if message is _REFUSED:
            log.warning("closing a connection that spoke before authenticating")
            self.close_connection()
            return
        if not self.authenticated:
            error = self._check_credentials(message)
            if error is not None:
                code, text = error
                log.warning("refused a client: %s", text)
                self._send_response(message.id, None, JsonRpcException(code=code, message=text).to_response_error())
                self.close_connection()
                return
            self.authenticated = True
            options = message.params.initialization_options
            self.command_links = options.get("commandLinks") is True
            self.show_messages = options.get("showMessages") is not False
        super().handle_message(message)

    def _check_credentials(self, message: Any) -> tuple[int, str] | None:
        options = getattr(getattr(message, "params", None), "initialization_options", None)
        if not isinstance(options, dict):
            return t.ErrorCode.UNAUTHORIZED, "initializationOptions must carry the workspace's token"
        token = options.get("token")
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), self.token.encode()):
            return t.ErrorCode.UNAUTHORIZED, "wrong or missing token (read it from .overnight/daemon.json)"
        version = options.get("protocolVersion")
        if not isinstance(version, str) or _major(version) != _major(t.PROTOCOL_VERSION):
            return (t.ErrorCode.VERSION_MISMATCH,
                    f"protocol version {version!r} is not compatible with the daemon's {t.PROTOCOL_VERSION}")
        return None

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        # pygls puts an internal error's exception text and traceback in the answer; a client learns nothing of
        # the daemon's internals — the log has them (pygls logged the exception before answering).
        if error is not None and getattr(error, "code", None) == INTERNAL_ERROR:
            error = lsp.ResponseError(code=INTERNAL_ERROR, message="internal error in the daemon (see .overnight/daemon.log)")
        super()._send_response(msg_id, result, error)

    def close_connection(self) -> None:
        if self.writer is not None:
            self.writer.close()

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> Any:
        # pygls's default exits the process; a daemon only lets this client go.
        self.close_connection()
        yield from ()

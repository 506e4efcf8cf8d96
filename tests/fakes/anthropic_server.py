"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 that the real SDK talks to.

Tests point the SDK at it (``base_url``) and script what each ``POST /v1/messages`` gets, in order:
a streamed (SSE) or plain JSON answer with text and tool-use blocks, an error status with the API's
error body and headers (429 with retry-after, 529 overloaded, 500), a hang, a stream cut off
mid-way, tool input that is not JSON. When the script runs out, ``responder`` answers (if set).
``POST /v1/messages/count_tokens`` (the agent's key check and outage probe) answers 200 unless
``probe_failures`` says how many of the next ones fail with 529.

Cache accounting is simulated from the request itself, as the API does it: the prefix up to each
``cache_control`` breakpoint is "written" the first time it is seen and "read" afterwards; tokens
are counted as characters / 4.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""
    tools: list[tuple[str, Any]] = field(default_factory=list)  # (name, input) per tool_use block
    raw_tool_json: str | None = None  # sent as the last tool's input JSON instead of json.dumps(input)
    stop_reason: str = "tool_use"
    output_tokens: int = 50
    drop_after: int | None = None  # SSE events sent before the connection is cut
    delay: float = 0.0  # seconds before answering (a model that takes its time)


@dataclass
class Error:
    status: int
    type: str = "api_error"
    message: str = "scripted error"
    retry_after: float | None = None
    probe_failures: int | None = None  # side effect: the next count_tokens calls fail this many times


@dataclass
class Hang:
    seconds: float


Step = Reply | Error | Hang


def edit(path: str, old: str, new: str) -> tuple[str, dict[str, str]]:
    return ("edit", {"path": path, "old": old, "new": new})


def propose(description: str, hypothesis: str = "it should help") -> tuple[str, dict[str, str]]:
    return ("propose", {"description": description, "hypothesis": hypothesis})


class FakeAnthropic:
    def __init__(self) -> None:
        self.script: list[Step] = []
        self.responder: Callable[[dict[str, Any]], Step] | None = None
        self.requests: list[dict[str, Any]] = []
        self.probes = 0
        self.probe_failures = 0
        self._cache: set[str] = set()
        self._lock = threading.Lock()
        self._ids = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes: a cut stream is real

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                try:
                    if self.path.startswith("/v1/messages/count_tokens"):
                        fake._count_tokens(self)
                    elif self.path.startswith("/v1/messages"):
                        fake._messages(self, body)
                    else:
                        fake._error(self, Error(404, "not_found_error", f"no route {self.path}"))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): nothing to answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)

    # -- routes -----------------------------------------------------------------------------------

    def _count_tokens(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.probes += 1
            failing = self.probe_failures > 0
            self.probe_failures = max(0, self.probe_failures - 1)
        if failing:
            self._error(h, Error(529, "overloaded_error", "Overloaded"))
            return
        self._json(h, 200, {"input_tokens": 12})

    def _messages(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
            step: Step | None = self.script.pop(0) if self.script else None
        if step is None and self.responder is not None:
            step = self.responder(body)
        if step is None:
            step = Error(500, "api_error", "the fake's script is exhausted")
        if isinstance(step, Hang):
            time.sleep(step.seconds)
            return
        if isinstance(step, Error):
            if step.probe_failures is not None:
                with self._lock:
                    self.probe_failures = step.probe_failures
            self._error(h, step)
            return
        if step.delay:
            time.sleep(step.delay)
        usage = self._usage(body, step.output_tokens)
        if body.get("stream"):
            self._sse(h, body, step, usage)
        else:
            self._json(h, 200, self._message(body, step, usage))

    # -- answers ----------------------------------------------------------------------------------

    def _usage(self, body: dict[str, Any], output_tokens: int) -> dict[str, int]:
        """Cache reads/writes per breakpoint, as the API accounts them (tokens ≈ characters / 4)."""
        prefix = json.dumps(body.get("tools", [])) + json.dumps(body.get("system", []))
        segments: list[str] = []
        system = body.get("system")
        if isinstance(system, list) and any(isinstance(b, dict) and "cache_control" in b for b in system):
            segments.append(prefix)
        running = prefix
        for message in body.get("messages", []):
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
            for block in blocks:
                running += json.dumps(block)
                if isinstance(block, dict) and "cache_control" in block:
                    segments.append(running)
        total = len(running) // 4
        read = write = 0
        with self._lock:
            for seg in segments:
                key = hashlib.sha256(seg.encode()).hexdigest()
                if key in self._cache:
                    read = len(seg) // 4
                else:
                    self._cache.add(key)
            if segments:
                write = len(segments[-1]) // 4 - read
        return {"input_tokens": max(0, total - read - write), "cache_read_input_tokens": read,
                "cache_creation_input_tokens": write, "output_tokens": output_tokens}

    def _blocks(self, step: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if step.text:
            blocks.append({"type": "text", "text": step.text})
        for name, tool_input in step.tools:
            with self._lock:
                self._ids += 1
                tool_id = f"toolu_{self._ids:04d}"
            blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        return blocks

    def _message(self, body: dict[str, Any], step: Reply, usage: dict[str, int]) -> dict[str, Any]:
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
                "content": self._blocks(step), "stop_reason": step.stop_reason, "stop_sequence": None, "usage": usage}

    def _sse(self, h: BaseHTTPRequestHandler, body: dict[str, Any], step: Reply, usage: dict[str, int]) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("request-id", "req_fake")
        h.end_headers()
        start = {**self._message(body, step, {**usage, "output_tokens": 1}), "content": [], "stop_reason": None}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
        blocks = self._blocks(step)
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                words = block["text"].split(" ")
                for k, word in enumerate(words):
                    piece = word if k == len(words) - 1 else word + " "
                    events.append({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}})
            else:
                events.append({"type": "content_block_start", "index": i,
                               "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
                raw = json.dumps(block["input"])
                if step.raw_tool_json is not None and i == len(blocks) - 1:
                    raw = step.raw_tool_json
                for k in range(0, len(raw), 40):
                    events.append({"type": "content_block_delta", "index": i,
                                   "delta": {"type": "input_json_delta", "partial_json": raw[k:k + 40]}})
            events.append({"type": "content_block_stop", "index": i})
        events.append({"type": "message_delta", "delta": {"stop_reason": step.stop_reason, "stop_sequence": None},
                       "usage": {"output_tokens": usage["output_tokens"]}})
        events.append({"type": "message_stop"})
        if step.drop_after is not None:
            events = events[: step.drop_after]
        for event in events:
            h.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            h.wfile.flush()
        h.close_connection = True

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, err: Error) -> None:
        data = json.dumps({"type": "error", "error": {"type": err.type, "message": err.message}}).encode()
        h.send_response(err.status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        # The SDK would retry on its own unless told not to; the agent's own retries are what is tested.
        h.send_header("x-should-retry", "false")
        if err.retry_after is not None:
            h.send_header("retry-after", f"{err.retry_after:g}")
        h.end_headers()
        h.wfile.write(data)

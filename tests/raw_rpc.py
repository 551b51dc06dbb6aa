"""A raw JSON-RPC client for the tests (no tests here): its own framing, so it can send what an
LSP library refuses to send (broken headers, wrong types, invalid UTF-8), against the real
server (`python -m whence_ls serve`) over stdio.

The server's requests to the client (configuration, progress tokens, registrations, edits)
are answered the way an editor would, so the server never waits on us.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class RawServer:
    def __init__(self, cwd: Path, *extra_args: str) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "whence_ls", "serve", *extra_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
        )
        self._next_id = 0
        self._lock = threading.Lock()
        self.responses: dict[Any, dict] = {}  # by id; a second answer to one id is recorded too
        self.duplicates: list[dict] = []
        self.null_id_errors: list[dict] = []
        self.notifications: list[dict] = []
        self._arrived = threading.Condition(self._lock)
        self.configuration: dict = {}
        self.server_requests: list[str] = []  # methods of the requests the server sent us
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr_lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    # -- sending ---------------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_json(self, value: Any) -> None:
        body = json.dumps(value).encode("utf-8")
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def request(self, method: str, params: Any = None, *, send_params: bool = True) -> int:
        msg_id = self.new_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if send_params:
            message["params"] = params
        self.send_json(message)
        return msg_id

    def notify(self, method: str, params: Any) -> None:
        self.send_json({"jsonrpc": "2.0", "method": method, "params": params})

    def call(self, method: str, params: Any = None, timeout: float = 60.0) -> dict:
        return self.wait_for([self.request(method, params)], timeout)[0]

    # -- receiving -------------------------------------------------------------------------------

    def wait_for(self, ids: list[Any], timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not all(i in self.responses for i in ids):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    missing = [i for i in ids if i not in self.responses]
                    raise AssertionError(f"no answer to {len(missing)} requests (ids {missing[:10]}); server rc={self.process.poll()}")
                self._arrived.wait(min(left, 0.5))
            return [self.responses[i] for i in ids]

    def wait_null_errors(self, count: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.null_id_errors) < count and time.monotonic() < deadline:
                self._arrived.wait(0.2)
            return list(self.null_id_errors)

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            message = json.loads(stream.read(length))
            self._receive(message)

    def _receive(self, message: dict) -> None:
        if "method" in message and "id" in message:
            self._answer_server_request(message)
            return
        with self._arrived:
            if "method" in message:
                self.notifications.append(message)
            elif message.get("id") is None:
                self.null_id_errors.append(message)
            elif message["id"] in self.responses:
                self.duplicates.append(message)
            else:
                self.responses[message["id"]] = message
            self._arrived.notify_all()

    def _answer_server_request(self, message: dict) -> None:
        method = message["method"]
        self.server_requests.append(method)
        if method == "workspace/configuration":
            items = (message.get("params") or {}).get("items") or []
            result: Any = [self.configuration.get(item.get("section"), None) for item in items]
        elif method == "workspace/applyEdit":
            result = {"applied": True}
        else:  # progress tokens, registrations, refreshes
            result = None
        try:
            self.send_json({"jsonrpc": "2.0", "id": message["id"], "result": result})
        except (BrokenPipeError, ValueError):
            pass

    def _drain_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.put(line.decode("utf-8", "replace"))

    def stderr_text(self) -> str:
        lines = []
        while not self.stderr_lines.empty():
            lines.append(self.stderr_lines.get())
        return "".join(lines)

    # -- life cycle ------------------------------------------------------------------------------

    def initialize(self, root: Path, options: dict, capabilities: dict | None = None) -> dict:
        answer = self.call("initialize", {
            "processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": capabilities or {},
            "workspaceFolders": [{"uri": root.as_uri(), "name": "ws"}], "initializationOptions": options,
        })
        self.notify("initialized", {})
        return answer

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call("whence/status", {})["result"]
            if status["state"] in ("ready", "error"):
                return status
            time.sleep(0.1)
        raise AssertionError("the model never became ready")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

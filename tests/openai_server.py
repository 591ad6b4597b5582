"""A small OpenAI-compatible completions server on 127.0.0.1 for tests: it serves any synth policy (the tiny
model) the way `vllm serve` does (seeded samples, `stop_reason`, `usage`, GET /models with max_model_len),
and injects faults on demand: `server.faults` is a list of what the next requests get ("500", "429", "hang",
"reset"); `server.down = True` fails every request."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from synth.generate.engine import SamplingParams


class FakeOpenAIServer:
    def __init__(self, policy, name: str = "tiny", max_model_len: int = 1024, hang_s: float = 3.0):
        self.policy, self.name, self.max_model_len, self.hang_s = policy, name, max_model_len, hang_s
        self.faults: list[str] = []
        self.down = False
        self.requests: list[dict] = []  # completions requests that were answered
        self.auth: set[str] = set()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def next_fault(self) -> str | None:
        with self._lock:
            if self.down:
                return "500"
            return self.faults.pop(0) if self.faults else None

    def complete(self, body: dict) -> dict:
        stop = body.get("stop") or None
        params = SamplingParams(
            n=1,
            max_tokens=body.get("max_tokens", 16),
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            stop=[stop] if isinstance(stop, str) else stop,
            include_stop=bool(body.get("include_stop_str_in_output")),
            seed=body.get("seed") or 0,
        )
        with self._lock:  # one generation at a time: the engine is not thread-safe
            c = self.policy.generate([body["prompt"]], params)[0][0]
            self.requests.append(body)
        prompt_tokens = self.policy.count_tokens(body["prompt"])
        return {
            "id": f"cmpl-{len(self.requests)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "text": c.text,
                    "logprobs": None,
                    "finish_reason": "length" if c.stop_reason == "length" else "stop",
                    "stop_reason": (params.stop or ["?"])[0] if c.stop_reason == "stop" else None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": c.num_tokens,
                "total_tokens": prompt_tokens + c.num_tokens,
            },
        }


def _handler(server: FakeOpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/").endswith("/models"):
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": server.name, "object": "model", "max_model_len": server.max_model_len}],
                    },
                )
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            server.auth.add(self.headers.get("Authorization", ""))
            fault = server.next_fault()
            if fault == "500":
                return self._send(500, {"error": {"message": "injected server error", "type": "server_error"}})
            if fault == "429":
                return self._send(429, {"error": {"message": "injected rate limit"}}, {"Retry-After": "0"})
            if fault == "reset":  # close with RST: the client sees a dropped connection
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return None
            if fault == "hang":
                time.sleep(server.hang_s)
            try:
                self._send(200, server.complete(body))
            except (BrokenPipeError, ConnectionResetError):  # the client gave up on a hung request
                pass
            return None

    return Handler

"""A loopback Claude (`POST /v1/messages`) for tests, benches and the demo. Point the anthropic SDK at it
with ANTHROPIC_BASE_URL=http://host:port (or `base_url=`).

It answers tool-forced requests with the tool input a test scripts, or that a `responder` function
computes, and reports usage like the real API: input tokens estimated at 4 characters a token, and
prompt caching of the tools + system prefix when it carries cache_control and reaches the model's
minimum cacheable length (then written once, read afterwards). Faults (429 with Retry-After, 529
overloaded, 5xx, slow answers) come from the shared fake machinery.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from platforms.fakes.base import FakeHelpdesk, json_response

# Minimum cacheable prefix, in tokens (Anthropic's prompt caching docs).
MIN_CACHEABLE = {"haiku": 4096, "sonnet": 1024, "opus": 4096}
Responder = Callable[[dict[str, Any]], dict[str, Any]]


def estimate_tokens(value: Any) -> int:
    """About four characters a token."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return max(1, len(text) // 4)


def ticket_text(body: dict[str, Any]) -> str:
    """The user message of a request (the redacted ticket)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(block.get("text", "") for block in content)


class FakeClaude(FakeHelpdesk):
    """In-memory Messages API."""

    def __init__(self, *, responder: Responder | None = None, seed: int = 0):
        super().__init__(seed=seed)
        self.responder = responder
        self.answers: deque[dict[str, Any]] = deque()  # scripted tool inputs, used before the responder
        self._cached: set[tuple[str, str]] = set()
        self._ids = itertools.count(1)

    def answer_next(self, **tool_input: Any) -> None:
        """Queue the tool input of the next answer."""
        self.answers.append(tool_input)

    def messages(self) -> list[dict[str, Any]]:
        """Bodies of every /v1/messages request, oldest first."""
        return [body for method, path, body in self.requests if method == "POST" and path == "/v1/messages"]

    def models_called(self) -> list[str]:
        return [body["model"] for body in self.messages()]

    # --- the API ---------------------------------------------------------------------------------

    def route(self, request: Request, body: Any) -> Response:
        if request.path != "/v1/messages" or request.method != "POST":
            return _error(404, "not_found_error", "Not found")
        # The SDK sends the key as x-api-key (1.x) or as a bearer token (2.x).
        if not (request.headers.get("x-api-key") or request.headers.get("Authorization", "").startswith("Bearer ")):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not isinstance(body, dict) or not body.get("messages") or not body.get("model"):
            return _error(400, "invalid_request_error", "messages and model are required")
        tools = {tool["name"]: tool for tool in body.get("tools", [])}
        choice = body.get("tool_choice") or {}
        if choice.get("type") != "tool" or choice.get("name") not in tools:
            return _error(400, "invalid_request_error", "this fake only answers tool-forced requests")
        if self.answers:
            tool_input = self.answers.popleft()
        elif self.responder is not None:
            tool_input = self.responder(body)
        else:
            return _error(500, "api_error", "no answer scripted")
        return json_response(200, {
            "id": f"msg_fake_{next(self._ids)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "tool_use", "id": f"toolu_fake_{next(self._ids)}", "name": choice["name"],
                         "input": tool_input}],
            "stop_reason": "tool_use", "stop_sequence": None, "usage": self._usage(body, tool_input),
        })

    def _usage(self, body: dict[str, Any], tool_input: dict[str, Any]) -> dict[str, int]:
        system = body.get("system") or []
        blocks = system if isinstance(system, list) else [{"type": "text", "text": system}]
        prefix = estimate_tokens(body.get("tools", [])) + sum(estimate_tokens(b.get("text", "")) for b in blocks)
        user = estimate_tokens(body["messages"])
        usage = {"input_tokens": prefix + user, "output_tokens": estimate_tokens(tool_input),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        family = next((f for f in MIN_CACHEABLE if f in body["model"]), "sonnet")
        if any("cache_control" in b for b in blocks) and prefix >= MIN_CACHEABLE[family]:
            key = (body["model"], json.dumps([body.get("tools"), blocks], sort_keys=True))
            usage["input_tokens"] = user
            if key in self._cached:
                usage["cache_read_input_tokens"] = prefix
            else:
                self._cached.add(key)
                usage["cache_creation_input_tokens"] = prefix
        return usage


def _error(status: int, kind: str, message: str) -> Response:
    return json_response(status, {"type": "error", "error": {"type": kind, "message": message}})

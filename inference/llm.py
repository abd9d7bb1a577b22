"""The vLLM seam: an OpenAI-compatible chat-completions client for GPT-OSS (see VLLM.md).

Streams server-sent events, reads reasoning from `reasoning` or `reasoning_content`, maps every
failure to one `LlmError` subclass with a message a user can act on, and times out every call.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ingest.errors import DocqaError


class LlmError(DocqaError):
    """The language model could not produce an answer."""

    # Whether the request may have reached the model server (with the passages it carried).
    # False only when no connection was made: refused, or not made in time.
    delivered: bool = True
    kind = "failed"


class LlmUnavailable(LlmError):
    """The server could not be reached or is not ready."""

    kind = "unavailable"


class LlmMisconfigured(LlmUnavailable):
    """The served model cannot answer as docqa is set up (its window leaves too little room)."""

    kind = "setup"
    delivered = False


class LlmTimeout(LlmError):
    """The server stopped answering within the time limit."""

    kind = "timeout"


class ContextTooLong(LlmError):
    """The prompt does not fit the model's context window."""

    kind = "too_long"


class GenerationFailed(LlmError):
    """The server answered with an error, or with no answer text."""

    kind = "failed"


class Cancelled(LlmError):
    """The request was hung up on because its `StopSignal` was set (the asker stopped it)."""

    kind = "stopped"


class StopSignal:
    """Set from another thread to hang up on a request in flight, even while the model is still
    reading the prompt and nothing streams: the connection is shut, which wakes the blocked read,
    and vLLM aborts the request. `reason` says who stopped it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.lock = threading.Lock()

    def set(self, reason: str) -> None:
        with self.lock:  # the first reason stays
            if not self.event.is_set():
                self.reason = reason
                self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class HangUp:
    """Shuts a request's connection once `signal` is set, from a thread of its own, until
    `finish` (once the answer is whole, and before the response is closed): while the server has
    not even answered the request's headers, and while the answer streams or the model reads the
    prompt with nothing streaming. The connection is the one httpcore makes for the request (its
    `trace` extension hands it over as it is made), so the request must get a new one (a client
    that keeps none idle), and asks the server to close it after the answer (`Connection: close`),
    so it is never handed to another request, which could meet the shut socket."""

    CONNECTED = ("connection.connect_tcp.complete", "connection.connect_unix_socket.complete",
                 "connection.start_tls.complete")

    def __init__(self, signal: StopSignal) -> None:
        self.signal = signal
        self.lock = threading.Lock()
        self.done = False
        self.stream: Any = None
        threading.Thread(target=self.watch, name="docqa-hang-up", daemon=True).start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace extension: keeps the connection as it is made (a stop that came
        while it was being made shuts it at once)."""
        if event in self.CONNECTED and info.get("return_value") is not None:
            with self.lock:
                self.stream = info["return_value"]
                if self.signal.is_set() and not self.done:
                    self._shut()

    def watch(self) -> None:
        while not self.done:
            if self.signal.event.wait(0.1):
                with self.lock:
                    if not self.done:
                        self._shut()  # with no connection yet, `trace` shuts it once it is made
                return

    def _shut(self) -> None:
        sock = self.stream.get_extra_info("socket") if self.stream is not None else None
        if sock is not None:
            try:
                # The plain socket's own shutdown, TLS or not: wakes the blocked read, and the
                # server sees the client go.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # closed meanwhile
                pass

    def finish(self) -> None:
        with self.lock:
            self.done = True


@dataclass
class Probe:
    """One request for the model's window, as the threads waiting for it see it."""

    finished: threading.Event = field(default_factory=threading.Event)
    window: int = 0
    error: Exception | None = None


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # "reasoning" | "content" | "finish" | "usage"
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def error_message(body: str) -> str:
    """The message of either error envelope ({"error": {...}} or the older flat one)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty response)"
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def is_context_error(message: str) -> bool:
    lowered = message.lower()
    return "context length" in lowered or "max_tokens must be at least 1" in lowered


class VllmClient:
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str = "",
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
    ):
        # Accept ".../v1" or the bare root: /health and /tokenize live at the root.
        self.root = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.api_key = api_key
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)  # per connect, read and write
        self.total_timeout = timeout  # and for a whole answer, however steadily it trickles in
        # One connection pool for the client's life: a new httpx client per request costs ~50 ms
        # here (its TLS context is built even for plain http), on every question's critical path.
        tls = httpx.create_ssl_context()
        self.http = httpx.Client(timeout=self.timeout, verify=tls)
        # Stoppable chat requests each get a connection of their own (HangUp shuts it), from a
        # client that keeps none idle.
        self.stoppable_http = httpx.Client(timeout=self.timeout, verify=tls,
                                           limits=httpx.Limits(max_keepalive_connections=0))
        self.probe_lock = threading.Lock()
        self.probe: Probe | None = None  # the request to /v1/models in flight, when it is asked stoppably

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, self.root + path, headers=self._headers(), **kwargs)
        except httpx.TimeoutException as exc:
            raise LlmTimeout(f"the language model at {self.root} did not answer in time ({self._limits(exc)})") from exc
        except httpx.TransportError as exc:
            raise LlmUnavailable(unreachable(self.root, exc)) from exc
        if response.status_code >= 400:
            raise self._http_error(response.status_code, response.text)
        return response

    def _http_error(self, status: int, body: str, chat: bool = False) -> LlmError:
        """The LlmError for an HTTP error status (`chat`: to the chat request, which the server
        was reached with: a 500 there is the model failing on it, not a server away)."""
        message = error_message(body)
        if status == 400 and is_context_error(message):
            return ContextTooLong(f"the question and sources are too long for the model: {message}")
        if status in (401, 403):
            if not self.api_key:
                return LlmUnavailable(f"the language model wants an API key and none is set (HTTP {status}): "
                                      "set DOCQA_LLM_API_KEY")
            return LlmUnavailable(f"the language model refused the API key (HTTP {status}): check DOCQA_LLM_API_KEY")
        if status == 404:
            return LlmUnavailable(f"the language model server does not serve {self.model!r}: {message}")
        if status == 500 and chat:
            return GenerationFailed(f"the language model failed on the request (HTTP 500): {message}")
        if status >= 500:
            return LlmUnavailable(f"the language model server failed (HTTP {status}): {message}")
        return GenerationFailed(f"the language model rejected the request (HTTP {status}): {message}")

    def _limits(self, exc: httpx.TimeoutException) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {self.timeout.connect:g} s"
        if isinstance(exc, httpx.ReadTimeout):
            return f"nothing came for {self.timeout.read:g} s; DOCQA_LLM_TIMEOUT sets the limit"
        return f"{type(exc).__name__} after {self.timeout.read:g} s; DOCQA_LLM_TIMEOUT sets the limit"

    def max_model_len(self, stop: StopSignal | None = None) -> int:
        """The served model's context window, from /v1/models. Setting `stop` gives up waiting
        (raising Cancelled) even while the server has not answered at all: the request is left to
        end on its own timeout in a thread of its own, and its answer is not used."""
        if stop is None:
            return self._max_model_len()
        if stop.is_set():
            raise Cancelled(stop.reason)
        with self.probe_lock:  # one request in flight at a time, shared by all who wait for it,
            probe = self.probe  # so questions stopped against a server that hangs pile up no threads
            if probe is None:
                probe = self.probe = Probe()
                threading.Thread(target=self._run_probe, args=(probe,), name="docqa-first-contact",
                                 daemon=True).start()
        while not probe.finished.wait(0.05):
            if stop.is_set():
                raise Cancelled(stop.reason)
        if probe.error is not None:
            raise copy.copy(probe.error)  # each waiter its own, as callers add to the error they catch
        return probe.window

    def _run_probe(self, probe: Probe) -> None:
        try:
            probe.window = self._max_model_len()
        except Exception as exc:  # handed to the waiting threads, which raise it
            probe.error = exc
        finally:
            with self.probe_lock:
                if self.probe is probe:
                    self.probe = None
            probe.finished.set()

    def _max_model_len(self) -> int:
        try:
            cards = self._request("GET", "/v1/models").json().get("data", [])
        except ValueError as exc:
            raise LlmUnavailable(f"{self.root}/v1/models did not return JSON: is this a vLLM server?") from exc
        for card in cards:
            if card.get("id") == self.model:
                if not card.get("max_model_len"):
                    raise LlmUnavailable(f"{self.root}/v1/models lists {self.model!r} without its max_model_len: "
                                         "is this a vLLM server?")
                return int(card["max_model_len"])
        served = ", ".join(str(card.get("id")) for card in cards if card.get("id")) or "none"
        raise LlmUnavailable(f"the language model server does not list {self.model!r} in /v1/models (it serves: "
                             f"{served}); DOCQA_LLM_MODEL names the model")

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_completion_tokens: int,
        effort: str = "medium",
        cache_salt: str | None = None,
        stop: StopSignal | None = None,
    ) -> Generator[StreamEvent, None, None]:
        """Yield reasoning and content deltas, then finish and usage events. Setting `stop`
        hangs up on the request (raising Cancelled), whether or not anything streams."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_completion_tokens": max_completion_tokens,
            "reasoning_effort": effort,
            "temperature": 1.0,
            "top_p": 1.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if cache_salt:
            body["cache_salt"] = cache_salt
        url = self.root + "/v1/chat/completions"
        answering = whole = False
        if stop is not None and stop.is_set():  # stopped already: this request is never sent
            unsent = Cancelled(stop.reason)
            unsent.delivered = False
            raise unsent
        http, headers, hang_up = self.http, self._headers(), None
        if stop is not None:
            http, hang_up = self.stoppable_http, HangUp(stop)
            headers["Connection"] = "close"
        try:
            with http.stream("POST", url, json=body, headers=headers,
                             extensions={"trace": hang_up.trace} if hang_up is not None else None) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, response.read().decode("utf-8", "replace"), chat=True)
                answering = True
                deadline = time.monotonic() + self.total_timeout
                for event in parse_sse(response.iter_lines()):
                    if stop is not None and stop.is_set() and not whole:
                        break
                    if event.kind == "finish" and hang_up is not None:
                        whole = True  # the answer is whole: a stop now comes too late to cut it
                        hang_up.finish()
                    yield event
                    if time.monotonic() > deadline:
                        raise LlmTimeout(f"the language model at {self.root} did not finish its answer within "
                                         f"{self.total_timeout:g} s; DOCQA_LLM_TIMEOUT sets the limit")
                if stop is not None and stop.is_set() and not whole:
                    raise Cancelled(stop.reason)
        except (httpx.TransportError, LlmError) as exc:
            if stop is not None and stop.is_set() and not whole and not isinstance(exc, Cancelled):
                # The connection was shut on purpose: before the server answered the request (it
                # had it, unless no connection was made), or with the body ending early or mid-chunk.
                cancelled = Cancelled(stop.reason)
                cancelled.delivered = answering or not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout,
                                                                        httpx.PoolTimeout))
                raise cancelled from exc
            if isinstance(exc, LlmError):
                raise
            raise self._transport_failure(exc, answering) from exc
        finally:
            if hang_up is not None:
                hang_up.finish()  # its thread ends

    def _transport_failure(self, exc: httpx.TransportError, answering: bool) -> LlmError:
        """The LlmError for a transport failure of a chat request (`answering`: its answer had begun)."""
        if isinstance(exc, httpx.TimeoutException):
            late = LlmTimeout(f"the language model at {self.root} stopped answering in time ({self._limits(exc)})")
            late.delivered = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            return late
        if answering:  # the server went away after it began: a failed answer, not a server never reached
            return GenerationFailed(f"the connection to the language model broke mid-answer ({exc})")
        down = LlmUnavailable(unreachable(self.root, exc))
        down.delivered = not isinstance(exc, httpx.ConnectError)
        return down


def unreachable(root: str, exc: Exception) -> str:
    return (f"the language model at {root} is unreachable ({exc}); vLLM accepts connections only once its model "
            "has loaded, which takes minutes after a start: check that it is running")


def parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if not data:
            continue
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise GenerationFailed(f"the language model sent malformed stream data: {data[:200]!r}") from exc
        if "error" in chunk or chunk.get("object") == "error":
            raise GenerationFailed(f"the language model failed mid-answer: {error_message(data)}")
        yield from chunk_events(chunk)
    raise GenerationFailed("the language model's stream ended without [DONE]")


def chunk_events(chunk: dict[str, Any]) -> Iterator[StreamEvent]:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning:
            yield StreamEvent("reasoning", reasoning)
        if delta.get("content"):
            yield StreamEvent("content", delta["content"])
        if choice.get("finish_reason"):
            yield StreamEvent("finish", choice["finish_reason"])
    if chunk.get("usage"):
        yield StreamEvent("usage", data=chunk["usage"])

"""A local stand-in for vLLM serving gpt-oss-120b, faithful to ../shared/design/VLLM.md.

The only stand-in in the project. It speaks the same HTTP as vLLM's OpenAI-compatible server:
/health, /version, /v1/models (with max_model_len), /tokenize, and /v1/chat/completions,
streaming (reasoning deltas before content, a finish chunk, a usage chunk, [DONE]) and not.
Its answer is deterministic and built from the sources it was sent: it quotes the source
sentence that best matches the question and cites its label, so tests can check citations.

Modes (set `server.mode`; MODES below says each in a line, and `--help` lists them): normal,
error (HTTP 500), mid_stream_error, malformed (a chunk cut short), cut (the connection closes
mid-answer), broken (a body promised, then the connection closed), length (reasoning uses
the whole budget; content null), length_unless_low (the same except at low effort), empty (stop
with no content), slow (`delay` s between chunks; `hangups` counts the answers whose client hung
up before the end, which vLLM aborts), slow_start (the headers, then `delay` s before the first
chunk, as while vLLM reads a long prompt), no_headers (answers /v1/models, but takes a chat request
and sends nothing back, not even its headers, as an overloaded server or a proxy holding it may;
a client that hangs up is counted in `hangups`),
dead (accepts the request and never answers). `reasoning_field` is "reasoning",
"reasoning_content" or "both", like the vLLM versions that emit them.

Run alone:  python -m tests.vllm_standin --port 8001 [--mode slow --delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ingest.tokens import count_tokens

CREATED = 1767225600
WORD = re.compile(r"[a-z0-9]{4,}")


def stems(text: str) -> set[str]:
    """Crude stems (first six letters of words of four or more), so "warranty" meets "warrants"."""
    return {word[:6] for word in WORD.findall(text.lower())}
SOURCE_BLOCK = re.compile(r"^\[(S\d+)\] [^\n]*\n(.*?)(?=\n\n\[S\d+\] |\n\nQuestion: |\Z)", re.S | re.M)
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n\s*\n")


def answer_from_sources(prompt: str) -> tuple[str, str]:
    """(reasoning, answer): quote the sentence that best matches the question, and cite it."""
    question = prompt.rsplit("Question: ", 1)[-1].strip()
    wanted = stems(question)
    best: tuple[int, str, str] = (-1, "", "")
    for label, body in SOURCE_BLOCK.findall(prompt):
        for sentence in SENTENCE_END.split(body):
            sentence = " ".join(sentence.split()).strip().strip('"')
            if len(sentence) < 20 or '"' in sentence:
                continue
            score = len(wanted & stems(sentence))
            if score > best[0]:
                best = (score, label, sentence)
    reasoning = f"The user asks: {question[:120]}. I should find the passage that answers it."
    if not best[1]:
        return reasoning, "The sources do not contain the answer."
    _, label, sentence = best
    return reasoning + f" {label} looks most relevant.", f'According to the sources, "{sentence}" [{label}].'


class StandinServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (a timeout, a closed page) is routine, as for vLLM:
        no traceback for it; anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class VllmStandin:
    def __init__(self, *, model: str = "gpt-oss-120b", max_model_len: int = 131072, api_key: str = ""):
        self.model = model
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.mode = "normal"
        self.reasoning_field = "reasoning"
        self.delay = 0.0
        self.append = ""  # added to every answer, to script what a model might also write
        self.requests: list[dict[str, Any]] = []
        self.received_at: list[float] = []  # perf_counter() as each POST's body had fully arrived
        self.hangups = 0  # answers whose client hung up before the end (vLLM aborts those requests)
        self._prompts: list[list[int]] = []
        self._stop = threading.Event()
        self._httpd = StandinServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> VllmStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- protocol pieces -------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        # Harmony: system message ~61, developer (instructions) text + 7, user text + 4, each
        # assistant turn text + 6, generation prompt 2.
        extra = {"system": 7, "developer": 7, "user": 4, "assistant": 6}
        total = 61 + 2
        for message in messages:
            total += count_tokens(str(message.get("content") or "")) + extra.get(message.get("role", ""), 4)
        return total

    def cached_tokens(self, prompt: str) -> int:
        """Simulated prefix cache: the longest shared prefix with an earlier prompt, in 16-token blocks."""
        import bpe_openai

        tokens = bpe_openai.build_encoding_from_name("o200k_base").encode_ordinary(prompt)
        best = 0
        for earlier in self._prompts:
            shared = 0
            for a, b in zip(earlier, tokens, strict=False):
                if a != b:
                    break
                shared += 1
            best = max(best, shared)
        self._prompts.append(tokens)
        return best // 16 * 16

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # As vLLM's server (uvicorn) does: without it, each small reply waits ~40 ms on
            # Nagle's algorithm and the client's delayed ACK, which no real deployment pays.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if server.mode == "dead":
                    server._stop.wait(3600)
                    return
                if self.path == "/health":
                    self._send(200, b"", "application/json")
                elif self.path == "/version":
                    self._json(200, {"version": "0.16.0"})
                elif self.path == "/v1/models":
                    if self._authorized():
                        self._json(200, server.models_body())
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                server.received_at.append(time.perf_counter())  # the whole request is here (for bench/)
                if server.mode == "dead":
                    server._stop.wait(3600)
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._json(400, error_body("Invalid JSON body", "BadRequestError", 400))
                    return
                if self.path == "/tokenize":
                    self._json(200, server.tokenize_body(body))
                elif self.path == "/v1/chat/completions":
                    if self._authorized():
                        server.requests.append(body)
                        if server.mode == "no_headers":
                            self._hold()
                        else:
                            server.chat(self, body)
                else:
                    self._json(404, {"detail": "Not Found"})

            def _hold(self) -> None:
                """Send nothing until the client hangs up (counted) or the stand-in stops."""
                while not server._stop.is_set():
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable:
                        try:
                            gone = not self.connection.recv(1, socket.MSG_PEEK)
                        except OSError:
                            gone = True
                        if gone:
                            server.hangups += 1
                            break
                self.close_connection = True

            def _authorized(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._json(401, {"error": "Unauthorized"})
                    return False
                return True

            def _json(self, status: int, payload: Any) -> None:
                self._send(status, json.dumps(payload).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def models_body(self) -> dict[str, Any]:
        card = {
            "id": self.model, "object": "model", "created": CREATED, "owned_by": "vllm",
            "root": "openai/gpt-oss-120b", "parent": None, "max_model_len": self.max_model_len,
            "permission": [],
        }
        return {"object": "list", "data": [card]}

    def tokenize_body(self, body: dict[str, Any]) -> dict[str, Any]:
        import bpe_openai

        encoding = bpe_openai.build_encoding_from_name("o200k_base")
        if "messages" in body:
            tokens = list(range(self.prompt_tokens(body["messages"])))
        else:
            tokens = encoding.encode_ordinary(str(body.get("prompt", "")))
        strs = [encoding.decode([t]) for t in tokens] if body.get("return_token_strs") else None
        return {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens, "token_strs": strs}

    def chat(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send_json = handler._json  # type: ignore[attr-defined]
        if body.get("model") != self.model:
            send_json(404, error_body(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404, "model"))
            return
        messages = body.get("messages") or []
        prompt_tokens = self.prompt_tokens(messages)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0) or (
            self.max_model_len - prompt_tokens
        )
        if prompt_tokens + max_tokens > self.max_model_len:
            message = (
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion."
            )
            send_json(400, error_body(message, "BadRequestError", 400))
            return
        if self.mode == "error":
            send_json(500, error_body("EngineCore encountered an issue.", "InternalServerError", 500))
            return
        # The whole conversation, as the model reads it: the sources ride with the first question.
        user = "\n\n".join(str(m.get("content")) for m in messages if m.get("role") == "user")
        reasoning, content = answer_from_sources(user)
        content += self.append
        content_or_none: str | None = content
        finish = "stop"
        if self.mode == "length" or (self.mode == "length_unless_low" and body.get("reasoning_effort") != "low"):
            content_or_none, finish = None, "length"
        elif self.mode == "empty":
            content_or_none = None
        completion = count_tokens(reasoning) + (count_tokens(content) if content_or_none else 0)
        prompt_text = "\n".join(str(m.get("content") or "") for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens(prompt_text)},
        }
        if body.get("stream"):
            self.stream(handler, body, reasoning, content_or_none, finish, usage)
        else:
            send_json(200, self.completion_body(reasoning, content_or_none, finish, usage))

    def reasoning_fields(self, text: str) -> dict[str, str]:
        if self.reasoning_field == "both":
            return {"reasoning": text, "reasoning_content": text}
        return {self.reasoning_field: text}

    def completion_body(self, reasoning: str, content: str | None, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": content, "tool_calls": [], **self.reasoning_fields(reasoning)}
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": CREATED, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }

    def stream(
        self,
        handler: BaseHTTPRequestHandler,
        body: dict[str, Any],
        reasoning: str,
        content: str | None,
        finish: str,
        usage: dict[str, Any],
    ) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        if self.mode == "broken":  # promise a body, then close early: the server died mid-answer
            handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        handler.close_connection = True
        if self.mode == "slow_start":  # a long prompt being read (or a queue): headers, then nothing for a while
            time.sleep(self.delay)

        def emit(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
            try:
                handler.wfile.write(f"data: {data}\n\n".encode())
                handler.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.hangups += 1  # the client went away: vLLM aborts the request here
                raise
            if self.mode == "slow":
                time.sleep(self.delay)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        emit(chunk({"role": "assistant", "content": ""}))
        for piece in split_pieces(reasoning):
            emit(chunk(self.reasoning_fields(piece)))
        pieces = split_pieces(content) if content else []
        for i, piece in enumerate(pieces):
            if self.mode == "mid_stream_error" and i == 1:
                emit({"error": {"message": "Internal server error: unexpected token in harmony stream",
                                "type": "InternalServerError", "param": None, "code": 503}})
                emit("[DONE]")
                return
            if self.mode == "malformed" and i == 1:  # a chunk cut short, as a broken proxy may pass it on
                emit(json.dumps(chunk({"content": piece}), separators=(",", ":"))[:40])
                emit("[DONE]")
                return
            if self.mode in ("cut", "broken") and i == 1:  # the connection closes mid-answer: no finish, no [DONE]
                return
            # The last content delta and the finish reason share one chunk, as vLLM may send them.
            emit(chunk({"content": piece}, finish if i == len(pieces) - 1 else None))
        if not pieces:
            emit(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            emit({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
                  "model": self.model, "choices": [], "usage": usage})
        emit("[DONE]")


def split_pieces(text: str, size: int = 24) -> list[str]:
    """Deltas of several tokens each, as with --stream-interval."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def error_body(message: str, type_: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


MODES = {
    "normal": "answer from the sources sent, quoting the sentence that best matches the question",
    "slow": "DELAY s between chunks (slow enough to try Stop)",
    "slow_start": "the headers, then DELAY s before the first chunk (vLLM reading a long prompt)",
    "no_headers": "answer /v1/models, then hold a chat request without sending a byte back",
    "dead": "accept every request and never answer",
    "error": "HTTP 500 to the chat request",
    "mid_stream_error": "an error event in the stream after the first piece of the answer",
    "malformed": "a chunk cut short after the first piece of the answer",
    "cut": "close the connection mid-answer (no finish reason, no [DONE])",
    "broken": "promise a 1 MB body, then close the connection mid-answer",
    "length": "reasoning uses the whole output budget: finish_reason length, no content",
    "length_unless_low": "as length, except at low effort",
    "empty": "finish with no content",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="modes:\n" + "\n".join(f"  {name:18s} {what}" for name, what in MODES.items()))
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (default 8001)")
    parser.add_argument("--api-key", default="", help="refuse requests without this bearer key (default: none)")
    parser.add_argument("--mode", default="normal", choices=MODES, metavar="MODE", help="how it answers (below)")
    parser.add_argument("--delay", type=float, default=0.2,
                        help="seconds: between chunks in slow mode, before the first in slow_start (default 0.2)")
    args = parser.parse_args()
    server = VllmStandin(api_key=args.api_key)
    server.mode, server.delay = args.mode, args.delay
    server._httpd.server_close()
    server._httpd = StandinServer(("127.0.0.1", args.port), server._handler())
    print(f"vLLM stand-in on {server.url}", flush=True)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()

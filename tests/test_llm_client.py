"""The vLLM client against the protocol-faithful stand-in: streaming, fields, every failure."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from inference.llm import ContextTooLong, GenerationFailed, LlmTimeout, LlmUnavailable, VllmClient
from tests.vllm_standin import VllmStandin

PROMPT = [
    {"role": "system", "content": "Answer from the sources and cite them."},
    {
        "role": "user",
        "content": "Sources:\n\n[S1] lease.txt\nThe tenant may terminate the lease on sixty days' notice to the landlord.\n\n"
        "Question: How much notice must the tenant give to terminate?",
    },
]


@pytest.fixture
def server():
    server = VllmStandin(api_key="k3y").start()
    yield server
    server.stop()


def client(server: VllmStandin, **kwargs) -> VllmClient:
    return VllmClient(server.url, model="gpt-oss-120b", api_key="k3y", **kwargs)


def collect(server: VllmStandin, **kwargs) -> dict:
    events: dict = {"reasoning": "", "content": "", "finish": "", "usage": None}
    for event in client(server, **kwargs).stream_chat(PROMPT, max_completion_tokens=1024):
        if event.kind == "usage":
            events["usage"] = event.data
        else:
            events[event.kind] += event.text
    return events


def test_client_reads_max_model_len_from_models(server: VllmStandin) -> None:
    assert client(server).max_model_len() == 131072


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content", "both"])
def test_client_streams_reasoning_then_answer_whatever_the_field_name(server: VllmStandin, field: str) -> None:
    server.reasoning_field = field

    events = collect(server)

    assert events["reasoning"].startswith("The user asks")
    assert events["reasoning"].count("The user asks") == 1
    assert events["content"] == "According to the sources, \"The tenant may terminate the lease on sixty days' notice to the landlord.\" [S1]."
    assert events["finish"] == "stop"
    assert events["usage"]["completion_tokens"] > 0 and "prompt_tokens_details" in events["usage"]


def test_client_sends_the_contract_fields(server: VllmStandin) -> None:
    list(client(server).stream_chat(PROMPT, max_completion_tokens=512, effort="high"))

    body = server.requests[-1]
    assert body["max_completion_tokens"] == 512 and body["reasoning_effort"] == "high"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_standin_stream_is_server_sent_events_ending_in_usage_and_done(server: VllmStandin) -> None:
    body = {"model": "gpt-oss-120b", "messages": PROMPT, "max_completion_tokens": 256, "stream": True,
            "stream_options": {"include_usage": True}}
    response = httpx.post(server.url + "/chat/completions", json=body, headers={"Authorization": "Bearer k3y"})

    lines = [line for line in response.text.split("\n\n") if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    usage_chunk = json.loads(lines[-2][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    first = json.loads(lines[0][6:])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_standin_reports_cached_prefix_on_repeat(server: VllmStandin) -> None:
    first = collect(server)["usage"]["prompt_tokens_details"]["cached_tokens"]
    second = collect(server)["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert first == 0 and second > 0 and second % 16 == 0


def test_client_maps_too_long_prompt_to_context_too_long(server: VllmStandin) -> None:
    server.max_model_len = 200

    with pytest.raises(ContextTooLong, match="too long"):
        collect(server)


def test_client_maps_a_server_error_to_a_failed_answer_and_a_gateway_error_to_unavailable(
        server: VllmStandin) -> None:
    server.mode = "error"  # vLLM's engine failed on the request: the server is there
    with pytest.raises(GenerationFailed, match="HTTP 500"):
        collect(server)
    client_ = client(server)
    assert isinstance(client_._http_error(503, "{}", chat=True), LlmUnavailable)  # a proxy with vLLM away
    assert isinstance(client_._http_error(500, "{}"), LlmUnavailable)  # to the first contact, /v1/models


@pytest.mark.parametrize("mode, message", [
    ("mid_stream_error", "failed mid-answer"),  # vLLM's error object inside the stream
    ("malformed", "malformed stream data"),  # a chunk that is not JSON
    ("cut", "ended without"),  # the connection closes before [DONE]
    ("broken", "broke mid-answer"),  # ... before the body it promised
])
def test_client_surfaces_a_broken_stream(server: VllmStandin, mode: str, message: str) -> None:
    server.mode = mode

    with pytest.raises(GenerationFailed, match=message):
        collect(server)


def test_client_times_out_on_a_slow_stream(server: VllmStandin) -> None:
    server.mode, server.delay = "slow", 1.0

    with pytest.raises(LlmTimeout, match=r"stopped answering in time \(nothing came for 0.3 s; DOCQA_LLM_TIMEOUT"):
        collect(server, timeout=0.3)


def test_client_times_out_on_a_stream_that_trickles_past_the_total(server: VllmStandin) -> None:
    server.mode, server.delay = "slow", 0.15  # each gap is well inside the limit; the whole is not

    with pytest.raises(LlmTimeout, match="did not finish its answer within 0.5 s; DOCQA_LLM_TIMEOUT sets the limit"):
        collect(server, timeout=0.5)


@pytest.mark.parametrize("mode", ["no_headers", "slow_start", "slow"])
def test_a_stop_signal_hangs_up_whether_or_not_anything_streams(server: VllmStandin, mode: str) -> None:
    """Set from another thread, the signal shuts the connection: the model server sees the client
    go (vLLM aborts the request), and the client raises Cancelled with the reason given, whether
    the server has not yet answered the request at all (no headers), is reading the prompt, or
    is writing."""
    import threading
    import time

    from inference.llm import Cancelled, StopSignal

    server.mode, server.delay = mode, 0.3 if mode == "slow" else 5.0
    stop = StopSignal()
    threading.Timer(0.5, stop.set, args=("Stopped by the asker",)).start()
    started, seen = time.monotonic(), []
    with pytest.raises(Cancelled, match="Stopped by the asker") as stopped:
        for event in client(server, timeout=30).stream_chat(PROMPT, max_completion_tokens=1024, stop=stop):
            seen.append(event.kind)
    assert time.monotonic() - started < 2 and "finish" not in seen
    assert stopped.value.delivered and len(server.requests) == 1  # the server had the request
    assert bool(seen) is (mode == "slow")  # a model still "reading" had sent nothing
    deadline = time.monotonic() + 10
    while not server.hangups and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.hangups == 1


def test_a_stop_signal_set_once_the_answer_is_whole_or_before_it_is_asked(server: VllmStandin) -> None:
    from inference.llm import Cancelled, StopSignal

    stop, kinds = StopSignal(), []
    for event in client(server).stream_chat(PROMPT, max_completion_tokens=1024, stop=stop):
        kinds.append(event.kind)
        if event.kind == "finish":
            stop.set("Stopped by the asker")  # too late to cut it: the rest comes, no Cancelled
    assert kinds[-2:] == ["finish", "usage"] and server.hangups == 0
    with pytest.raises(Cancelled):  # set before the request: nothing is sent
        next(client(server).stream_chat(PROMPT, max_completion_tokens=1024, stop=stop))
    assert len(server.requests) == 1


def test_client_times_out_on_a_dead_server(server: VllmStandin) -> None:
    server.mode = "dead"

    with pytest.raises(LlmTimeout, match=r"did not answer in time \(nothing came for 0.5 s; DOCQA_LLM_TIMEOUT"):
        client(server, timeout=0.5).max_model_len()


def test_a_stop_signal_gives_up_waiting_for_a_server_that_never_answers_its_first_contact(
        server: VllmStandin) -> None:
    """/v1/models hangs (no headers at all): the stop ends the wait at once, where the timeout
    would take its whole length; with the stop not set, the window and the faults come as ever."""
    import threading

    from inference.llm import Cancelled, StopSignal

    assert client(server).max_model_len(StopSignal()) == 131072
    server.mode = "dead"
    hung = client(server, timeout=30)
    probes = set()
    for _ in range(3):  # asked and stopped again and again: one request waits on the server, not three
        stop = StopSignal()
        threading.Timer(0.3, stop.set, ["Stopped by the asker"]).start()
        began = time.monotonic()
        with pytest.raises(Cancelled, match="Stopped by the asker"):
            hung.max_model_len(stop)
        assert time.monotonic() - began < 2
        probes.add(id(hung.probe))
    assert len(probes) == 1 and hung.probe is not None  # the one request still in flight
    with pytest.raises(LlmTimeout):  # not stopped: the server's own fault, raised in the asking thread
        client(server, timeout=0.5).max_model_len(StopSignal())


def test_client_reports_an_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LlmUnavailable, match="unreachable"):
        VllmClient(f"http://127.0.0.1:{port}/v1", model="gpt-oss-120b").max_model_len()


def test_a_failure_says_whether_the_request_may_have_reached_the_server(server: VllmStandin) -> None:
    """What an audit of a failed answer rests on: only a connection never made sent nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LlmUnavailable) as refused:
        list(VllmClient(f"http://127.0.0.1:{port}/v1", model="gpt-oss-120b").stream_chat(PROMPT,
                                                                                          max_completion_tokens=64))
    assert refused.value.delivered is False
    server.mode = "error"  # the server had the whole request when it answered 500
    with pytest.raises(GenerationFailed) as failed:
        collect(server)
    assert failed.value.delivered is True
    server.mode, server.delay = "slow", 1.0  # sent, then no answer in time
    with pytest.raises(LlmTimeout) as late:
        collect(server, timeout=0.3)
    assert late.value.delivered is True


def test_client_reports_a_refused_api_key(server: VllmStandin) -> None:
    with pytest.raises(LlmUnavailable, match="refused the API key .*check DOCQA_LLM_API_KEY"):
        VllmClient(server.url, model="gpt-oss-120b", api_key="wrong").max_model_len()
    with pytest.raises(LlmUnavailable, match="wants an API key and none is set .*set DOCQA_LLM_API_KEY"):
        VllmClient(server.url, model="gpt-oss-120b").max_model_len()


def test_client_reports_an_unknown_model(server: VllmStandin) -> None:
    with pytest.raises(LlmUnavailable, match="does not serve"):
        list(VllmClient(server.url, model="gpt-4", api_key="k3y").stream_chat(PROMPT, max_completion_tokens=8))
    with pytest.raises(LlmUnavailable, match=r"does not list 'gpt-4' in /v1/models \(it serves: gpt-oss-120b\)"):
        VllmClient(server.url, model="gpt-4", api_key="k3y").max_model_len()


def test_the_standins_help_names_every_mode_it_has_and_refuses_others() -> None:
    import re
    import subprocess
    import sys

    from tests import vllm_standin

    source = Path(vllm_standin.__file__).read_text()
    used = set(re.findall(r'mode (?:==|in) \(?((?:"[a-z_]+"(?:, )?)+)', source))
    named = {m for group in used for m in re.findall(r'"([a-z_]+)"', group)}
    assert named and named <= set(vllm_standin.MODES) and "normal" in vllm_standin.MODES
    shown = subprocess.run([sys.executable, "-m", "tests.vllm_standin", "--help"], capture_output=True, text=True)
    assert all(f"  {mode} " in shown.stdout for mode in vllm_standin.MODES)
    refused = subprocess.run([sys.executable, "-m", "tests.vllm_standin", "--mode", "bogus"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "invalid choice: 'bogus'" in refused.stderr

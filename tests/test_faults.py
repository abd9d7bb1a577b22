"""What the asker is told of a failure (docqa.faults): every kind of fault docqa raises has plain
words, the operator's message never stands in for them, and answers recorded before kinds
existed are given one from their message."""

from __future__ import annotations

import importlib

import httpx
import pytest

from docqa.audit_views import BadFilter
from docqa.faults import PLAIN, kind_of, plain, recorded_error
from docqa.services import BrokerDown
from inference.answer import ReasoningExhausted, Stopped
from inference.llm import (
    Cancelled,
    ContextTooLong,
    GenerationFailed,
    LlmMisconfigured,
    LlmTimeout,
    LlmUnavailable,
    VllmClient,
    unreachable,
)
from inference.rerank import RerankerMissing
from ingest.errors import DocqaError, ParseError, StoreError, StoreLocked, UnsupportedFile

# Errors whose message is for the person who met them: the asker's own to act on (or, for files,
# shown on the documents page as their reason). Every other error must have a kind with words.
# An audit filter that is no date is the auditor's own to correct; a broker that cannot be reached
# is said to whoever started the sync, as it is, with its fix.
ASKERS_OWN = {DocqaError, Stopped, UnsupportedFile, ParseError, BadFilter, BrokerDown}

backfill = importlib.import_module("docqa.migrations.0016_answer_error_kind")


def subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= subclasses(sub)
    return found


def test_every_fault_docqa_raises_is_told_in_plain_words_or_is_the_askers_own() -> None:
    for cls in subclasses(DocqaError):
        if cls.__module__.startswith(("docqa", "ingest", "inference")):
            assert (cls.kind == "") is (cls in ASKERS_OWN), cls
            assert cls.kind == "" or cls.kind in PLAIN, cls


@pytest.mark.parametrize("error, kind", [
    (LlmUnavailable("the language model at http://10.0.0.5:8000 is unreachable"), "unavailable"),
    (LlmMisconfigured("the model's window leaves -2,192 tokens: lower DOCQA_LLM_RESERVED_OUTPUT"), "setup"),
    (LlmTimeout("did not answer in time"), "timeout"),
    (ContextTooLong("the question and sources are too long for the model: HTTP 400"), "too_long"),
    (ReasoningExhausted("whole output budget"), "reasoning"),
    (GenerationFailed("malformed stream data"), "failed"),
    (Cancelled("Stopped by the asker"), "stopped"),
    (StoreError("the vector store failed: OSError"), "store"),
    (StoreLocked("held by pid 4242"), "store"),
    (RerankerMissing("DOCQA_RERANK_MODEL is /srv/x"), "search_setup"),
    (KeyError("text"), "internal"),
])
def test_a_fault_is_told_by_its_kind_never_in_the_operators_words(error: Exception, kind: str) -> None:
    assert kind_of(error) == kind
    told = plain(kind, str(error))
    assert told == PLAIN[kind] and str(error) not in told


def test_the_askers_own_error_is_shown_as_it_is_and_an_unknown_kind_as_internal() -> None:
    mine = DocqaError("a budget of 10 tokens is out of range: give 1,000 to 200,000")
    assert kind_of(mine) == "" and plain("", str(mine)) == "A budget of 10 tokens is out of range: give 1,000 to 200,000."
    assert plain("", "nothing to answer from.") == "Nothing to answer from."
    # The asker's own error told as a sentence says nothing more than its message: no "ask your
    # administrator", no second box for staff.
    from docqa.faults import says_more

    assert not says_more(str(mine), plain("", str(mine)))
    assert says_more("HTTP 500 at http://10.0.0.5", plain("failed", "HTTP 500 at http://10.0.0.5"))
    assert plain("renamed-kind", "HTTP 500 at http://10.0.0.5") == PLAIN["internal"]


def test_the_recorded_error_is_never_empty_and_names_an_unexpected_errors_class() -> None:
    assert recorded_error(AssertionError()) == "AssertionError"
    assert recorded_error(KeyError("text")) == "KeyError: 'text'"
    assert recorded_error(GenerationFailed("the language model failed mid-answer")) == (
        "the language model failed mid-answer")
    assert recorded_error(GenerationFailed()) == "GenerationFailed"


def test_answers_recorded_before_kinds_get_the_kind_of_their_message() -> None:
    """The migration's reading of old messages agrees with the errors' own kinds, on the
    messages the client really writes."""
    client = VllmClient("http://10.0.0.5:8000", model="gpt-oss-120b")
    messages = [
        (unreachable(client.root, httpx.ConnectError("[Errno 111] Connection refused")), "unavailable"),
        (str(client._http_error(500, '{"message": "EngineCore encountered an issue."}')), "unavailable"),
        (str(client._http_error(401, "no")), "unavailable"),
        (str(client._http_error(400, '{"message": "This model\'s maximum context length is 1"}')), "too_long"),
        (str(client._http_error(422, "bad")), "failed"),
        ("the language model at http://x did not answer in time (read timeout 5 s)", "timeout"),
        ("the language model at http://x did not finish its answer within 300 s; DOCQA_LLM_TIMEOUT sets the limit",
         "timeout"),
        ("the language model sent malformed stream data: 'x'", "failed"),
        ("the language model's stream ended without [DONE]", "failed"),
        ("the language model failed mid-answer: boom", "failed"),
        ("the connection to the language model broke mid-answer (x)", "failed"),
        ("the model used its whole output budget on reasoning and wrote no answer at low effort already; give it "
         "more room", "reasoning"),
        ("the model's window leaves -2,192 tokens for the prompt once the output is reserved", "setup"),
        ("the vector store failed: OSError: disk full", "store"),
        ("DOCQA_RERANK_MODEL is /srv/x, which holds no model", "search_setup"),
        ("nothing to answer from: no document is indexed in this matter yet", ""),
        ("no passage fits a budget of 600 tokens: the instructions and the question leave", ""),
        ("KeyError: 'text'", "internal"),
    ]
    for message, kind in messages:
        assert backfill.kind_of_message(message) == kind, message


@pytest.mark.django_db
def test_the_migration_gives_old_failed_answers_their_kind() -> None:
    from django.apps import apps

    from docqa.models import Answer, Matter, Question

    matter = Matter.objects.create(slug="old", name="old")
    errors = {"": "", "the language model at http://10.0.0.5:8000 is unreachable (refused)": "unavailable",
              "nothing matched: the question has no words to search for": "", "KeyError: 'text'": "internal"}
    for error in errors:
        question = Question.objects.create(matter=matter, actor="cli", text="q", budget=1000)
        Answer.objects.create(question=question, mode="error" if error else "llm", error=error)

    backfill.backfill(apps, None)

    assert {a.error: a.error_kind for a in Answer.objects.all()} == errors

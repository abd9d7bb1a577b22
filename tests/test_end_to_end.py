"""The whole path on the embedded default: a folder of real documents to a cited answer."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from docqa.models import AuditEvent, Citation, Document, DocumentStatus, IngestItem, Question
from tests.conftest import subset_questions

pytestmark = pytest.mark.django_db(transaction=True)


def run_command(*args: str, stdin: str | None = None, monkeypatch: Any = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command(*args, stdout=out)
    return out.getvalue()


def ingest(folder: Path) -> dict[str, Any]:
    return json.loads(run_command("ingest", str(folder), "--matter", "acme", "--json"))


def ask(question: str, *extra: str) -> dict[str, Any]:
    return json.loads(run_command("ask", "--matter", "acme", "--json", *extra, question))


def test_ingest_indexes_every_format_of_the_folder(data_dir: Path, docs_folder: Path) -> None:
    report = ingest(docs_folder)

    assert report["counts"] == {
        "new": 9, "changed": 0, "retried": 0, "unchanged": 0, "deleted": 0, "moved": 0,
        "indexed": 9, "skipped": 0, "failed": 0, "cancelled": 0,
    }
    assert report["failures"] == []
    pdf = Document.objects.get(path__startswith="pdf/")
    assert pdf.status == DocumentStatus.INDEXED
    assert pdf.text is not None and pdf.text.page_count and pdf.text.page_count > 1
    assert AuditEvent.objects.filter(action="ingest.finish").count() == 1
    items = IngestItem.objects.filter(change="new")
    assert all(i.attempts == 1 and i.started_at and i.finished_at and i.chunks for i in items)
    assert items.get(path__startswith="pdf/").pages == pdf.text.page_count


def test_ingest_progress_line_shows_files_pages_chunks_rate_and_eta() -> None:
    from docqa.actions import RunStats
    from docqa.management.commands.ingest import progress_line

    line = progress_line(RunStats(work=120, done=45, failed=2, pages=1234, chunks=5678, elapsed=15.0), width=8)

    assert line == "[###.....] 45/120 files · 1,234 pages · 5,678 chunks · 3.0 files/s · ETA 0:25 · 2 failed"


def test_ask_search_only_finds_the_gold_document(data_dir: Path, docs_folder: Path) -> None:
    ingest(docs_folder)

    for question in subset_questions():
        result = ask(question["question"])
        gold = question["answers"][0]["file"]
        assert result["mode"] == "search"
        assert "No language model is connected" in result["answer"]
        assert gold in {s["path"] for s in result["sources"]}
        assert sum(s["tokens"] for s in result["sources"]) <= 16384
        # For a person to read: best first, numbered in that order.
        scores = [s["score"] for s in result["sources"]]
        assert scores == sorted(scores, reverse=True)
        assert [s["label"] for s in result["sources"]] == [f"S{n}" for n in range(1, len(scores) + 1)]


def test_ask_scope_searches_only_that_folder(data_dir: Path, docs_folder: Path) -> None:
    ingest(docs_folder)

    result = ask("What is the maximum pressure of the hydraulic pump?", "--scope", "generated", "--scope", "pdf")
    assert result["sources"] and {s["path"].split("/")[0] for s in result["sources"]} <= {"generated", "pdf"}
    assert Question.objects.get(id=result["question_id"]).scope == ["generated", "pdf"]
    with pytest.raises(CommandError, match="no indexed document in acme is under no/such"):
        ask("Anything?", "--scope", "no/such")


def test_ask_with_llm_gives_verified_citations(data_dir: Path, docs_folder: Path, standin: Any) -> None:
    ingest(docs_folder)

    for question in subset_questions():
        result = ask(question["question"], "--effort", "low")
        assert result["mode"] == "llm"
        assert question["answers"][0]["file"] in {s["path"] for s in result["sources"]}
        assert result["citations"], result["answer"]
        assert all(c["verified"] for c in result["citations"])
        assert result["usage"]["prompt_tokens"] <= 131072 - 4096  # low effort keeps 4,096 for the output
    # A budget over the model's window is cut to it, and the answer says so.
    assert result["usage"]["budget"] == 131072 - 4096 and not any("window" in n for n in result["notes"])
    wide = ask(question["question"], "--effort", "low", "--budget", "500000")
    assert wide["usage"]["budget"] == 131072 - 4096
    assert "A budget of 500,000 tokens is more than the model's window leaves" in " ".join(wide["notes"])
    sent = standin.requests[-1]
    assert sent["reasoning_effort"] == "low" and sent["stream"] is True
    assert sent["cache_salt"].startswith("matter-")
    assert "[S1]" in sent["messages"][1]["content"]
    assert Citation.objects.filter(verified=True).count() >= 2
    # The audit trail records the question, then what the model was shown and what it answered.
    asked, answered = (AuditEvent.objects.filter(action__startswith="question.").order_by("-id")[:2])[::-1]
    assert asked.action == "question.ask" and asked.detail["text"] == question["question"]
    assert answered.action == "question.answer" and answered.detail["answer"] == result["answer"]
    assert answered.detail["effort"] == "low" and answered.detail["model"] and answered.detail["usage"]["prompt_tokens"]
    shown = {s["label"]: s["text"] for s in result["sources"]}
    for source in answered.detail["sources"]:
        assert source["sha256"] == hashlib.sha256(shown[source["label"]].encode("utf-8")).hexdigest()
        assert source["version"]
    assert [c["verified"] for c in answered.detail["citations"]] == [c["verified"] for c in result["citations"]]


def test_follow_up_sends_the_earlier_answer_without_reasoning(data_dir: Path, docs_folder: Path, standin: Any) -> None:
    ingest(docs_folder)
    question = subset_questions()[0]["question"]
    first = ask(question, "--effort", "low")

    follow = ask("And can that be assigned to an affiliate?", "--effort", "low", "--conversation", str(first["conversation"]))

    assert follow["conversation"] == first["conversation"] and follow["mode"] == "llm"
    messages = standin.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    # The sources ride with the first question, as when it was asked alone; the follow-up comes last.
    assert messages[1]["content"].startswith("Sources:\n\n[S1]") and messages[1]["content"].endswith(f"Question: {question}")
    assert messages[2]["content"] == first["answer"] and "reasoning" not in messages[2]
    assert messages[3]["content"] == "Question: And can that be assigned to an affiliate?"
    if follow["sources"] == first["sources"]:  # the same sources: the whole first prompt is served from cache
        assert messages[:2] == standin.requests[-2]["messages"]
        assert follow["usage"]["cached_tokens"] >= follow["usage"]["source_tokens"]
    cited = Citation.objects.filter(status="quote verified").first()
    assert cited is not None and cited.document_id and cited.version and cited.end > cited.start
    # A verified citation points at its quote's own characters in the document, not the whole passage.
    text = Document.objects.get(id=cited.document_id).text.text
    assert " ".join(text[cited.start : cited.end].split()) == " ".join(cited.quote.split()).strip(" ,.;:")
    with pytest.raises(CommandError, match="no conversation 999"):
        ask("Anything?", "--conversation", "999")
    # The same sources again: vLLM's prefix cache serves the repeated prompt, and usage says so.
    again = ask(question, "--effort", "low", "--show-reasoning")
    assert again["usage"]["cached_tokens"] > 0 and again["usage"]["first_token_ms"] is not None
    assert again["reasoning"] and "reasoning" not in first


class Terminal(io.StringIO):
    """Standard output that keeps each write apart, and can be interrupted (Ctrl-C) at the Nth."""

    def __init__(self, interrupt_at: int | None = None):
        super().__init__()
        self.writes: list[str] = []
        self.interrupt_at = interrupt_at

    def write(self, text: str) -> int:
        self.writes.append(text)
        if self.interrupt_at is not None and len(self.writes) == self.interrupt_at:
            raise KeyboardInterrupt
        return super().write(text)


def test_ask_writes_the_answer_as_it_streams_and_names_the_question(data_dir: Path, docs_folder: Path,
                                                                      standin: Any) -> None:
    from docqa.models import Answer

    ingest(docs_folder)
    question = subset_questions()[0]["question"]
    out = Terminal()

    call_command("ask", "--matter", "acme", "--effort", "low", question, stdout=out)

    asked = Question.objects.latest("id")
    answer = Answer.objects.get(question=asked).text
    text = out.getvalue()
    assert text.startswith(answer) and text.count(answer) == 1  # written as it came, not again at the end
    streamed = out.writes[:out.writes.index(next(w for w in out.writes if "Citations:" in w))]
    assert len(streamed) > 3 and "".join(streamed).strip() == answer
    assert f"Question {asked.id} in conversation {asked.conversation_id}: ask a follow-up" in text
    assert ask(question, "--effort", "low")["question_id"] == Question.objects.latest("id").id


def test_a_failed_answer_is_told_once_not_also_as_a_log_line_inside_the_streamed_text(
        data_dir: Path, docs_folder: Path, standin: Any, caplog: Any) -> None:
    ingest(docs_folder)
    standin.mode = "mid_stream_error"
    out = Terminal()

    with pytest.raises(CommandError, match="failed mid-answer"):
        call_command("ask", "--matter", "acme", "--effort", "low", subset_questions()[0]["question"], stdout=out)

    assert "(The model failed before it finished: the text above is not kept as an answer.)" in out.getvalue()
    assert not [r for r in caplog.records if getattr(r, "event", "") == "question.failed"]


def test_ctrl_c_on_ask_says_in_one_line_which_question_was_recorded_as_stopped(data_dir: Path, docs_folder: Path,
                                                                              standin: Any) -> None:
    from docqa.models import Answer

    ingest(docs_folder)
    out = Terminal(interrupt_at=3)  # Ctrl-C while the answer streams

    with pytest.raises(CommandError) as raised:
        call_command("ask", "--matter", "acme", "--effort", "low", subset_questions()[0]["question"], stdout=out)

    asked = Question.objects.latest("id")
    assert raised.value.returncode == 130
    assert str(raised.value).startswith(f"interrupted: question {asked.id} is recorded as stopped")
    assert Answer.objects.get(question=asked).mode == "stopped"


def test_a_search_only_follow_up_is_searched_with_the_question_before_it(data_dir: Path, docs_folder: Path) -> None:
    ingest(docs_folder)
    first = subset_questions()[0]  # the Holiday RV endorsement agreement
    asked = ask(first["question"], "--budget", "2000")
    follow_up = "And which law governs it?"

    alone = ask(follow_up, "--budget", "2000")
    follow = ask(follow_up, "--budget", "2000", "--conversation", str(asked["conversation"]))

    assert asked["mode"] == follow["mode"] == "search" and follow["conversation"] == asked["conversation"]
    gold = first["answers"][0]["file"]

    def share(result: dict[str, Any]) -> float:
        return sum(s["tokens"] for s in result["sources"] if s["path"] == gold) / sum(s["tokens"] for s in result["sources"])

    assert share(follow) > 0.5 > share(alone), (share(follow), share(alone))


def test_the_question_before_a_follow_up_is_the_last_asked_whatever_became_of_it(data_dir: Path) -> None:
    """A question that failed (the model down, no room) is still what "it" in the follow-up means;
    one that retention expired is gone."""
    from django.utils import timezone

    from docqa.actions import previous_question
    from docqa.models import Answer, Conversation, Matter

    matter = Matter.objects.create(slug="m", name="M")
    thread = Conversation.objects.create(matter=matter, actor="test")
    for text, mode in (("About the lease?", "llm"), ("About the deed?", "search"), ("About the loan?", "error")):
        question = Question.objects.create(matter=matter, conversation=thread, actor="test", text=text, budget=4096)
        Answer.objects.create(question=question, mode=mode, error="unreachable" if mode == "error" else "")

    assert previous_question(thread) == "About the loan?"
    Question.objects.filter(text="About the loan?").update(expired_at=timezone.now())
    assert previous_question(thread) == "About the deed?"
    assert previous_question(None) is None


def test_ask_budget_limits_sources_and_reports_what_was_left_out(data_dir: Path, docs_folder: Path, settings: Any) -> None:
    ingest(docs_folder)
    question = subset_questions()[0]["question"]

    small = ask(question, "--budget", "1500")

    assert 0 < sum(s["tokens"] for s in small["sources"]) < 1500
    assert small["dropped"] and all(d["reason"] == "no room in the token budget" for d in small["dropped"])
    assert all(d["document"] and d["path"] and d["end"] > d["start"] for d in small["dropped"])
    text = run_command("ask", "--matter", "acme", "--budget", "1500", question)
    first = small["dropped"][0]
    assert f"Left out for lack of room: {len(small['dropped'])} passages" in text
    assert f"  {first['path']}" in text and f"chars {first['start']}-{first['end']} ({first['tokens']} tokens)" in text
    # A budget out of range is refused before anything is recorded; one that leaves no room for
    # any passage says so rather than answering from nothing ("the sources do not say").
    asked = Question.objects.count()
    for budget in ("-5", "0", "10", "2000000"):
        with pytest.raises(CommandError, match=f"a budget of {int(budget):,} tokens is out of range"):
            ask(question, "--budget", budget)
    assert Question.objects.count() == asked
    wordy = "Reading the whole agreement with care, " * 80 + question
    with pytest.raises(CommandError, match="no passage fits a budget of 800 tokens: .* give a larger budget"):
        ask(wordy, "--budget", "800")
    run_command("matter", "create", "empty")
    out = io.StringIO()
    with pytest.raises(CommandError, match="nothing to answer from: no document is indexed in this matter yet"):
        call_command("ask", "--matter", "empty", "--json", question, stdout=out)
    assert json.loads(out.getvalue()) == {"question": question, "question_id": Question.objects.latest("id").id,
                                          "error": "nothing to answer from: no document is indexed in this matter yet"}
    settings.RETRIEVAL = "sparse"  # a question of stopwords alone has no lexical vector
    with pytest.raises(CommandError, match="nothing matched: the question has no words to search for in sparse"):
        ask("What is it and who are they?")


def test_resync_skips_unchanged_and_follows_changes_and_deletions(data_dir: Path, docs_folder: Path) -> None:
    (docs_folder / "locked.pdf").write_bytes(b"%PDF-1.7 not a real PDF")  # fails, and fails again
    ingest(docs_folder)
    (docs_folder / "generated" / "notes.md").write_text("# Notes\n\nThe pump is rated for 350 bar.\n")
    (docs_folder / "generated" / "policy.html").unlink()

    report = ingest(docs_folder)

    assert report["counts"]["unchanged"] == 7
    assert report["counts"]["changed"] == 1 and report["counts"]["deleted"] == 1
    # The file that failed is tried again, and said to be: it did not change.
    assert report["counts"]["retried"] == 1 and report["counts"]["failed"] == 1
    text = run_command("ingest", str(docs_folder), "--matter", "acme")
    assert "changed 0, retried 1, unchanged 8" in text and "  failed: locked.pdf: " in text
    assert "1 file failed; `manage.py runs retry" in text
    assert Document.objects.get(path="generated/policy.html").status == DocumentStatus.DELETED
    paths = {s["path"] for s in ask("How long are engineering drawings retained?")["sources"]}
    assert "generated/policy.html" not in paths


def test_resync_brings_back_a_file_that_was_deleted(data_dir: Path, docs_folder: Path) -> None:
    policy = docs_folder / "generated" / "policy.html"
    saved = policy.read_bytes()
    ingest(docs_folder)
    policy.unlink()
    ingest(docs_folder)
    policy.write_bytes(saved)

    report = ingest(docs_folder)

    assert report["counts"]["new"] == 1 and report["counts"]["indexed"] == 1
    assert Document.objects.get(path="generated/policy.html").status == DocumentStatus.INDEXED
    paths = {s["path"] for s in ask("How long are engineering drawings retained?")["sources"]}
    assert "generated/policy.html" in paths


def test_ask_batch_reads_questions_from_stdin(data_dir: Path, docs_folder: Path, monkeypatch: Any) -> None:
    ingest(docs_folder)
    lines = ('{"id": "q-1", "question": "What is the maximum pressure of the pump?"}\nWho pays invoices?\n'
             '{"id": "q-3", "text": "no question field"}\n')

    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    written = io.StringIO()
    with pytest.raises(CommandError, match="1 of 3 questions failed"):  # the line without a question
        call_command("ask", "--matter", "acme", "--batch", stdout=written)
    out = written.getvalue()

    results = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in results] == ["q-1", 2, "q-3"]
    assert results[2] == {"id": "q-3", "error": "no question on this line"}
    assert "generated/notes.md" in {s["path"] for s in results[0]["sources"]}


def test_a_second_run_on_a_folder_waits_for_the_first(data_dir: Path, docs_folder: Path, settings: Any) -> None:
    from django.core.management.base import CommandError

    from docqa.models import IngestItem, IngestRun, Matter, Source

    # Services mode: worker processes may hold the first run. (In the embedded default the queue
    # lives in the process that started the run, so the next command closes such a run instead:
    # tests/test_runs.py.)
    settings.EMBEDDED_WORKER = False

    matter = Matter.objects.create(slug="acme", name="acme")
    source = Source.objects.create(matter=matter, root=str(docs_folder.resolve()))
    busy = IngestRun.objects.create(matter=matter, source=source, actor="someone")
    IngestItem.objects.create(run=busy, path="a.txt", change="new")

    with pytest.raises(CommandError, match=f"run {busy.id} .* still in progress"):
        ingest(docs_folder)


def test_resync_follows_a_moved_file_without_reembedding(data_dir: Path, docs_folder: Path) -> None:
    ingest(docs_folder)
    before = Document.objects.get(path="generated/notes.md")
    (docs_folder / "archive").mkdir()
    (docs_folder / "generated" / "notes.md").rename(docs_folder / "archive" / "design-notes.md")

    report = ingest(docs_folder)

    assert report["counts"]["moved"] == 1
    assert report["counts"]["new"] == 0 and report["counts"]["deleted"] == 0 and report["counts"]["indexed"] == 0
    moved = Document.objects.get(id=before.id)
    assert moved.path == "archive/design-notes.md" and moved.chunk_count == before.chunk_count
    paths = {s["path"] for s in ask("What is the maximum pressure of the hydraulic pump?")["sources"]}
    assert "archive/design-notes.md" in paths and "generated/notes.md" not in paths

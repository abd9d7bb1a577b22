"""manage.py ask --matter SLUG [--json] [--budget N] [--effort E] [--batch] "QUESTION"."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import acting_as, claim_embedded, matter_as, require_database, shutdown, tokens_arg
from docqa.models import Answer, Conversation, Matter, Role
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "Answer a question from one matter's documents, with verified citations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question", nargs="?", help="the question (omit with --batch)")
        parser.add_argument("--matter", required=True)
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--budget", type=tokens_arg,
                            help="prompt token budget: 16384, 16,384 or 16k (default: the model's window minus output)")
        parser.add_argument("--effort", choices=["low", "medium", "high"], default=settings.LLM_EFFORT,
                            help="reasoning effort (default DOCQA_LLM_EFFORT, medium)")
        parser.add_argument("--batch", action="store_true", help="questions on stdin, one JSON result per line")
        parser.add_argument("--user", help="act as this docqa account (a reader of the matter); default: the operator")
        parser.add_argument("--conversation", type=int, help="continue this conversation (a follow-up question)")
        parser.add_argument("--scope", action="append", metavar="FOLDER",
                            help="search only the documents under this folder or at this path (repeatable; with "
                                 "several synced folders it may start with a folder's name, as the sources are named)")
        parser.add_argument("--show-reasoning", action="store_true",
                            help="also print the model's reasoning (not checked like the answer)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch"] == bool(options["question"]):
            raise CommandError("give one QUESTION, or --batch with questions on standard input")
        require_database()
        options["actor"], options["account"] = acting_as(options["user"])
        matter = matter_as(options["account"], options["matter"], Role.VIEWER, doing="ask in")
        claim_embedded("ask command")
        told = AlreadyTold()
        logging.getLogger("docqa.actions").addFilter(told)
        try:
            if options["batch"]:
                self.run_batch(matter, options)
            else:
                self.run_one(matter, options)
        finally:
            logging.getLogger("docqa.actions").removeFilter(told)
            shutdown()

    def ask(self, matter: Matter, text: str, options: dict[str, Any]) -> dict[str, Any]:
        conversation = None
        if options["conversation"]:
            conversation = Conversation.objects.filter(id=options["conversation"], matter=matter).first()
            if conversation is not None and options["account"] is not None and conversation.user_id != options["account"].id:
                conversation = None  # someone else's thread: as if it did not exist
            if conversation is None:
                raise DocqaError(f"no conversation {options['conversation']} in matter {matter.slug}")
        outcome = actions.do_ask(
            matter, text, actor=options["actor"], user=options["account"], budget=options["budget"],
            effort=options["effort"], conversation=conversation, on_event=options["on_event"],
            scope=[s for s in options["scope"] or [] if s.strip()] or None,
        )
        assert outcome.result is not None
        shown = outcome.result.with_reasoning() if options["show_reasoning"] else outcome.result.as_dict()
        return {**shown, "question_id": outcome.question.id, "conversation": outcome.question.conversation_id}

    def run_one(self, matter: Matter, options: dict[str, Any]) -> None:
        # Plain text: the answer is written as the model streams it; JSON waits for the whole.
        live = None if options["json"] else LiveAnswer(self.stdout, options["show_reasoning"])
        options["on_event"] = live or AskedWatch()
        try:
            result = self.ask(matter, options["question"], options)
            options["on_event"].question = None  # answered whole: a Ctrl-C from here on stops nothing
        except DocqaError as exc:
            found = found_for(exc)
            if live is not None:
                live.end()
                if live.wrote_answer:
                    self.stdout.write("(The model failed before it finished: the text above is not kept as an answer.)")
            if options["json"]:  # a script reading standard output gets the reason too (and the exit status)
                self.stdout.write(json.dumps({"question": options["question"], **question_id(exc),
                                              "error": str(exc), **kind_of_fault(exc), **(found or {})}))
            elif found:  # the model failed: the passages found are shown all the same
                self.stdout.write(render_text({"answer": "", "citations": [], **found}))
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:  # Ctrl-C: do_ask has recorded the question as stopped; one line says so
            if live is not None:
                live.end()
            raise CommandError(interrupted((live or options["on_event"]).question), returncode=130) from None
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            assert live is not None
            live.end()
            self.stdout.write(render_text(result, answer_shown=live.wrote_answer, reasoning_shown=live.wrote_reasoning))

    def run_batch(self, matter: Matter, options: dict[str, Any]) -> None:
        asked = failed = 0
        watch = options["on_event"] = AskedWatch()
        try:
            for number, line in enumerate(sys.stdin, start=1):
                line = line.strip()
                if not line:
                    continue
                asked += 1
                qid, text = parse_batch_line(line, number)
                if not text:
                    failed += 1
                    self.stdout.write(json.dumps({"id": qid, "error": "no question on this line"}))
                    continue
                try:
                    result = {"id": qid, "question": text, **self.ask(matter, text, options)}
                except DocqaError as exc:
                    failed += 1
                    result = {"id": qid, "question": text, **question_id(exc), "error": str(exc),
                              **kind_of_fault(exc), **(found_for(exc) or {})}
                watch.question = None  # recorded whole: a Ctrl-C while the next line is read stops nothing
                self.stdout.write(json.dumps(result))
                self.stdout.flush()
        except KeyboardInterrupt:  # the lines written so far stand; the one being answered is recorded as stopped
            raise CommandError(interrupted(watch.question) + "; the lines written before it stand",
                               returncode=130) from None
        if failed:  # every line is written first; a script still learns from the exit status
            raise CommandError(f"{failed} of {asked} questions failed: their lines carry \"error\"")


def question_id(exc: DocqaError) -> dict[str, int]:
    """The recorded question a failure belongs to; nothing when it failed before one was recorded."""
    return {"question_id": exc.question} if exc.question else {}


def kind_of_fault(exc: DocqaError) -> dict[str, str]:
    """A fault's kind (docqa.faults), as the API names it; nothing when the message is the asker's own."""
    return {"error_kind": exc.kind} if exc.kind else {}


def found_for(exc: DocqaError) -> dict[str, Any] | None:
    """What was kept for a question the model failed: its passages (as the model was sent them, or
    best first when it read nothing), those left out, notes and figures, as `ask --json` shows
    them; None when nothing was."""
    answer = Answer.objects.filter(question_id=exc.question).first() if exc.question else None
    if answer is None or not answer.sources:
        return None
    return {"mode": answer.mode, "sources": answer.sources, "dropped": answer.dropped, "notes": answer.notes,
            "usage": answer.usage, "question_id": answer.question_id, "conversation": answer.question.conversation_id}


def parse_batch_line(line: str, number: int) -> tuple[Any, str]:
    """(id, question) from a plain-text or JSON line; the question is "" when a JSON line has none."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return number, line
        if isinstance(record, dict):
            return record.get("id", number), str(record.get("question") or "").strip()
    return number, line


class AlreadyTold(logging.Filter):
    """Keeps a failed question's warning out of the asker's terminal, where it would land in the
    middle of the streamed text: the command says the same as its error (or in the batch line).
    With JSON logs (DOCQA_LOG_FORMAT=json, for a log shipper) it is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return settings.LOG_FORMAT == "json" or getattr(record, "event", "") != "question.failed"


class AskedWatch:
    """Keeps the id of the question being answered (do_ask's "asked" event), to name it on Ctrl-C."""

    def __init__(self) -> None:
        self.question: int | None = None

    def __call__(self, kind: str, data: Any) -> None:
        if kind == "asked":
            self.question = data["question"]


class LiveAnswer(AskedWatch):
    """Writes the answer (and, when asked for, the reasoning) as the model streams it."""

    def __init__(self, out: Any, show_reasoning: bool):
        super().__init__()
        self.out, self.show_reasoning = out, show_reasoning
        self.wrote_answer = self.wrote_reasoning = False
        self.at_line_start = True

    def __call__(self, kind: str, data: Any) -> None:
        super().__call__(kind, data)
        if kind == "status" and "retrying" in str(data) and (self.wrote_reasoning or self.wrote_answer):
            self.end()  # the model is asked again: its second reasoning starts under its own head
            self.write(f"({data})\n")
            self.wrote_reasoning = self.wrote_answer = False
        elif kind == "reasoning" and self.show_reasoning and data:
            if not self.wrote_reasoning:
                self.write(f"{REASONING_HEAD}\n")
                self.wrote_reasoning = True
            self.write(data)
        elif kind == "content" and data:
            if not self.wrote_answer:
                if self.wrote_reasoning:
                    self.write("\n\n")
                data = data.lstrip()  # as the answer kept is stripped
                if not data:
                    return
                self.wrote_answer = True
            self.write(data)

    def write(self, text: str) -> None:
        self.out.write(text, ending="")
        self.out.flush()
        self.at_line_start = text.endswith("\n")

    def end(self) -> None:
        """Close the streamed text with a blank line, so what follows starts on its own."""
        if self.wrote_answer or self.wrote_reasoning:
            self.write("\n" if self.at_line_start else "\n\n")


def interrupted(question: int | None) -> str:
    if question is None:  # before a question was recorded, or after it was recorded whole
        return "interrupted"
    return (f"interrupted: question {question} is recorded as stopped "
            f"with what was kept (the audit page shows it: /audit/?question={question})")


REASONING_HEAD = "Reasoning (the model's own notes, not checked like the answer):"
DROPPED_SHOWN = 10  # passages left out, listed best first


def render_text(result: dict[str, Any], answer_shown: bool = False, reasoning_shown: bool = False) -> str:
    """The result as text; without the answer or the reasoning that were written as they streamed."""
    lines = [result["answer"], ""] if result["answer"] and not answer_shown else []  # none when the model failed
    if result.get("reasoning") and not (reasoning_shown or answer_shown):
        lines = [REASONING_HEAD, result["reasoning"], "", *lines]
    lines += [f"Note: {note}" for note in result.get("notes", [])]
    if result["citations"]:
        lines.append("Citations:")
        for c in result["citations"]:
            mark = c["status"] if c["verified"] else "NOT VERIFIED"
            quote = f' "{c["quote"]}"' if c["quote"] else ""
            lines.append(f"  [{c['label']}] {mark}:{quote} ({c['reason']})")
        lines.append("")
    lines.append(f"Sources ({len(result['sources'])}, {result['usage'].get('source_tokens', 0)} tokens):")
    for s in result["sources"]:
        page = (f" p.{s['page']}" if s["page"] else "") + (f" § {s['section']}" if s.get("section") else "")
        snippet = " ".join(s["text"].split())
        snippet = snippet if len(snippet) <= 160 else snippet[:160] + " ..."
        lines.append(f"  [{s['label']}] {s['path']}{page} chars {s['start']}-{s['end']}: {snippet}")
    if result["dropped"]:
        lines.append(f"Left out for lack of room: {len(result['dropped'])} passages")
        for d in result["dropped"][:DROPPED_SHOWN]:
            where = (f" p.{d['page']}" if d.get("page") else "") + (f" § {d['section']}" if d.get("section") else "")
            lines.append(f"  {d['path']}{where} chars {d['start']}-{d['end']} ({d['tokens']} tokens)")
        if len(result["dropped"]) > DROPPED_SHOWN:
            lines.append(f"  and {len(result['dropped']) - DROPPED_SHOWN} more")
    if any(len(" ".join(s["text"].split())) > 160 for s in result["sources"]) or len(result["dropped"]) > DROPPED_SHOWN:
        lines.append("(Passages are shown cut short here; --json gives their whole text and every passage left out.)")
    if result.get("conversation"):
        lines.append(f"Question {result.get('question_id')} in conversation {result['conversation']}: "
                     f"ask a follow-up with --conversation {result['conversation']}")
    return "\n".join(lines)

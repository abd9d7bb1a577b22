"""manage.py eval: retrieval and packing quality on a golden set, dense, sparse and hybrid side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions, services
from docqa.llm import get_llm, get_reranker
from docqa.management.base import cli_actor, require_database, shutdown, start_local_work, tokens_arg
from docqa.models import Document, DocumentStatus
from inference.answer import answer_question, retrieval_limit, source_budget
from inference.evaluate import GoldSpan, QuestionScore, document_rank, fully_packed, gold_rank, span_recall, summarize
from inference.pack import pack_sources
from inference.retrieve import MODES, retrieve
from ingest.errors import DocqaError
from ingest.tokens import count_tokens

BUDGETS = (4096, 16384, 32768, 122880)
KS = (5, 10)


class Command(BaseCommand):
    help = "Measure retrieval and packing against gold answer spans (questions.jsonl format)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--questions", type=Path, required=True, help="questions.jsonl")
        parser.add_argument("--docs", type=Path, required=True, help="the folder the answers' files are in")
        parser.add_argument("--matter", required=True, help="matter to index the folder into (synced first)")
        parser.add_argument("--budget", type=tokens_arg, action="append",
                            help="token budget(s) to pack at (repeatable; 16384, 16,384 or 16k)")
        parser.add_argument("--modes", default=",".join(MODES),
                            help="retrieval modes, comma-separated; with DOCQA_RERANK_MODEL set, "
                                 "hybrid+rerank is added by default")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--details", type=Path,
                            help="also write one JSON line per question and mode to this file: its document's "
                                 "rank, its first gold chunk's rank, span recall and packed or not at each budget")
        parser.add_argument("--answer-budget", type=tokens_arg, default=16384,
                            help="with a language model configured: budget of the answers checked (default 16k)")

    def handle(self, *args: Any, **options: Any) -> None:
        budgets = tuple(sorted(set(options["budget"] or BUDGETS)))  # each once, smallest first
        low, high = actions.MIN_BUDGET, actions.MAX_BUDGET
        for name, value in [*(("--budget", b) for b in budgets), ("--answer-budget", options["answer_budget"])]:
            if not low <= value <= high:  # below 512 the instructions and the question leave no room
                raise CommandError(f"{name} {value:,} is out of range: give {low:,} to {high:,} tokens")
        modes = [m.strip() for m in options["modes"].split(",") if m.strip()]
        known = [*MODES, *(f"{m}+rerank" for m in MODES)]
        if unknown := [m for m in modes if m not in known]:
            raise CommandError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        if settings.RERANK_MODEL and options["modes"] == ",".join(MODES):
            modes.append("hybrid+rerank")
        if any(m.endswith("+rerank") for m in modes) and not settings.RERANK_MODEL:
            raise CommandError("the +rerank modes need DOCQA_RERANK_MODEL: a local cross-encoder folder")
        questions = read_questions(options["questions"])
        if options["details"]:
            try:  # before the minutes of evaluation, not after
                options["details"].open("w", encoding="utf-8").close()
            except OSError as exc:
                raise CommandError(f"cannot write {options['details']}: {exc}") from exc
        require_database()
        start_local_work("eval command")
        try:
            matter = actions.get_or_create_matter(options["matter"], cli_actor(None))
            run = actions.do_start_ingest(matter, options["docs"], cli_actor(None))
            run = actions.wait_for_run(run)
            actions.build_vector_index(after=run)
            documents = dict(
                Document.objects.filter(source=run.source, status=DocumentStatus.INDEXED).values_list("path", "id")
            )
            gold_files = {a["file"] for q in questions for a in q.get("answers", [])}
            missing = missing_gold(gold_files, documents, run)
            if missing and len(missing) == len(gold_files):
                raise CommandError(f"none of the questions' gold files is indexed from {options['docs']}: "
                                   + "; ".join(f"{path} ({why})" for path, why in list(missing.items())[:5]))
            for path, why in list(missing.items())[:10]:
                self.stderr.write(f"warning: gold file {path} is not indexed ({why}): its questions count as misses")
            if len(missing) > 10:
                self.stderr.write(f"warning: and {len(missing) - 10} more gold files are not indexed")
            results = {mode: evaluate(questions, documents, matter.id, mode, budgets) for mode in modes}
            answers = check_answers(questions, matter.id, options["answer_budget"]) if get_llm() else None
        except DocqaError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            self.stderr.write("\ninterrupted: stopping")
            shutdown()
            raise CommandError("interrupted: nothing was measured", returncode=130) from None
        finally:
            shutdown()
        report = {mode: by_source(scores, budgets) for mode, scores in results.items()}
        if options["details"]:
            write_details(options["details"], questions, results)
        if options["json"]:
            self.stdout.write(json.dumps({"questions": len(questions), "budgets": budgets, "results": report,
                                          "answers": answers, "missing_gold_files": missing}))
            return
        self.stdout.write(table(report, budgets))
        if answers:
            self.stdout.write(
                f"answers (hybrid, {answers['budget']:,} tokens): {answers['all_verified']:.3f} with every citation "
                f"verified, {answers['uncited']:.3f} without any citation, {answers['failed']:.3f} failed "
                f"({answers['questions']} questions)"
            )


def missing_gold(gold_files: set[str], documents: dict[str, int], run: Any) -> dict[str, str]:
    """The gold files that are not indexed, each with why: passed over or failed in the run (the
    reason recorded), or not in the folder at all."""
    wanted = sorted(gold_files - set(documents))
    reasons = dict(run.items.filter(path__in=wanted).exclude(error="").values_list("path", "error"))
    return {path: reasons.get(path, "not in the folder") for path in wanted}


def write_details(path: Path, questions: list[dict[str, Any]], results: dict[str, list[QuestionScore]]) -> None:
    texts = [str(q.get("question", "")) for q in questions]
    try:
        with path.open("w", encoding="utf-8") as handle:
            for mode, scores in results.items():
                for text, score in zip(texts, scores, strict=True):
                    handle.write(json.dumps({"mode": mode, **score.as_dict(), "question": text}) + "\n")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from exc


def read_questions(path: Path) -> list[dict[str, Any]]:
    """The questions file, checked line by line before anything is synced or measured: each line
    a JSON object with a `question` and its gold `answers` ({"file", "start", "end"})."""
    questions = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    questions.append(checked_question(line, f"{path}, line {number}"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    if not questions:
        raise CommandError(f"{path} holds no questions: one JSON object per line, as in "
                           '{"question": "...", "answers": [{"file": "a.txt", "start": 10, "end": 42}]}')
    return questions


def checked_question(line: str, where: str) -> dict[str, Any]:
    try:
        question = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where}: not JSON ({exc.msg} at character {exc.pos + 1})") from None
    if not isinstance(question, dict):
        raise CommandError(f"{where}: a JSON object is wanted, not {type(question).__name__}")
    if not isinstance(question.get("question"), str) or not question["question"].strip():
        raise CommandError(f'{where}: no "question" text')
    answers = question.get("answers")
    if not isinstance(answers, list) or not answers:
        raise CommandError(f'{where}: no gold "answers": a list of {{"file", "start", "end"}}, one at least')
    for answer in answers:
        if not (isinstance(answer, dict) and isinstance(answer.get("file"), str) and answer["file"]
                and all(type(answer.get(k)) is int for k in ("start", "end")) and 0 <= answer["start"] <= answer["end"]):
            raise CommandError(f'{where}: each answer needs "file" (a path in --docs) and character offsets '
                               f'"start" <= "end", not {json.dumps(answer)[:200]}')
    return question


def evaluate(questions: list[dict[str, Any]], documents: dict[str, int], matter_id: int, mode: str,
             budgets: tuple[int, ...]) -> list[QuestionScore]:
    embedder, store = services.get_embedder(), services.get_store()
    mode, _, rerank = mode.partition("+")
    reranker = get_reranker() if rerank else None
    scores = []
    for question in questions:
        text = question["question"]
        gold = [GoldSpan(documents.get(a["file"], -1), a["start"], a["end"]) for a in question["answers"]]
        # The ranks (doc@k, span@k) come from one fixed candidate list, whatever budgets were
        # asked for: fusion ranks the top a little differently as the lists fused grow.
        found = retrieve(text, matter_ids=[matter_id], embedder=embedder, store=store, mode=mode,
                         limit=retrieval_limit(source_budget(max(BUDGETS), text)), reranker=reranker)
        ranked = found.ranked
        score = QuestionScore(str(question.get("id", "")), str(question.get("source", "")), document_rank(ranked, gold))
        score.span_recall = {k: span_recall(ranked, gold, k) for k in KS}
        score.gold_rank = gold_rank(ranked, gold)
        for budget in budgets:
            # Packing as `ask` does it: retrieval knows the room, so documents that fit go whole.
            room = source_budget(budget, text)
            packed = retrieve(text, matter_ids=[matter_id], embedder=embedder, store=store, mode=mode,
                              limit=retrieval_limit(room), room=room, reranker=reranker)
            score.packed[budget] = fully_packed(pack_sources(packed.hits, room, count_tokens), gold)
        scores.append(score)
    return scores


def check_answers(questions: list[dict[str, Any]], matter_id: int, budget: int) -> dict[str, Any]:
    """Ask the configured model each question (hybrid retrieval) and check its citations."""
    llm = get_llm()
    embedder, store = services.get_embedder(), services.get_store()
    verified = uncited = failed = 0
    for question in questions:
        try:
            result = answer_question(question["question"], matter_ids=[matter_id], embedder=embedder, store=store,
                                     llm=llm, budget=budget, effort="low", max_completion_tokens=4096,
                                     reranker=get_reranker())
        except DocqaError:
            failed += 1
            continue
        if not result.citations:
            uncited += 1
        elif all(c.verified for c in result.citations):
            verified += 1
    n = max(1, len(questions))
    return {"questions": len(questions), "budget": budget, "all_verified": verified / n, "uncited": uncited / n,
            "failed": failed / n}


def by_source(scores: list[QuestionScore], budgets: tuple[int, ...]) -> dict[str, Any]:
    sources = sorted({s.source for s in scores})
    result = {"all": summarize(scores, KS, budgets)}
    for source in sources:
        result[source] = summarize([s for s in scores if s.source == source], KS, budgets)
    return result


def budget_label(budget: int) -> str:
    """"16k" for 16,384 tokens; a budget that is not a whole number of k as it is ("8,000")."""
    return f"{budget // 1024}k" if budget % 1024 == 0 else f"{budget:,}"


def table(report: dict[str, Any], budgets: tuple[int, ...]) -> str:
    columns = ["document_recall@1", "document_recall@5", "document_recall@10", *(f"span_recall@{k}" for k in KS),
               *(f"packed@{b}" for b in budgets)]
    heads = ["doc@1", "doc@5", "doc@10", *(f"span@{k}" for k in KS), *(f"in {budget_label(b)}" for b in budgets)]
    rows = [(mode, f"{group} ({figures['questions']})", figures)
            for mode, groups in report.items() for group, figures in groups.items()]
    width = max([len("questions"), *(len(label) for _, label, _ in rows)])
    lines = [f"{'mode':8s} {'questions':{width}s} " + " ".join(f"{h:>7s}" for h in heads)]
    for mode, label, figures in rows:
        lines.append(f"{mode:8s} {label:{width}s} " + " ".join(f"{figures[c]:7.3f}" for c in columns))
    return "\n".join(lines)

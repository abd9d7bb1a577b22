"""Finding the named contract among many near-namesakes: all CUAD contracts in one matter.

The dev set's 65 documents hold few near-namesakes; a firm's folders are full of them (an
agreement and its amendments, one filing split into parts, the same contract filed twice). This
puts the CUAD contracts of ../shared/corpus/ingest/cuad_txt (all 465 by default, the dev set's
45 among them) into one matter of a fresh data folder and runs `manage.py eval` (hybrid) on
- the dev set's 127 contract questions, and
- held-out-like questions on the contracts listed in bench/heldout_names.jsonl: 45 contracts
  outside the dev set, chosen at random, each named by its title and parties as they were
  written down by reading its opening (LegalBench-RAG's questions name contracts so), asked
  five of the dev set's kinds of question. Each gold span is the first sentence of the contract
  that matches a pattern ("governed by", "audit", ...): often a table of contents or a
  signature block, so only document recall means much for these.
Nothing is written into the project: the folder, questions and data live in a temporary folder.
Run:  .venv/bin/python bench/naming_at_scale.py [--others N]
(all 465 contracts: ~30 min on 2 cores, embedding the contracts; --others 0 takes only the dev
set's and the named ones asked about, 81 contracts, ~6 min)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
CONTRACTS = CORPUS / "ingest" / "cuad_txt"
KINDS = [  # (question, the pattern its gold sentence matches)
    ("What is the governing law for this contract?", r"governed by|governing law|construed in accordance with the laws"),
    ("Is there an anti-assignment clause in this contract?", r"(may not|shall not|not be) (be )?assign"),
    ("What are the audit rights under this contract?", r"\baudit"),
    ("What are the insurance requirements under this contract?", r"\binsurance\b"),
    ("Is there a cap on liability under this contract?",
     r"in no event[^.]{0,200}liab|liability[^.]{0,120}(shall not exceed|exceed the|limited to)"),
]
SENTENCE_END = re.compile(r"(?<=[.;])\s+(?=[A-Z(])")


def sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    return [*spans, (start, len(text))]


def held_out_like() -> list[dict]:
    questions = []
    for line in (REPO / "bench" / "heldout_names.jsonl").open(encoding="utf-8"):
        named = json.loads(line)
        parties = named.get("parties") or []
        if not named.get("title") or len(parties) < 2:
            continue  # a form with one party named: no question names it so
        text = (CONTRACTS / named["file"]).read_text(encoding="utf-8")
        name = f"Consider the {named['title']} between {', '.join(parties[:-1])} and {parties[-1]}"
        for question, pattern in KINDS:
            found = next(((s, e) for s, e in sentences(text)
                          if 40 <= e - s <= 1200 and re.search(pattern, text[s:e], re.I)), None)
            if found:
                questions.append({"id": f"ho-{len(questions):04d}", "source": "CUAD held-out-like",
                                  "question": f"{name}; {question}",
                                  "answers": [{"file": f"cuad/{named['file']}", "start": found[0], "end": found[1]}]})
    return questions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--others", type=int, default=None,
                        help="contracts besides the dev set's and the named ones (default: all the rest)")
    args = parser.parse_args()
    dev = [json.loads(line) for line in (CORPUS / "dev" / "questions.jsonl").open(encoding="utf-8")]
    dev = [q for q in dev if q["source"].startswith("CUAD")]
    extra = held_out_like()
    wanted = {a["file"].split("/", 1)[1] for q in dev + extra for a in q["answers"]}
    others = sorted(p.name for p in CONTRACTS.glob("*.txt") if p.name not in wanted)
    chosen = sorted(wanted) + others[: args.others if args.others is not None else len(others)]
    work = Path(tempfile.mkdtemp(prefix="docqa-naming-"))
    try:
        folder = work / "docs" / "cuad"
        folder.mkdir(parents=True)
        for name in chosen:
            shutil.copyfile(CONTRACTS / name, folder / name)
        questions = work / "questions.jsonl"
        questions.write_text("".join(json.dumps(q) + "\n" for q in dev + extra), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
        env["DOCQA_DATA_DIR"] = str(work / "data")
        print(f"{len(chosen)} contracts in one matter; {len(dev)} dev contract questions, {len(extra)} held-out-like",
              flush=True)
        manage = [sys.executable, str(REPO / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True)
        subprocess.run([*manage, "eval", "--questions", str(questions), "--docs", str(work / "docs"),
                        "--matter", "contracts", "--modes", "hybrid"], cwd=REPO, env=env, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

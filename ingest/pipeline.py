"""One file through the pipeline: parse -> chunk -> embed -> index.

`index_file` is idempotent: points are keyed by document version and chunk index, written first,
and only then are the points of any other version of the document deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.chunk import Chunk, chunk_document
from ingest.embed import Embedder
from ingest.ocr import OcrOptions
from ingest.parse import ParsedDocument, parse_file
from ingest.sparse import document_vector
from ingest.store import ChunkPoint, VectorStore, point_id
from ingest.tokens import chunk_counts, count_tokens, document_tokens

UPSERT_BATCH = 256
CARD_CHARS = 600  # opening characters of a document on its card
EMBED_SLICE = 64  # chunks embedded between checkpoints: ~2 s on 2 CPU cores


@dataclass(frozen=True)
class DocumentRef:
    matter_id: int
    document_id: int
    path: str
    version: str  # sha256 of the file's content


@dataclass(frozen=True)
class IndexedFile:
    parsed: ParsedDocument
    chunk_count: int
    llm_tokens: int


def index_file(
    abspath: Path,
    kind: str,
    ref: DocumentRef,
    *,
    embedder: Embedder,
    store: VectorStore,
    chunk_tokens: int = 200,
    overlap: int = 32,
    on_stage: Callable[[str], None] = lambda stage: None,
    ocr: OcrOptions | None = None,
    checkpoint: Callable[[], None] = lambda: None,
) -> IndexedFile:
    """Parse, chunk, embed and upsert one file. Raises ParseError for unusable files.

    `checkpoint` is called between stages and between embedding slices; it may raise to stop
    the work (a time limit), before anything is written or between writes of this version.
    """
    on_stage("parsing")
    parsed = parse_file(abspath, kind, ocr)
    checkpoint()
    return index_parsed(parsed, ref, embedder=embedder, store=store, chunk_tokens=chunk_tokens, overlap=overlap,
                        on_stage=on_stage, checkpoint=checkpoint)


def index_parsed(
    parsed: ParsedDocument,
    ref: DocumentRef,
    *,
    embedder: Embedder,
    store: VectorStore,
    chunk_tokens: int = 200,
    overlap: int = 32,
    on_stage: Callable[[str], None] = lambda stage: None,
    checkpoint: Callable[[], None] = lambda: None,
) -> IndexedFile:
    """Chunk, embed and upsert a parsed file (the embed stage, which may run on its own queue)."""
    chunks = chunk_document(
        parsed,
        embedder.count_tokens,
        max_tokens=min(chunk_tokens, embedder.token_limit),
        overlap=overlap,
        hard_limit=embedder.token_limit,
    )
    on_stage("embedding")
    vectors: list[list[float]] = []
    for i in range(0, len(chunks), EMBED_SLICE):
        checkpoint()
        vectors += embedder.embed_documents([chunk.text for chunk in chunks[i : i + EMBED_SLICE]])
    card = card_text(ref.path, parsed.text)
    card_vector = embedder.embed_documents([card])[0]
    checkpoint()
    label = name_words(ref.path)
    counts = chunk_counts(parsed.text, [(chunk.start, chunk.end) for chunk in chunks])
    points = [build_point(ref, chunk, vector, label, counted)
              for chunk, vector, counted in zip(chunks, vectors, counts, strict=True)]
    points.append(build_card(ref, card, card_vector, document_tokens(counts), len(chunks)))
    for i in range(0, len(points), UPSERT_BATCH):
        store.upsert(points[i : i + UPSERT_BATCH])
    store.delete_document(ref.document_id, keep_version=ref.version)
    llm_tokens = sum(p.payload.get("tokens", 0) for p in points)
    return IndexedFile(parsed=parsed, chunk_count=len(chunks), llm_tokens=llm_tokens)


def name_words(path: str) -> str:
    """A file's path as words: "cuad/IBM_Hosting-Agreement.txt" -> "cuad IBM Hosting Agreement"."""
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return " ".join(re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"[_\-./\\]+", " ", stem)).split())


def card_text(path: str, text: str) -> str:
    """What a document is called: its file name and opening text (title, parties, date)."""
    return f"{name_words(path)}\n{' '.join(text[:CARD_CHARS].split())}"


def build_card(ref: DocumentRef, text: str, vector: list[float], tokens: int | None = None,
               chunk_count: int | None = None) -> ChunkPoint:
    # `document_tokens`: the whole document's o200k count when its chunks merge back exactly, so
    # that retrieval knows whether it fits the room before fetching its chunks (by their ids,
    # index 0 .. chunk_count - 1).
    return ChunkPoint(
        id=point_id(ref.document_id, ref.version, "card"),
        vector=vector,
        sparse=document_vector(text),
        payload={"matter": ref.matter_id, "document": ref.document_id, "version": ref.version, "kind": "card",
                 "path": ref.path, "text": text, "document_tokens": tokens,
                 "chunk_count": chunk_count},
    )


def build_point(ref: DocumentRef, chunk: Chunk, vector: list[float], label: str = "",
                counts: dict[str, int | None] | None = None) -> ChunkPoint:
    # The lexical vector also holds the file's name and the chunk's section, so that a question
    # naming a document or a clause heading matches its chunks. `counts` (ingest.tokens.chunk_counts)
    # let packing add up merged neighbours exactly; without them it counts such passages itself.
    return ChunkPoint(
        id=point_id(ref.document_id, ref.version, chunk.index),
        vector=vector,
        sparse=document_vector(f"{label}\n{chunk.section}\n{chunk.text}"),
        payload={
            "matter": ref.matter_id,
            "document": ref.document_id,
            "version": ref.version,
            "kind": "chunk",
            "chunk": chunk.index,
            "path": ref.path,
            "page": chunk.page,
            "section": chunk.section,
            "start": chunk.start,
            "end": chunk.end,
            "text": chunk.text,
            **(counts or {"tokens": count_tokens(chunk.text)}),
        },
    )

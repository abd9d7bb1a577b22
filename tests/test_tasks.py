"""The task adapters: claims, take-over after a redelivery, and items that always end."""

from __future__ import annotations

from pathlib import Path

import pytest

from docqa.models import Document, IngestItem, IngestRun, ItemState, Matter, Source
from ingest.errors import StoreError
from ingest.store import EdgeStore
from ingest.tasks import claim, end_item_when_celery_gives_up, ingest_document


@pytest.fixture
def item(db: None) -> IngestItem:
    matter = Matter.objects.create(slug="m", name="m")
    source = Source.objects.create(matter=matter, root="/nowhere")
    document = Document.objects.create(matter=matter, source=source, path="a.txt", kind="text")
    run = IngestRun.objects.create(matter=matter, source=source, actor="t")
    return IngestItem.objects.create(run=run, document=document, path="a.txt", change="new")


def test_claim_takes_a_queued_item_once(item: IngestItem) -> None:
    assert claim(item.id, ItemState.PARSING) is not None
    assert claim(item.id, ItemState.PARSING) is None


def test_claim_lets_a_redelivered_task_take_over_its_item(item: IngestItem) -> None:
    IngestItem.objects.filter(id=item.id).update(state=ItemState.EMBEDDING)  # its worker died here

    assert claim(item.id, ItemState.PARSING) is None
    assert claim(item.id, ItemState.PARSING, again=True) is not None


def test_claim_never_reopens_a_finished_item(item: IngestItem) -> None:
    IngestItem.objects.filter(id=item.id).update(state=ItemState.INDEXED)

    assert claim(item.id, ItemState.PARSING, again=True) is None


def test_item_fails_with_the_reason_when_celery_gives_up(item: IngestItem, data_dir: Path) -> None:
    end_item_when_celery_gives_up(sender=ingest_document, exception=StoreError("qdrant down"), args=(item.id,))

    item.refresh_from_db()
    assert item.state == ItemState.FAILED and "qdrant down" in item.error
    assert Document.objects.get(id=item.document_id).status == "failed"


def test_store_failures_surface_as_retryable_store_errors(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge", 4)
    store.close()

    with pytest.raises(StoreError, match="the vector store failed"):
        store.search([1.0, 0.0, 0.0, 0.0], [1], 5)

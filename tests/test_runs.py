"""Operating runs: cancel, resume a crashed run, retry only the failures, failures as CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from docqa.models import AuditEvent, Document, DocumentStatus, IngestItem, IngestRun, ItemState, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(3):
        (root / f"clause-{i}.txt").write_text(f"Clause {i}. The licensee shall pay a fee of {i + 1} hundred dollars.\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    return root


def test_retry_requeues_only_the_failed_files(data_dir: Path, folder: Path) -> None:
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    (folder / "broken.pdf").write_text("Now a readable text file, wrongly named.")  # still fails as PDF
    from datetime import timedelta

    from django.utils import timezone

    from docqa.actions import run_stats

    IngestRun.objects.filter(id=run_id).update(started_at=timezone.now() - timedelta(days=1))  # retried next day

    out = command("runs", "retry", str(run_id))

    assert "1 file queued again" in out
    # Its pace counts from the retry: one file in seconds, not four files in a day.
    run = IngestRun.objects.get(id=run_id)
    stats = run_stats(run)
    assert run.resumed_at is not None and stats.paced == 1 and stats.done == 4 and stats.elapsed < 600
    item = IngestItem.objects.get(run_id=run_id, path="broken.pdf")
    assert item.state == ItemState.FAILED and item.attempts == 2 and item.error_class == "parse"
    assert IngestItem.objects.filter(run_id=run_id, attempts=1, state=ItemState.INDEXED).count() == 3
    assert AuditEvent.objects.filter(action="ingest.retry").exists()


def test_resume_finishes_what_a_crashed_run_left_behind(data_dir: Path, folder: Path) -> None:
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    # As if the worker died mid-file and the broker lost the rest.
    IngestItem.objects.filter(run_id=run_id, path="clause-0.txt").update(state=ItemState.EMBEDDING)
    IngestItem.objects.filter(run_id=run_id, path="clause-1.txt").update(state=ItemState.QUEUED)
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING)

    command("runs", "resume", str(run_id))

    run = IngestRun.objects.get(id=run_id)
    assert run.status == RunStatus.FINISHED and run.counts["indexed"] == 3
    assert Document.objects.filter(status=DocumentStatus.INDEXED).count() == 3


def test_cancel_stops_queued_files(data_dir: Path, folder: Path) -> None:
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    IngestItem.objects.filter(run_id=run_id, path="clause-2.txt").update(state=ItemState.QUEUED)
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING, counts={})
    assert "running    ops" in command("runs") and "3 of 4 files done, 1 failed" in command("runs")  # not "-"

    out = command("runs", "cancel", str(run_id))

    assert "1 queued file will not be processed (files already being processed finish)" in out
    assert IngestRun.objects.get(id=run_id).status == RunStatus.CANCELLED
    assert IngestItem.objects.get(run_id=run_id, path="clause-2.txt").state == ItemState.CANCELLED


def test_a_cancelled_run_resumes_and_blocks_a_new_sync_while_its_files_are_in_hand(data_dir: Path,
                                                                                    folder: Path) -> None:
    from django.core.management.base import CommandError

    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    IngestItem.objects.filter(run_id=run_id, path="clause-1.txt").update(state=ItemState.EMBEDDING)  # in a worker
    IngestItem.objects.filter(run_id=run_id, path="clause-2.txt").update(state=ItemState.QUEUED)
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING)
    command("runs", "cancel", str(run_id))

    with pytest.raises(CommandError, match=f"run {run_id} on .* is still in progress"):
        command("ingest", str(folder), "--matter", "ops")  # the cancelled run's file is still being worked on

    command("runs", "resume", str(run_id))

    run = IngestRun.objects.get(id=run_id)
    assert run.status == RunStatus.FINISHED and run.counts["indexed"] == 3 and run.counts["cancelled"] == 0
    assert AuditEvent.objects.filter(action="ingest.resume").exists()
    later = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    with pytest.raises(CommandError, match=f"run {later} has synced .* since run {run_id}"):
        command("runs", "retry", str(run_id))  # an older run's work could undo the newer one's


def test_a_finished_run_has_nothing_to_cancel_resume_or_retry(data_dir: Path, folder: Path) -> None:
    """Each says so and exits non-zero; none reopens the run or writes to the audit trail."""
    from django.core.management.base import CommandError

    (folder / "broken.pdf").unlink()
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    before = AuditEvent.objects.count()

    for action, said in (("cancel", "is finished, not running: there is nothing to cancel"),
                         ("resume", "has nothing left to resume: every file in it was finished"),
                         ("retry", "has no failed files to retry")):
        with pytest.raises(CommandError, match=f"run {run_id} {said}"):
            command("runs", action, str(run_id))

    assert IngestRun.objects.get(id=run_id).status == RunStatus.FINISHED
    assert AuditEvent.objects.count() == before


def test_resuming_a_crashed_run_whose_files_all_finished_closes_it(data_dir: Path, folder: Path) -> None:
    from django.core.management.base import CommandError

    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING, finished_at=None)  # the worker died late

    with pytest.raises(CommandError, match="nothing left to resume"):
        command("runs", "resume", str(run_id))

    assert IngestRun.objects.get(id=run_id).status == RunStatus.FINISHED


def test_a_run_its_process_left_unfinished_is_closed_when_work_starts_again(data_dir: Path, folder: Path) -> None:
    """The embedded default's queue lives in the process that started a run. After a crash the
    next command closes the run, saying so, instead of refusing to sync the folder "while it is
    in progress" forever; the same sync then does what was left."""
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    # As if the process had died mid-run: a changed file in hand, a new one never reached.
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING, finished_at=None)
    IngestItem.objects.filter(run_id=run_id, path="clause-0.txt").update(state=ItemState.EMBEDDING)
    IngestItem.objects.filter(run_id=run_id, path="clause-1.txt").update(state=ItemState.QUEUED)
    Document.objects.filter(path="clause-0.txt").update(status=DocumentStatus.PENDING)
    Document.objects.filter(path="clause-1.txt").update(status=DocumentStatus.PENDING, sha256="", text=None)

    said = io.StringIO()
    handler = logging.StreamHandler(said)  # its own: Celery's worker takes the root logger over from pytest's
    logging.getLogger("docqa.actions").addHandler(handler)
    try:
        again = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))
    finally:
        logging.getLogger("docqa.actions").removeHandler(handler)

    old = IngestRun.objects.get(id=run_id)
    assert old.status == RunStatus.CANCELLED and old.counts["cancelled"] == 2 and old.counts["indexed"] == 1
    left = IngestItem.objects.filter(run_id=run_id, state=ItemState.CANCELLED)
    assert sorted(left.values_list("path", flat=True)) == ["clause-0.txt", "clause-1.txt"]
    assert {i.error_class for i in left} == {"interrupted"} and "a new sync or `runs resume`" in left[0].error
    assert AuditEvent.objects.get(action="ingest.interrupted").detail == {"run": run_id, "cancelled": 2}
    assert f"ingest run {run_id} on {folder} was interrupted with 2 files left" in said.getvalue()
    # The file never indexed is new again, the one that was indexed before is changed.
    assert again["counts"]["new"] == 1 and again["counts"]["changed"] == 1 and again["counts"]["indexed"] == 2
    assert Document.objects.filter(status=DocumentStatus.INDEXED).count() == 3


def test_ctrl_c_or_a_timeout_records_what_the_run_left_and_says_so(data_dir: Path, folder: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting stops; the embedded worker (here one that had not reached a file) goes, and the
    run's unfinished files are recorded as cancelled at once: one line tells how to finish."""
    from django.core.management.base import CommandError

    from docqa import actions, embedded

    monkeypatch.setattr(embedded, "ensure_worker", lambda: None)
    monkeypatch.setattr(embedded, "stop_worker", lambda: True)

    with pytest.raises(CommandError, match=r"gave up waiting after 0.01 s: run (\d+) stopped with 0 of 4 files "
                                           r"done, the rest recorded as cancelled; the same sync again, or "
                                           r"`manage.py runs resume \1`, does them"):
        command("ingest", str(folder), "--matter", "ops", "--timeout", "0.01")
    first = IngestRun.objects.get()
    assert first.status == RunStatus.CANCELLED and first.counts["cancelled"] == 4

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(actions, "wait_for_run", interrupted)
    with pytest.raises(CommandError, match=r"interrupted: run \d+ stopped with 0 of 4 files done") as caught:
        command("ingest", str(folder), "--matter", "ops")
    assert caught.value.returncode == 130
    assert IngestRun.objects.latest("id").counts["new"] == 4  # still new: never indexed
    with pytest.raises(CommandError, match=r"interrupted: run \d+ stopped with 0 of 4") as caught:
        command("runs", "resume", str(IngestRun.objects.latest("id").id))
    assert caught.value.returncode == 130 and IngestRun.objects.filter(status=RunStatus.RUNNING).count() == 0


def test_ctrl_c_in_services_mode_leaves_the_run_to_the_workers(data_dir: Path, folder: Path, settings: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management.base import CommandError

    from docqa import actions

    settings.EMBEDDED_WORKER = False  # worker processes hold the queue, not this one
    monkeypatch.setattr(actions, "enqueue_items", lambda items: None)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(actions, "wait_for_run", interrupted)
    with pytest.raises(CommandError, match=r"interrupted: run \d+ goes on in the workers \(0 of 4 files done so "
                                           r"far\); `manage.py runs --matter ops` follows it") as caught:
        command("ingest", str(folder), "--matter", "ops")
    assert caught.value.returncode == 130 and IngestRun.objects.get().status == RunStatus.RUNNING


def test_what_cannot_be_read_this_time_is_kept_not_deleted(data_dir: Path, folder: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without read permission, or a folder that cannot be listed (a share that dropped),
    is reported, and what was indexed from it stays: it is not taken for deleted."""
    import os

    from ingest import discover

    (folder / "annex").mkdir()
    (folder / "annex" / "parking.txt").write_text("Two parking spaces come with the lease.\n")
    command("ingest", str(folder), "--matter", "ops")
    real_hash, real_walk = discover.hash_file, os.walk

    def unreadable_file(path: Path, *args: Any) -> str:
        if path.name == "clause-1.txt":
            raise PermissionError(13, "Permission denied")
        return real_hash(path, *args)

    def unlistable_annex(top: Any, **kwargs: Any) -> Any:
        for here, folders, files in real_walk(top, **kwargs):
            if Path(here).name == "annex":
                kwargs["onerror"](PermissionError(13, "Permission denied", here))
                continue
            yield here, folders, files

    monkeypatch.setattr(discover, "hash_file", unreadable_file)
    monkeypatch.setattr(discover.os, "walk", unlistable_annex)
    report = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))

    assert report["counts"]["deleted"] == 0 and report["counts"]["unchanged"] == 2
    assert {s["path"]: s["reason"] for s in report["skipped"]} == {
        "clause-1.txt": "cannot read file: Permission denied; what was indexed from it is kept",
        "annex/": "cannot read folder: Permission denied; what was indexed from it is kept",
    }
    indexed = set(Document.objects.filter(status=DocumentStatus.INDEXED).values_list("path", flat=True))
    assert indexed == {"clause-0.txt", "clause-1.txt", "clause-2.txt", "annex/parking.txt"}


def test_docqas_own_data_folder_is_never_synced(data_dir: Path, settings: Any) -> None:
    from django.core.management.base import CommandError

    (data_dir / "login.txt").write_text("admin s3cret\n")
    with pytest.raises(CommandError, match="is docqa's own data folder .* it is never synced"):
        command("ingest", str(data_dir), "--matter", "ops")
    report = json.loads(command("ingest", str(data_dir.parent), "--matter", "ops", "--json"))  # a folder holding it
    assert {"path": "var/", "reason": "docqa's own data folder; never read"} in report["skipped"]
    assert not Document.objects.filter(path__contains="login").exists()
    # The web uploads: a matter's own folder is synced by its upload page; the folder above every
    # matter's, another matter's, or a part of this one's would index uploads into it twice over.
    for other in ("uploads", "uploads/acme", "uploads/ops/annex"):
        (data_dir / other).mkdir(parents=True, exist_ok=True)
        (data_dir / other / "secret.txt").write_text("Another matter's upload.\n")
        with pytest.raises(CommandError, match="holds web uploads, each matter's in a folder of its own"):
            command("ingest", str(data_dir / other), "--matter", "ops")
    assert not Document.objects.filter(path__contains="secret").exists()


def test_ingest_says_when_its_run_was_cancelled_from_elsewhere(data_dir: Path, folder: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from docqa import actions, embedded

    monkeypatch.setattr(embedded, "ensure_worker", lambda: None)  # no file is reached before the cancel
    waiting = actions.wait_for_run

    def cancelled_meanwhile(run: IngestRun, **kwargs: Any) -> IngestRun:
        actions.do_cancel_run(run, "web:ann")  # the run page's button, say
        return waiting(run, **kwargs)

    monkeypatch.setattr(actions, "wait_for_run", cancelled_meanwhile)
    out = command("ingest", str(folder), "--matter", "ops")

    run_id = IngestRun.objects.get().id
    assert (f"run {run_id} was cancelled before it finished: 4 files not processed; the same sync again, or "
            f"`manage.py runs resume {run_id}`, does them") in out


def test_a_folder_inside_one_the_matter_syncs_already_is_refused(data_dir: Path, folder: Path) -> None:
    """Its files are in the matter already: a second copy would fill every answer's room twice."""
    from django.core.management.base import CommandError

    from docqa.models import Matter

    (folder / "annex").mkdir()
    (folder / "annex" / "parking.txt").write_text("Two parking spaces come with the lease.\n")
    command("ingest", str(folder), "--matter", "ops")
    with pytest.raises(CommandError, match=f"annex is inside {folder}, which is synced into matter 'ops' already"):
        command("ingest", str(folder / "annex"), "--matter", "ops")
    assert Document.objects.filter(path__endswith="parking.txt").count() == 1
    # The matter's uploads lie under docqa's data folder, which a sync of a folder above it never
    # walks: they are synced even when the matter syncs that folder (`make run FOLDER=.`).
    from docqa.sources import upload_folder

    command("ingest", str(data_dir.parent), "--matter", "whole")  # the folder holding var/
    uploads = upload_folder(Matter.objects.get(slug="whole"))
    uploads.mkdir(parents=True)
    (uploads / "memo.txt").write_text("The landlord repaints every five years.\n")
    assert json.loads(command("ingest", str(uploads), "--matter", "whole", "--json"))["counts"]["indexed"] == 1


def labelled_paths(matter_id: int) -> dict[int, set[str]]:
    """The path each document's points carry in the vector store, by document."""
    from docqa import services

    hits = services.get_store().search(services.get_embedder().embed_query("lease parking fee"),
                                       matter_ids=[matter_id], limit=200)
    found: dict[int, set[str]] = {}
    for hit in hits:
        found.setdefault(int(hit.payload["document"]), set()).add(hit.payload["path"])
    return found


def test_a_folder_around_ones_the_matter_syncs_takes_them_over_without_indexing_again(
        data_dir: Path, folder: Path) -> None:
    """Syncing a parent folder of folders synced on their own indexed every file in them twice."""
    from django.core.management.base import CommandError

    from docqa.models import Matter, Source
    from tests.formats import write_eml_with_attachments

    (folder / "annex" / "deep").mkdir(parents=True)
    (folder / "annex" / "parking.txt").write_text("Two parking spaces come with the lease.\n")
    (folder / "annex" / "deep" / "storage.txt").write_text("A storage room in the basement comes with the lease.\n")
    write_eml_with_attachments(folder / "annex" / "amendment.eml")
    command("ingest", str(folder / "annex" / "deep"), "--matter", "ops")
    command("ingest", str(folder / "annex"), "--matter", "ops")  # takes over deep/
    indexed_before = {d.id: d.text_id for d in Document.objects.filter(status=DocumentStatus.INDEXED)}

    report = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))

    # Three files (the message's attachments go with it), relabelled; the clauses are new, the PDF fails.
    assert report["took_over"] == [{"root": str(folder / "annex"), "documents": 3, "duplicates": 0}]
    assert report["counts"]["moved"] == 3 and report["counts"]["indexed"] == 3
    items = dict(IngestItem.objects.filter(run_id=report["run"], change="moved").values_list("path", "state"))
    assert items == {"annex/parking.txt": "moved", "annex/deep/storage.txt": "moved", "annex/amendment.eml": "moved"}
    parent = Source.objects.get(root=str(folder))
    live = Document.objects.exclude(status=DocumentStatus.DELETED)
    assert set(live.values_list("source_id", flat=True)) == {parent.id}
    assert {d.path for d in live.filter(parent__isnull=False)} >= {"annex/amendment.eml/amendment.pdf"}
    for doc_id, text_id in indexed_before.items():  # the same rows and texts: nothing parsed or embedded again
        doc = Document.objects.get(id=doc_id)
        assert doc.status == DocumentStatus.INDEXED and doc.text_id == text_id and doc.path.startswith("annex/")
    matter = Matter.objects.get(slug="ops")
    labels = labelled_paths(matter.id)
    assert labels and all(paths == {Document.objects.get(id=doc_id).path} for doc_id, paths in labels.items())
    from docqa import services

    assert services.get_store().count([matter.id]) == sum(live.values_list("chunk_count", flat=True))
    assert AuditEvent.objects.filter(action="ingest.start").last().detail["took_over"] == report["took_over"]

    with pytest.raises(CommandError, match="annex is inside"):
        command("ingest", str(folder / "annex"), "--matter", "ops")
    from docqa import actions

    assert [s.root for s in actions.synced_sources(matter)] == [str(folder)]  # the runs page and the API
    again = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))
    assert again["took_over"] == [] and again["counts"]["unchanged"] == 6

    # A run stopped before relabelling (Ctrl-C, a cancel): the next sync relabels what it left.
    parking = Document.objects.get(path="annex/parking.txt")
    IngestItem.objects.filter(run_id=report["run"], document=parking).update(state=ItemState.CANCELLED)
    services.get_store().rename_document(parking.id, "parking.txt")
    assert labelled_paths(matter.id)[parking.id] == {"parking.txt"}
    third = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))
    assert third["counts"]["moved"] == 1 and third["counts"]["unchanged"] == 5
    assert labelled_paths(matter.id)[parking.id] == {"annex/parking.txt"}
    assert json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["counts"]["unchanged"] == 6


def test_a_second_copy_synced_on_its_own_before_is_removed_by_the_folder_around_it(
        data_dir: Path, folder: Path) -> None:
    """A matter that synced a folder and then one inside it (allowed before) held every file there twice."""
    from docqa.models import Matter, Source

    (folder / "annex").mkdir()
    (folder / "annex" / "parking.txt").write_text("Two parking spaces come with the lease.\n")
    command("ingest", str(folder), "--matter", "ops")
    parent = Source.objects.get(root=str(folder))
    Source.objects.filter(id=parent.id).update(root="/elsewhere")  # as it was before the refusal
    command("ingest", str(folder / "annex"), "--matter", "ops")
    Source.objects.filter(id=parent.id).update(root=str(folder))
    copies = Document.objects.filter(path__endswith="parking.txt", status=DocumentStatus.INDEXED)
    assert copies.count() == 2

    out = command("ingest", str(folder), "--matter", "ops")

    assert (f"took over {folder / 'annex'}, synced before on its own: its 0 documents are this folder's now, "
            "moved, not indexed again; 1 second copy of files this folder held already removed") in out
    kept = copies.get()
    assert kept.source_id == parent.id and kept.path == "annex/parking.txt"
    matter = Matter.objects.get(slug="ops")
    assert labelled_paths(matter.id).keys() <= set(Document.objects.filter(status=DocumentStatus.INDEXED)
                                                   .values_list("id", flat=True))
    from docqa import services

    assert services.get_store().count([matter.id]) == sum(
        Document.objects.filter(status=DocumentStatus.INDEXED).values_list("chunk_count", flat=True))


def test_an_empty_folder_does_not_delete_what_the_matter_holds_unless_asked(data_dir: Path, folder: Path) -> None:
    """A share that is not mounted looks like one whose every file was deleted."""
    from django.core.management.base import CommandError

    command("ingest", str(folder), "--matter", "ops")
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(CommandError, match=r"docs is empty, and matter 'ops' holds 4 documents from it: is a share "
                                           r"not mounted\? Nothing was changed\. If the files were really all "
                                           rf"removed, an administrator's `manage\.py ingest {folder} --matter ops "
                                           r"--allow-empty` removes them"):
        command("ingest", str(folder), "--matter", "ops")
    assert Document.objects.filter(status=DocumentStatus.INDEXED).count() == 3
    report = json.loads(command("ingest", str(folder), "--matter", "ops", "--json", "--allow-empty"))
    assert report["counts"]["deleted"] == 4
    assert not Document.objects.filter(status=DocumentStatus.INDEXED).exists()


def test_runs_refusals_say_what_is_wrong(data_dir: Path, folder: Path) -> None:
    from django.contrib.auth.models import User
    from django.core.management.base import CommandError

    from docqa.models import Matter, Membership, Role

    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    dan = User.objects.create_user("dan", password="pw-123456")
    Membership.objects.create(matter=Matter.objects.get(slug="ops"), user=dan, role=Role.VIEWER)
    User.objects.create_user("eve", password="pw-123456")

    assert "broken.pdf" in command("runs", "failures", str(run_id), "--user", "dan")  # a reader sees them
    with pytest.raises(CommandError, match="dan may not retry runs of matter 'ops': no such matter, or not an editor"):
        command("runs", "retry", str(run_id), "--user", "dan")
    with pytest.raises(CommandError, match=f"no ingest run {run_id};"):  # eve cannot read ops: as if it did not exist
        command("runs", "retry", str(run_id), "--user", "eve")
    with pytest.raises(CommandError, match="runs failures needs the run's number"):
        command("runs", "failures")
    with pytest.raises(CommandError, match="no matter 'nope'"):
        command("runs", "--matter", "nope")


def test_failures_export_as_csv(data_dir: Path, folder: Path) -> None:
    (folder / "notes.xyz").write_text("unsupported")
    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]

    rows = list(csv.DictReader(io.StringIO(command("runs", "failures", str(run_id)))))

    assert [(r["path"], r["state"]) for r in rows] == [("broken.pdf", "failed"), ("notes.xyz", "skipped")]
    assert rows[0]["error_class"] == "parse" and "corrupt" in rows[0]["error"]


def test_runs_lists_the_latest_runs(data_dir: Path, folder: Path) -> None:
    command("ingest", str(folder), "--matter", "ops")

    assert "finished" in command("runs", "--matter", "ops")


def test_qdrant_down_fails_items_as_store_errors_and_retry_recovers(data_dir: Path, folder: Path, settings) -> None:
    import socket

    from docqa import services

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.QDRANT_URL = f"http://127.0.0.1:{port}"  # nothing listens there

    report = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))

    assert report["counts"]["failed"] == 4
    stored = IngestItem.objects.filter(run_id=report["run"], error_class="store")
    assert stored.count() == 4 and all(i.attempts == 4 for i in stored)  # first try + 3 retries
    assert "vector store failed" in stored.first().error

    services.close_store()
    settings.QDRANT_URL = f"path:{data_dir / 'qdrant-back'}"  # Qdrant is back
    command("runs", "retry", str(report["run"]))

    assert IngestRun.objects.get(id=report["run"]).counts["indexed"] == 3


def test_tasks_the_broker_lost_are_sent_again_once_the_run_is_quiet(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed between taking a message off Redis and noting it as delivered loses it.

    Real Redis: one item's task is in the queue or delivered to a (dead) worker, the others' tasks
    are gone. Once the queue is empty and the run has been quiet, only the lost ones are sent.
    """
    import os
    from datetime import timedelta

    import redis
    from django.utils import timezone
    from kombu import Connection

    from docqa import actions, services
    from docqa.models import Matter, Source
    from ingest import tasks

    url = os.environ["DOCQA_REDIS_TEST_URL"]
    redis.Redis.from_url(url).flushdb()
    settings.CELERY_BROKER_URL = url
    matter = Matter.objects.create(slug="lost", name="lost")
    run = IngestRun.objects.create(matter=matter, source=Source.objects.create(matter=matter, root="/x"), actor="t",
                                   broker_epoch=services.broker_epoch())
    held, lost, done = (IngestItem.objects.create(run=run, path=f"f{i}.txt", change="new") for i in range(3))
    long_ago = timezone.now() - timedelta(seconds=actions.LOST_QUIET_S + 5)
    IngestItem.objects.filter(id=done.id).update(state=ItemState.INDEXED, started_at=long_ago, finished_at=long_ago)
    sent: list[int] = []
    monkeypatch.setattr(actions, "enqueue_items", lambda items: sent.extend(i.id for i in items))

    with Connection(url) as broker:
        tasks.ingest_document.apply_async((held.id,), connection=broker)
        assert actions.resend_lost_tasks(run) == 0  # its task still waits in the queue
        queue = broker.SimpleQueue("celery")
        message = queue.get(timeout=5)  # delivered, never acknowledged: its worker died
        assert message.headers["argsrepr"] == f"({held.id},)"
        assert services.broker_holdings() == services.BrokerHoldings(queues_empty=True, delivered={held.id})

        assert actions.resend_lost_tasks(run) == 0  # the run started a moment ago
        IngestRun.objects.filter(id=run.id).update(started_at=long_ago)
        run.refresh_from_db()
        assert actions.resend_lost_tasks(run) == 1
        assert sent == [lost.id]
        # Another checker looking at the same moment (the task not yet taken) sends nothing more.
        assert actions.resend_lost_tasks(run) == 0 and sent == [lost.id]
        redis.Redis.from_url(url).delete(f"docqa:resend:{run.id}")  # ...until the claim runs out
        assert actions.resend_lost_tasks(run) == 1 and sent == [lost.id, lost.id]
        redis.Redis.from_url(url).flushdb()  # before closing the queue puts the message back
        queue.close()


def test_no_lost_task_check_when_the_broker_names_its_keys_otherwise(settings) -> None:
    """With a key prefix the queue docqa would read is not the one kombu writes: no check at all
    rather than every waiting file taken for lost."""
    import os

    from docqa import services

    settings.CELERY_BROKER_URL = os.environ["DOCQA_REDIS_TEST_URL"]
    assert services.broker_holdings() is not None
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": "dq:"}
    assert services.broker_holdings() is None
    unreadable = json.dumps([{"body": "not base64 json", "headers": {"task": "ingest.ingest_document"},
                              "properties": {"body_encoding": "base64"}}, "celery", "celery"])
    assert services.task_item(unreadable.encode()) is False
    assert services.task_item(json.dumps([{"body": "", "headers": {"task": "other.app"}}, "", ""]).encode()) is None


def test_a_broker_that_cannot_be_reached_refuses_the_sync_before_anything_is_recorded(
        settings: Any, data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Services mode with Redis down printed kombu's traceback, and the run stayed "running" with
    its files queued in no queue, refusing every later sync of the folder."""
    import os

    from django.core.management.base import CommandError
    from kombu.exceptions import OperationalError

    from ingest import tasks

    settings.EMBEDDED_WORKER = False
    settings.CELERY_BROKER_URL = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1
    with pytest.raises(CommandError, match=r"the task broker at redis://:\*\*\*@127.0.0.1:1/0 cannot be reached "
                                           r".*; nothing was queued or recorded"):
        command("ingest", str(folder), "--matter", "ops")
    assert not IngestRun.objects.exists() and not Document.objects.exists()

    # Up for the check, down on the way: what was not sent is recorded as cancelled, saying why.
    settings.CELERY_BROKER_URL = os.environ["DOCQA_REDIS_TEST_URL"]
    sent: list[int] = []

    def send(item_id: int) -> None:
        if sent:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        sent.append(item_id)

    monkeypatch.setattr(tasks.ingest_document, "delay", send)
    with pytest.raises(CommandError, match=r"failed while run \d+ was being queued .*: 3 files not queued, recorded "
                                           r"as cancelled; once the broker is back, a new sync or `manage.py runs "
                                           r"resume \d+` does the rest"):
        command("ingest", str(folder), "--matter", "ops")
    run = IngestRun.objects.get()
    assert run.items.filter(state=ItemState.QUEUED).count() == 1 and len(sent) == 1
    assert set(run.items.filter(state=ItemState.CANCELLED).values_list("error_class", flat=True)) == {"broker"}


def test_ctrl_c_in_services_mode_says_only_that_the_workers_go_on(settings: Any, data_dir: Path, folder: Path) -> None:
    """It printed "stopping (the file in hand finishes first)", then that the run goes on."""
    from docqa.management.base import interrupted_waiting

    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING)
    settings.EMBEDDED_WORKER = False
    err = io.StringIO()

    error = interrupted_waiting(err, IngestRun.objects.get(id=run_id))

    assert err.getvalue() == "" and error.returncode == 130
    assert str(error).startswith(f"interrupted: run {run_id} goes on in the workers (4 of 4 files done so far)")


def test_a_stalled_run_names_the_files_in_hand_and_what_to_do(settings: Any) -> None:
    """It said "is a worker running?" while a dead worker's file waited out the visibility timeout."""
    from docqa.actions import stall_message
    from docqa.models import Matter, Source

    matter = Matter.objects.create(slug="stall", name="stall")
    run = IngestRun.objects.create(matter=matter, source=Source.objects.create(matter=matter, root="/x"), actor="t")
    item = IngestItem.objects.create(run=run, path="big.pdf", change="new")
    settings.SPLIT_QUEUES = True
    assert stall_message(run) == (f"run {run.id} has not moved for 120 s and no worker has taken its files: is one "
                                  "running? (celery -A docqa worker -Q celery,embed)")
    IngestItem.objects.filter(id=item.id).update(state=ItemState.PARSING)
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert stall_message(run) == (f"run {run.id} has not moved for 120 s: big.pdf is in a worker's hands: a large "
                                  "file, or a worker that died, whose task the broker gives back after its visibility "
                                  f"timeout ({visibility:,} s); `manage.py runs resume {run.id}` queues it again now")


def test_resume_refuses_a_run_whose_workers_are_at_it(data_dir: Path, folder: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Services mode: `runs resume` of a healthy running run queued its files a second time."""
    from datetime import timedelta

    from django.utils import timezone

    from docqa import actions
    from ingest.errors import DocqaError

    run_id = json.loads(command("ingest", str(folder), "--matter", "ops", "--json"))["run"]
    IngestItem.objects.filter(run_id=run_id, path="clause-0.txt").update(state=ItemState.EMBEDDING,
                                                                         started_at=timezone.now())
    IngestRun.objects.filter(id=run_id).update(status=RunStatus.RUNNING)
    sent: list[int] = []
    monkeypatch.setattr(actions, "enqueue_items", lambda items: sent.extend(i.id for i in items))
    run = IngestRun.objects.get(id=run_id)

    with pytest.raises(DocqaError, match=rf"run {run_id} is running: a file moved \d+ s ago, so its workers are at "
                                         r"it\. Resume a run that stopped \(no progress for 120 s\), or cancel it first"):
        actions.do_resume_run(run, "cli:ops")
    assert sent == []
    long_ago = timezone.now() - timedelta(seconds=300)  # quiet since: a worker died with it
    IngestItem.objects.filter(run_id=run_id).update(started_at=long_ago, finished_at=long_ago)
    assert actions.do_resume_run(run, "cli:ops") == 1 and len(sent) == 1

"""Every URL against every kind of user, and ids swapped across matters: zero leaks.

The matrix lists, for each page, what each user gets: anonymous users are sent to sign in,
readers of the matter see it, editors and managers may also act on runs, auditors see the trail
but not the matter, a walled-off user and a member of another matter get 404 (the matter's
existence is not confirmed), and the audit pages answer 403 to anyone without the permission.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from docqa.actions import record_audit
from docqa.models import (
    AuditEvent,
    Document,
    DocumentText,
    Exclusion,
    IngestRun,
    Matter,
    Membership,
    Role,
    RunStatus,
    Source,
)

pytestmark = pytest.mark.django_db

USERS = ("anonymous", "viewer", "editor", "manager", "auditor", "excluded", "outsider")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    return build_world(tmp_path)


def build_world(tmp_path: Path) -> dict[str, object]:
    """Two matters (acme, beta) with a run and a document each, and one user of every kind."""
    acme = Matter.objects.create(slug="acme", name="Acme")
    beta = Matter.objects.create(slug="beta", name="Beta")
    team = Group.objects.create(name="acme-team")
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_auditevent"))
    users = {name: User.objects.create_user(name, password="pw-123456") for name in USERS[1:]}
    Membership.objects.create(matter=acme, user=users["viewer"], role=Role.VIEWER)
    Membership.objects.create(matter=acme, group=team, role=Role.EDITOR)
    users["editor"].groups.add(team)
    users["excluded"].groups.add(team)
    Exclusion.objects.create(matter=acme, user=users["excluded"], created_by="test")
    Membership.objects.create(matter=acme, user=users["manager"], role=Role.MANAGER)
    users["auditor"].groups.add(auditors)
    Membership.objects.create(matter=beta, user=users["outsider"], role=Role.MANAGER)
    runs, docs = {}, {}
    for matter in (acme, beta):
        root = tmp_path / matter.slug
        root.mkdir()
        (root / "memo.txt").write_text(f"{matter.name} privileged memo: the settlement figure is confidential.\n")
        source = Source.objects.create(matter=matter, root=str(root))
        runs[matter.slug] = IngestRun.objects.create(matter=matter, source=source, actor="test", status=RunStatus.RUNNING)
        text = DocumentText.objects.create(sha256=matter.slug * 8, text=(root / "memo.txt").read_text(), parser="text")
        docs[matter.slug] = Document.objects.create(matter=matter, source=source, path="memo.txt", kind="txt",
                                                    sha256=matter.slug * 8, status="indexed", text=text)
    answer = record_audit("web:viewer", "question.answer", acme, {"question": 1, "text": "q", "sources": []})
    return {"users": users, "acme_run": runs["acme"].id, "beta_run": runs["beta"].id, "event": answer.id,
            "acme_doc": docs["acme"].id, "beta_doc": docs["beta"].id, "acme_root": str(tmp_path / "acme")}


def client_for(world: dict, name: str) -> Client:
    client = Client()
    if name != "anonymous":
        client.force_login(world["users"][name])
    return client


LOGIN, OK, GONE, FORBIDDEN, REDIRECT = "login", 200, 404, 403, 302
READERS = {"viewer": OK, "editor": OK, "manager": OK, "auditor": GONE, "excluded": GONE, "outsider": GONE}
EDITORS = {"viewer": GONE, "editor": REDIRECT, "manager": REDIRECT, "auditor": GONE, "excluded": GONE, "outsider": GONE}
AUDITORS = {"viewer": FORBIDDEN, "editor": FORBIDDEN, "manager": FORBIDDEN, "auditor": OK, "excluded": FORBIDDEN,
            "outsider": FORBIDDEN}
MATRIX = [
    ("GET", "/m/acme/", READERS),
    ("GET", "/m/acme/documents/", READERS),
    ("GET", "/m/acme/runs/", READERS),
    ("GET", "/m/acme/runs/{acme_run}/", READERS),
    ("GET", "/m/acme/runs/{acme_run}/failures.csv", READERS),
    ("POST", "/m/acme/runs/{acme_run}/cancel", EDITORS),
    ("POST", "/m/acme/runs/{acme_run}/resume", EDITORS),
    ("POST", "/m/acme/runs/{acme_run}/retry", EDITORS),
    ("POST", "/m/acme/sync", EDITORS),
    ("POST", "/m/acme/upload", EDITORS),
    ("POST", "/m/acme/ask/stream", {**READERS, "viewer": 400, "editor": 400, "manager": 400}),
    ("GET", "/m/acme/c/999999/", {**READERS, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("GET", "/m/acme/q/999999/", {**READERS, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("POST", "/m/acme/q/999999/stop", {**READERS, "viewer": GONE, "editor": GONE, "manager": GONE}),
    ("GET", "/m/acme/documents/{acme_doc}/", READERS),
    ("GET", "/m/acme/documents/{acme_doc}/?start=0&end=20", READERS),
    ("GET", "/m/acme/documents/{acme_doc}/file", READERS),
    ("GET", "/audit/", AUDITORS),
    ("GET", "/audit/{event}/", AUDITORS),
    ("GET", "/audit/export.csv", AUDITORS),
    ("GET", "/audit/export.jsonl", AUDITORS),
]


@pytest.mark.parametrize("method, url, expected", MATRIX, ids=[f"{m} {u}" for m, u, _ in MATRIX])
@pytest.mark.parametrize("user", USERS)
def test_every_url_against_every_user(world: dict, method: str, url: str, expected: dict, user: str) -> None:
    path = url.format(**world)
    client = client_for(world, user)
    response = client.get(path) if method == "GET" else client.post(path)
    if user == "anonymous":
        assert response.status_code == 302 and response.url.startswith("/login/"), (user, path)
    else:
        assert response.status_code == expected[user], (user, path, response.status_code)


@pytest.mark.parametrize("url", [
    "/m/beta/runs/{acme_run}/",  # a run of acme asked for under a matter the user may read
    "/m/beta/runs/{acme_run}/failures.csv",
    "/m/acme/runs/{beta_run}/",
    "/m/beta/documents/{acme_doc}/",
    "/m/beta/documents/{acme_doc}/file",
    "/m/acme/documents/{beta_doc}/",
    "/m/acme/documents/{beta_doc}/file",
])
def test_ids_swapped_across_matters_find_nothing(world: dict, url: str) -> None:
    for user in ("outsider", "manager"):
        assert client_for(world, user).get(url.format(**world)).status_code == 404
    assert client_for(world, "outsider").post(
        "/m/beta/runs/{acme_run}/cancel".format(**world)).status_code == 404
    assert IngestRun.objects.get(id=world["acme_run"]).status == RunStatus.RUNNING


def test_home_lists_only_the_matters_a_user_may_read(world: dict) -> None:
    for user, visible in (("viewer", {"acme"}), ("excluded", set()), ("auditor", set()), ("outsider", {"beta"})):
        response = client_for(world, user).get("/", follow=True)
        page = response.content.decode()
        assert {slug for slug in ("acme", "beta") if f"/m/{slug}/" in page} == visible, user


def test_the_admin_is_for_staff_only(world: dict) -> None:
    for user in USERS[1:]:
        response = client_for(world, user).get("/admin/")
        assert response.status_code == 302 and "/admin/login/" in response.url


# --- Management commands: the same rules for whoever they act as ---------------------------------
#
# A command acts as the docqa account its --user (ask, ingest, runs) or --actor (matter, retention)
# names; with none, as the server's operator. "anonymous" is a name with no account here.

class Authorized(Exception):
    """Raised where an allowed ask or ingest would start its real work."""


YES, NO = "allowed", "refused"
CMD_USERS = (*USERS, "admin", "operator")
REFUSED = {"anonymous": NO, "auditor": NO, "excluded": NO, "outsider": NO, "admin": YES, "operator": YES}
CMD_READERS = {**REFUSED, "viewer": YES, "editor": YES, "manager": YES}
CMD_EDITORS = {**REFUSED, "viewer": NO, "editor": YES, "manager": YES}
CMD_MANAGERS = {**REFUSED, "viewer": NO, "editor": NO, "manager": YES}
CMD_ADMINS = {**REFUSED, "viewer": NO, "editor": NO, "manager": NO}
COMMANDS = [
    (("ask", "--matter", "acme", "Who may terminate?"), "--user", CMD_READERS),
    (("ingest", "{acme_root}", "--matter", "acme"), "--user", CMD_EDITORS),
    (("runs", "failures", "{acme_run}"), "--user", CMD_READERS),
    (("runs", "cancel", "{acme_run}"), "--user", CMD_EDITORS),
    (("runs", "retry", "{acme_run}", "--no-wait"), "--user", CMD_EDITORS),
    (("matter", "grant", "acme", "--user", "auditor", "--role", "viewer"), "--actor", CMD_MANAGERS),
    (("matter", "exclude", "acme", "--user", "viewer"), "--actor", CMD_MANAGERS),
    (("matter", "hold", "acme", "--reason", "subpoena"), "--actor", CMD_MANAGERS),
    (("matter", "create", "gamma"), "--actor", CMD_ADMINS),
    (("retention", "--days", "30", "--dry-run"), "--actor", CMD_ADMINS),
]


@pytest.mark.parametrize("args, option, expected", COMMANDS, ids=[" ".join(a[:2]) for a, _, _ in COMMANDS])
@pytest.mark.parametrize("user", CMD_USERS)
def test_every_command_against_every_user(world: dict, tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                          args: tuple[str, ...], option: str, expected: dict, user: str) -> None:
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    def stop(*_: object) -> None:
        raise Authorized

    monkeypatch.setattr("docqa.management.commands.ask.claim_embedded", stop)
    monkeypatch.setattr("docqa.management.commands.ingest.start_local_work", stop)
    monkeypatch.setattr("docqa.management.commands.runs.start_local_work", stop)
    User.objects.create_superuser("admin", password="pw-123456")
    before = AuditEvent.objects.count()
    argv = [a.format(folder=tmp_path, **world) for a in args]
    if user != "operator":
        argv += [option, "nobody" if user == "anonymous" else user]
    try:
        call_command(*argv, stdout=io.StringIO(), stderr=io.StringIO())
        outcome = YES
    except Authorized:
        outcome = YES
    except CommandError as exc:
        outcome = NO
        assert "acme" not in str(exc) or "may not" in str(exc), str(exc)  # never says whether acme exists
        assert AuditEvent.objects.count() == before  # a refused command changes nothing
    assert outcome == expected[user], (user, argv)


@pytest.mark.parametrize("command", [("runs", "list"), ("matter", "list")])
def test_listing_commands_show_only_what_the_account_may_read(world: dict, command: tuple[str, str]) -> None:
    import io

    from django.core.management import call_command

    option = "--user" if command[0] == "runs" else "--actor"
    for user, visible in (("viewer", {"acme"}), ("excluded", set()), ("auditor", set()), ("outsider", {"beta"})):
        out = io.StringIO()
        call_command(*command, option, user, stdout=out)
        assert {slug for slug in ("acme", "beta") if slug in out.getvalue()} == visible, (command, user)


def test_a_follow_up_cannot_continue_someone_elses_conversation(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """--conversation with another user's thread is refused as if it did not exist (no history leaks)."""
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from docqa.models import Conversation

    monkeypatch.setattr("docqa.management.commands.ask.claim_embedded", lambda *_: None)
    monkeypatch.setattr("docqa.management.commands.ask.shutdown", lambda: None)
    acme = Matter.objects.get(slug="acme")
    theirs = Conversation.objects.create(matter=acme, user=world["users"]["manager"], actor="web:manager")
    with pytest.raises(CommandError, match=f"no conversation {theirs.id} in matter acme"):
        call_command("ask", "--matter", "acme", "--conversation", str(theirs.id), "--user", "viewer", "And then?",
                     stdout=io.StringIO())


def test_viewing_and_downloading_a_document_are_audited(world: dict) -> None:
    client = client_for(world, "viewer")
    page = client.get("/m/acme/documents/{acme_doc}/?start=5&end=20&page=1".format(**world)).content.decode()
    assert '<mark id="hit">privileged memo</mark>' in page and "#page=1" in page
    download = client.get("/m/acme/documents/{acme_doc}/file".format(**world))
    assert b"".join(download.streaming_content).startswith(b"Acme privileged memo")
    assert download["X-Content-Type-Options"] == "nosniff"
    events = list(AuditEvent.objects.filter(actor="web:viewer").values_list("action", "detail"))
    assert ("document.view", {"document": world["acme_doc"], "path": "memo.txt", "version": "acme" * 8,
                              "start": 5, "end": 20}) in events
    assert ("document.download", {"document": world["acme_doc"], "path": "memo.txt", "version": "acme" * 8,
                                  "size": 61}) in events


def test_a_document_path_cannot_leave_its_source_folder(world: dict, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside every source")
    doc = Document.objects.get(id=world["acme_doc"])
    Document.objects.filter(id=doc.id).update(path="../secret.txt")
    assert client_for(world, "viewer").get(f"/m/acme/documents/{doc.id}/file").status_code == 404
    Document.objects.filter(id=doc.id).update(path="gone.txt")  # deleted from the folder since
    assert client_for(world, "viewer").get(f"/m/acme/documents/{doc.id}/file").status_code == 404
    assert not AuditEvent.objects.filter(action="document.download").exists()


def test_an_html_original_downloads_rather_than_opening_as_a_page(world: dict, tmp_path: Path) -> None:
    (tmp_path / "acme" / "page.html").write_text("<script>alert(1)</script>")
    doc = Document.objects.get(id=world["acme_doc"])
    Document.objects.filter(id=doc.id).update(path="page.html")
    response = client_for(world, "viewer").get(f"/m/acme/documents/{doc.id}/file")
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")

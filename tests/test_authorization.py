"""Every URL against every kind of user, and ids swapped across matters: zero leaks.

The matrix lists, for each page, what each user gets: anonymous users are sent to sign in,
readers of the matter see it, editors and managers may also act on runs, auditors see the trail
but not the matter, a walled-off user and a member of another matter get 404 (the matter's
existence is not confirmed), and the audit pages answer 403 to anyone without the permission.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from docqa.actions import record_audit
from docqa.models import Exclusion, IngestRun, Matter, Membership, Role, RunStatus, Source

pytestmark = pytest.mark.django_db

USERS = ("anonymous", "viewer", "editor", "manager", "auditor", "excluded", "outsider")


@pytest.fixture
def world() -> dict[str, object]:
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
    runs = {}
    for matter in (acme, beta):
        source = Source.objects.create(matter=matter, root=f"/srv/{matter.slug}")
        runs[matter.slug] = IngestRun.objects.create(matter=matter, source=source, actor="test", status=RunStatus.RUNNING)
    answer = record_audit("web:viewer", "question.answer", acme, {"question": 1, "text": "q", "sources": []})
    return {"users": users, "acme_run": runs["acme"].id, "beta_run": runs["beta"].id, "event": answer.id}


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

"""Matters, roles through users and groups, ethical walls, and the audited `matter` command."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client

from docqa.actions import verify_audit_chain
from docqa.models import AuditEvent, Exclusion, Matter, Membership, Role
from docqa.permissions import matter_for, readable_matters, role_in

pytestmark = pytest.mark.django_db


def matter_cmd(*args: str) -> str:
    out = io.StringIO()
    call_command("matter", *args, "--actor", "gc", stdout=out)
    return out.getvalue()


@pytest.fixture
def people() -> dict[str, User]:
    users = {name: User.objects.create_user(name, password="pw-123456") for name in ("ann", "bob", "cat", "dan")}
    litigation = Group.objects.create(name="litigation")
    users["bob"].groups.add(litigation)
    users["cat"].groups.add(litigation)
    users["root"] = User.objects.create_superuser("root", password="pw-123456")
    users["gc"] = User.objects.create_superuser("gc", password="pw-123456")  # the general counsel, who acts
    return users


def test_roles_come_from_users_and_groups_and_the_highest_wins(people: dict[str, User]) -> None:
    matter_cmd("create", "acme", "--name", "Acme v. Beta")
    matter_cmd("grant", "acme", "--group", "litigation", "--role", "viewer")
    matter_cmd("grant", "acme", "--user", "bob", "--role", "editor")
    acme = Matter.objects.get(slug="acme")

    assert role_in(people["cat"], acme) == Role.VIEWER  # through the group
    assert role_in(people["bob"], acme) == Role.EDITOR  # direct editor beats group viewer
    assert role_in(people["ann"], acme) is None
    assert role_in(people["root"], acme) == Role.MANAGER
    assert list(readable_matters(people["cat"])) == [acme]
    assert list(readable_matters(people["ann"])) == []
    assert matter_for(people["bob"], "acme", Role.EDITOR) == acme
    with pytest.raises(Exception, match="no such matter"):
        matter_for(people["cat"], "acme", Role.EDITOR)


def test_an_ethical_wall_beats_every_membership(people: dict[str, User]) -> None:
    matter_cmd("create", "acme")
    matter_cmd("grant", "acme", "--group", "litigation", "--role", "manager")
    matter_cmd("grant", "acme", "--user", "cat", "--role", "manager")
    matter_cmd("exclude", "acme", "--user", "cat", "--reason", "worked for the other side")
    matter_cmd("exclude", "acme", "--user", "root")
    acme = Matter.objects.get(slug="acme")

    for name in ("cat", "root"):
        assert role_in(people[name], acme) is None
        assert acme not in readable_matters(people[name])
        client = Client()
        client.force_login(people[name])
        assert client.get("/m/acme/").status_code == 404
        assert client.get("/m/acme/documents/").status_code == 404
        assert b"acme" not in client.get("/").content
    assert role_in(people["bob"], acme) == Role.MANAGER

    matter_cmd("unexclude", "acme", "--user", "cat")
    assert role_in(people["cat"], acme) == Role.MANAGER


def test_every_change_is_audited_and_the_chain_holds(people: dict[str, User]) -> None:
    matter_cmd("create", "acme")
    matter_cmd("grant", "acme", "--user", "ann", "--role", "viewer")
    matter_cmd("grant", "acme", "--user", "ann", "--role", "editor")
    matter_cmd("revoke", "acme", "--user", "ann")
    matter_cmd("exclude", "acme", "--user", "dan", "--reason", "conflict")
    matter_cmd("unexclude", "acme", "--user", "dan")

    events = list(AuditEvent.objects.filter(matter__slug="acme").values_list("action", "actor", "detail"))
    assert [e[0] for e in events] == ["matter.create", "matter.grant", "matter.grant", "matter.revoke",
                                      "matter.exclude", "matter.unexclude"]
    assert all(actor == "cli:gc" for _, actor, _ in events)
    assert events[2][2] == {"user": "ann", "role": "editor"}
    assert events[4][2] == {"user": "dan", "reason": "conflict"}
    assert not Membership.objects.exists() and not Exclusion.objects.exists()
    assert verify_audit_chain()[1] == []
    listing = matter_cmd("list")
    assert listing.startswith("acme")


@pytest.mark.parametrize("args, message", [
    (("grant", "nope", "--user", "ann", "--role", "viewer"), "no matter 'nope'"),
    (("grant", "acme", "--user", "zed", "--role", "viewer"), "no user 'zed'"),
    (("grant", "acme", "--group", "nobody", "--role", "viewer"), "no group 'nobody'"),
    (("grant", "acme", "--user", "ann"), "needs --role"),
    (("grant", "acme", "--user", "ann", "--group", "litigation", "--role", "viewer"), "exactly one"),
    (("revoke", "acme", "--user", "ann"), "not a member"),
    (("create", "acme"), "already exists"),
])
def test_mistakes_are_refused_clearly_and_change_nothing(people: dict[str, User], args: tuple[str, ...],
                                                         message: str) -> None:
    matter_cmd("create", "acme")
    before = AuditEvent.objects.count()

    with pytest.raises(CommandError, match=message):
        matter_cmd(*args)
    assert AuditEvent.objects.count() == before


def management(prefix: str, total: int, initial: int = 0) -> dict[str, str]:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def test_admin_edits_of_members_and_walls_are_audited_too(people: dict[str, User]) -> None:
    client = Client()
    client.force_login(people["root"])
    litigation = Group.objects.get(name="litigation")
    added = client.post("/admin/docqa/matter/add/", {
        "slug": "acme", "name": "Acme",
        **management("memberships", 2), "memberships-0-group": str(litigation.id), "memberships-0-role": "viewer",
        "memberships-1-user": str(people["ann"].id), "memberships-1-role": "manager",
        **management("exclusions", 1), "exclusions-0-user": str(people["cat"].id), "exclusions-0-reason": "conflict",
    })
    assert added.status_code == 302, added.content.decode()[:2000]
    acme = Matter.objects.get(slug="acme")
    ann = Membership.objects.get(matter=acme, user=people["ann"])
    wall = Exclusion.objects.get(matter=acme)
    group = Membership.objects.get(matter=acme, group=litigation)
    changed = client.post(f"/admin/docqa/matter/{acme.id}/change/", {
        "slug": "acme", "name": "Acme",
        **management("memberships", 2, 2),
        "memberships-0-id": str(group.id), "memberships-0-matter": str(acme.id), "memberships-0-group": str(litigation.id),
        "memberships-0-role": "viewer",
        "memberships-1-id": str(ann.id), "memberships-1-matter": str(acme.id), "memberships-1-user": str(people["ann"].id),
        "memberships-1-role": "manager", "memberships-1-DELETE": "on",
        **management("exclusions", 1, 1), "exclusions-0-id": str(wall.id), "exclusions-0-matter": str(acme.id),
        "exclusions-0-user": str(people["cat"].id), "exclusions-0-reason": "conflict",
    })
    assert changed.status_code == 302, changed.content.decode()[:2000]

    actions = [(a, d) for a, d in AuditEvent.objects.filter(matter=acme, actor="admin:root").values_list("action", "detail")]
    assert ("matter.create", {"slug": "acme", "name": "Acme"}) in actions
    assert ("matter.grant", {"group": "group:litigation", "role": "viewer"}) in actions
    assert ("matter.exclude", {"user": "cat", "reason": "conflict"}) in actions
    assert ("matter.revoke", {"user": "ann"}) in actions
    assert role_in(people["ann"], acme) is None and role_in(people["cat"], acme) is None
    assert Exclusion.objects.get(matter=acme).created_by == "admin:root"
    assert client.post(f"/admin/docqa/matter/{acme.id}/delete/", {"post": "yes"}).status_code == 403
    assert verify_audit_chain()[1] == []


def test_every_admin_change_is_audited_including_users_groups_and_legal_holds(people: dict[str, User]) -> None:
    client = Client()
    client.force_login(people["root"])
    added = client.post("/admin/auth/user/add/", {"username": "eve", "password1": "S3cure-pass-99",
                                                 "password2": "S3cure-pass-99", "usable_password": "true"})
    assert added.status_code == 302, added.content.decode()[:2000]
    eve = User.objects.get(username="eve")
    litigation = Group.objects.get(name="litigation")
    assert client.post(f"/admin/auth/group/{litigation.id}/delete/", {"post": "yes"}).status_code == 302
    acme = Matter.objects.create(slug="acme", name="Acme")
    held = client.post(f"/admin/docqa/matter/{acme.id}/change/", {
        "slug": "acme", "name": "Acme", "legal_hold": "on", "legal_hold_reason": "subpoena 17",
        **management("memberships", 0), **management("exclusions", 0)})
    assert held.status_code == 302, held.content.decode()[:2000]

    events = list(AuditEvent.objects.filter(actor="admin:root").values_list("action", "detail"))
    assert ("admin.add", "auth.user", str(eve.id)) in [(a, d.get("model"), d.get("object")) for a, d in events]
    assert ("admin.delete", "auth.group", "litigation") in [(a, d.get("model"), d.get("repr")) for a, d in events]
    assert ("matter.hold", {"reason": "subpoena 17"}) in events
    assert "admin.change" in [a for a, _ in events]
    assert "S3cure" not in str(events)  # a password never reaches the trail
    # Documents and runs change only through a sync: the admin shows them, read-only.
    for url in ("/admin/docqa/document/add/", "/admin/docqa/ingestrun/add/", "/admin/docqa/auditevent/add/"):
        assert client.get(url).status_code == 403
    assert verify_audit_chain()[1] == []


@pytest.mark.parametrize("name", ["Bad Slug!", "acme/beta", "smith v jones", "x" * 101])
def test_a_matter_name_that_cannot_stand_in_an_address_is_refused(name: str, tmp_path: Any) -> None:
    """/m/SLUG/ links are built from the name: one that is not a slug would break every page
    listing the matter, so create, ingest and bootstrap refuse it before anything is made."""
    (tmp_path / "a.txt").write_text("A short note about nothing in particular.\n")

    for command in (("matter", "create", name), ("ingest", str(tmp_path), "--matter", name),
                    ("bootstrap", "--matter", name, "--username", "someone")):
        with pytest.raises(CommandError, match="cannot name a matter"):
            call_command(*command, stdout=io.StringIO())

    assert not Matter.objects.exists() and not User.objects.filter(username="someone").exists()
    out = io.StringIO()
    call_command("matter", "create", "smith-v-jones_2024", "--name", "Smith v Jones (2024)", stdout=out)
    assert out.getvalue() == "matter smith-v-jones_2024 created\n"
    with pytest.raises(CommandError, match="'Smith-V-Jones_2024' cannot name a matter: it differs from the matter "
                                           "'smith-v-jones_2024' only in case"):
        call_command("matter", "create", "Smith-V-Jones_2024", stdout=io.StringIO())


def test_bootstrap_keeps_every_login_it_made_and_makes_the_asked_user_a_manager(data_dir: Any) -> None:
    def bootstrap(*args: str) -> str:
        out = io.StringIO()
        call_command("bootstrap", *args, stdout=out)
        return out.getvalue()

    first = bootstrap("--matter", "acme")
    assert first.startswith("Sign in as admin / ")
    second = bootstrap("--matter", "acme", "--username", "zed")
    assert second.startswith("Sign in as zed / ")
    assert bootstrap("--matter", "acme") == first  # admin's saved password was not written over
    assert len((data_dir / "login.txt").read_text().splitlines()) == 2
    ann = User.objects.create_user("ann", password="pw-123456")
    Membership.objects.create(matter=Matter.objects.get(slug="acme"), user=ann, role=Role.VIEWER)
    assert bootstrap("--matter", "acme", "--username", "ann") == "Sign in as ann (password set earlier)\n"
    assert role_in(ann, Matter.objects.get(slug="acme")) == Role.MANAGER
    made = AuditEvent.objects.filter(action="user.create")
    assert [e.detail["user"] for e in made] == ["admin", "zed"] and {e.actor for e in made} == {made[0].actor}
    assert made[0].actor.startswith("cli:")
    granted = AuditEvent.objects.filter(action="matter.grant").values_list("detail", flat=True)
    assert [g["user"] for g in granted] == ["admin", "zed", "ann"]


def test_a_repeated_wall_or_hold_says_what_became_of_its_reason(people: dict[str, User]) -> None:
    matter_cmd("create", "acme")
    assert matter_cmd("exclude", "acme", "--user", "cat", "--reason", "acted for Beta") == "cat is walled off from acme\n"
    assert matter_cmd("exclude", "acme", "--user", "cat") == "cat is walled off from acme (already; reason kept)\n"
    assert Exclusion.objects.get(user=people["cat"]).reason == "acted for Beta"  # not wiped by a bare repeat
    assert matter_cmd("exclude", "acme", "--user", "cat", "--reason", "conflict") == (
        "cat is walled off from acme (already; reason was 'acted for Beta', now 'conflict')\n")
    assert matter_cmd("grant", "acme", "--user", "cat", "--role", "editor").startswith(
        "cat is editor in acme (still walled off from it: the wall beats any role")
    matter_cmd("hold", "acme", "--reason", "letter of 2026-11-30")
    assert matter_cmd("hold", "acme", "--reason", "second letter").endswith(
        "(already; reason was 'letter of 2026-11-30', now 'second letter')\n")


def test_folders_are_named_by_the_fewest_last_parts_that_tell_them_apart() -> None:
    from docqa.models import folder_names, shown_path, split_shown, told_apart

    uploads = "/data/uploads/acme"
    assert folder_names([(1, "/srv/acme/pleadings")], uploads) == {}  # one folder: a path is its name
    assert folder_names([(1, "/srv/acme/pleadings"), (2, uploads)], uploads) == {1: "pleadings", 2: "uploads"}
    assert folder_names([(1, "/srv/a/docs"), (2, "/srv/b/docs"), (3, "/srv/c")], uploads) == {
        1: "a/docs", 2: "b/docs", 3: "c"}  # only the names that clash grow
    assert folder_names([(1, "/uploads"), (2, uploads)], uploads) == {1: "/uploads", 2: "uploads"}
    names = {1: "a/docs", 2: "a/docs/2019", 3: "uploads"}
    assert not told_apart(list(names.values()))  # "a/docs/2019" would read as a folder of "a/docs"
    assert shown_path({1: "letters"}, 1, "x/lease.txt") == "letters/x/lease.txt"
    assert shown_path({}, 1, "x/lease.txt") == "x/lease.txt"
    assert split_shown(names, "a/docs/2019/lease.txt") == (2, "lease.txt")
    assert split_shown(names, "a/docs") == (1, "")
    assert split_shown(names, "annex/lease.txt") == (None, "annex/lease.txt")
    # A name is read as given first: a folder named by its root ("/uploads", beside the web's
    # uploads) or by a name with spaces around it; then without the slashes around it.
    rooted = {1: "/uploads", 2: "uploads", 3: " lead"}
    assert split_shown(rooted, "/uploads/docs/") == (1, "docs") and split_shown(rooted, "uploads/docs") == (2, "docs")
    assert split_shown(rooted, " lead/a.txt") == (3, "a.txt") and split_shown(rooted, "lead") == (None, "lead")
    assert split_shown({1: "letters"}, "/letters/") == (1, "") and split_shown({}, "/sub/") == (None, "sub")

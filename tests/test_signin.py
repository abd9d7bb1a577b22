"""Sign-in, failed sign-in and sign-out are audited; repeated failures lock the name out."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from docqa.actions import verify_audit_chain
from docqa.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann() -> User:
    return User.objects.create_user("ann", password="right-pw-123")


def sign_in(client: Client, password: str, username: str = "ann", url: str = "/login/") -> Any:
    return client.post(url, {"username": username, "password": password})


def test_sign_in_failure_and_sign_out_are_audited(ann: User) -> None:
    client = Client()
    assert sign_in(client, "wrong").status_code == 200
    assert sign_in(client, "right-pw-123").status_code == 302
    client.post("/logout/")

    events = list(AuditEvent.objects.values_list("action", "actor", "detail"))
    assert [e[0] for e in events] == ["login.failure", "login.success", "logout"]
    assert events[0][2] == {"username": "ann", "address": "127.0.0.1"}
    assert "right-pw-123" not in str(events) and "wrong" not in str(events)
    assert verify_audit_chain()[1] == []


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_repeated_failures_lock_the_name_out_for_a_while(ann: User, settings: Any, url: str) -> None:
    User.objects.create_superuser("root", password="root-pw-123")
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_LOCKOUT_SECONDS = 2
    client = Client()
    for _ in range(3):
        sign_in(client, "wrong", "root", url)

    refused = sign_in(client, "root-pw-123", "root", url)  # even the right password

    assert refused.status_code == 200 and b"Too many failed sign-ins" in refused.content
    assert AuditEvent.objects.filter(action="login.throttled").count() == 1
    assert sign_in(Client(), "right-pw-123").status_code == 302  # another name is not locked out
    time.sleep(2.1)
    assert sign_in(Client(), "root-pw-123", "root", url).status_code == 302

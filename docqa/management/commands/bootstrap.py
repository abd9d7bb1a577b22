"""manage.py bootstrap --matter SLUG: make sure a login exists and can use the matter.

Creates the user on first run with a generated password kept in var/login.txt (mode 600), and
prints the login every time, so `make run` always tells a new user how to sign in.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import cli_actor, require_database
from docqa.models import Matter, Membership, Role
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = ("Create (or show) a local login and make it a manager of a matter (created if missing). "
            "A login it creates is a superuser with a generated password, kept in var/login.txt.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--matter", default="default", help="matter slug (default: default); created if missing")
        parser.add_argument("--username", default="admin", help="the login (default: admin); created as a superuser "
                                                                "if missing")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        if not Matter.objects.filter(slug=options["matter"]).exists():
            try:  # before any login is made
                actions.checked_slug(options["matter"])
            except DocqaError as exc:
                raise CommandError(str(exc)) from exc
        actor = cli_actor(None)
        login_file = settings.DATA_DIR / "login.txt"
        saved = saved_logins(login_file)
        user_model = get_user_model()
        user = user_model.objects.filter(username=options["username"]).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = user_model.objects.create_superuser(options["username"], "", password)
            actions.record_audit(actor, "user.create", None, {"user": user.username, "superuser": True})
            saved[user.username] = password  # beside the logins made before, never over them
            login_file.write_text("".join(f"{name} {word}\n" for name, word in saved.items()), encoding="utf-8")
            login_file.chmod(0o600)
        matter = actions.get_or_create_matter(options["matter"], actor)
        if not Membership.objects.filter(matter=matter, user=user, role=Role.MANAGER).exists():
            actions.do_grant(matter, user, Role.MANAGER, actor)
        if user.username in saved:
            self.stdout.write(f"Sign in as {user.username} / {saved[user.username]}  (saved in {login_file})")
        else:
            self.stdout.write(f"Sign in as {user.username} (password set earlier)")


def saved_logins(login_file: Path) -> dict[str, str]:
    """The logins bootstrap made, one "name password" a line, oldest first."""
    if not login_file.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in login_file.read_text(encoding="utf-8").splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

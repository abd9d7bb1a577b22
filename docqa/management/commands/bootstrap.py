"""manage.py bootstrap --matter SLUG: make sure a login exists and can use the matter.

Creates the user on first run with a generated password kept in var/login.txt (mode 600), and
prints the login every time, so `make run` always tells a new user how to sign in.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.models import Matter, Membership, Role
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "Create (or show) the local login and give it the manager role on a matter."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--matter", default="default")
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **options: Any) -> None:
        if not Matter.objects.filter(slug=options["matter"]).exists():
            try:  # before any login is made
                actions.checked_slug(options["matter"])
            except DocqaError as exc:
                raise CommandError(str(exc)) from exc
        login_file = settings.DATA_DIR / "login.txt"
        user_model = get_user_model()
        user = user_model.objects.filter(username=options["username"]).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = user_model.objects.create_superuser(options["username"], "", password)
            login_file.write_text(f"{user.username} {password}\n", encoding="utf-8")
            login_file.chmod(0o600)
        matter = actions.get_or_create_matter(options["matter"], f"cli:{user.username}")
        Membership.objects.get_or_create(matter=matter, user=user, defaults={"role": Role.MANAGER})
        if login_file.exists():
            username, password = login_file.read_text(encoding="utf-8").split()
            self.stdout.write(f"Sign in as {username} / {password}  (saved in {login_file})")
        else:
            self.stdout.write(f"Sign in as {user.username} (password set earlier)")

"""manage.py token create --user NAME [--name LABEL] | token list [--user NAME] | token revoke ID (audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import cli_actor, require_database
from docqa.models import ApiToken


class Command(BaseCommand):
    help = "Create, list and revoke users' API tokens (for /api/v1/ and the OpenAI-compatible /v1/)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["create", "list", "revoke"])
        parser.add_argument("token", nargs="?", type=int, help="revoke: the token's id (from `token list`)")
        parser.add_argument("--user", help="create, list: the user")
        parser.add_argument("--name", default="", help="create: a label, e.g. the client it is for")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        actor = cli_actor(None)
        if options["action"] == "create":
            user = get_user_model().objects.filter(username=options["user"] or "", is_active=True).first()
            if user is None:
                raise CommandError("give --user NAME of an active user")
            token = actions.do_create_token(user, options["name"], actor)
            self.stdout.write(token)
            self.stderr.write(f"the token for {user.get_username()} is shown once; only its hash is kept")
        elif options["action"] == "list":
            tokens = ApiToken.objects.select_related("user").order_by("id")
            if options["user"]:
                if not get_user_model().objects.filter(username=options["user"]).exists():
                    raise CommandError(f"no user {options['user']!r}")
                tokens = tokens.filter(user__username=options["user"])
            if not tokens:  # said on stderr: the list itself stays empty for scripts
                self.stderr.write(f"no tokens{' for ' + options['user'] if options['user'] else ''}; "
                                  "`manage.py token create --user NAME` makes one")
            for t in tokens:
                state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
                self.stdout.write(f"{t.id:>4}  {t.prefix}…  {t.user.get_username():<16} {t.name:<20} {state}, {used}")
        else:
            if not options["token"]:
                raise CommandError("give the token's id: `manage.py token list` shows them")
            if not actions.do_revoke_token(options["token"], actor):
                raise CommandError(f"no active token {options['token']}")
            self.stdout.write(f"token {options['token']} revoked")

"""manage.py matter: create matters and manage who may see them (every change audited).

    matter list                                   matters with their members and walls
    matter create SLUG [--name NAME]
    matter grant SLUG (--user NAME | --group NAME) --role viewer|editor|manager
    matter revoke SLUG (--user NAME | --group NAME)
    matter exclude SLUG --user NAME [--reason TEXT]   ethical wall: beats any membership
    matter unexclude SLUG --user NAME
    matter hold SLUG --reason TEXT                  legal hold: retention expires nothing of it
    matter release SLUG
    matter roots SLUG [PATH ...] [--clear]          folders its editors may sync from (none given: show them)
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from docqa import actions
from docqa.management.base import acting_as, matter_as, require_database, require_superuser
from docqa.models import Exclusion, Matter, Role
from docqa.permissions import readable_matters
from ingest.errors import DocqaError


class Command(BaseCommand):
    help = "Create matters and manage their members, roles and ethical walls (all audited):\n" + __doc__.split("\n\n", 1)[1]

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        import argparse

        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # keep the usage lines' layout
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "create", "grant", "revoke", "exclude", "unexclude", "hold", "release", "roots"])
        parser.add_argument("slug", nargs="?", help="the matter")
        parser.add_argument("paths", nargs="*", help="roots: the server folders (none: show them; --clear: uploads only)")
        parser.add_argument("--clear", action="store_true", help="roots: clear them, so only uploads can be synced")
        parser.add_argument("--name", default="", help="create: the matter's display name")
        parser.add_argument("--user", help="a user name")
        parser.add_argument("--group", help="a group name (grant, revoke)")
        parser.add_argument("--role", choices=Role.values, help="grant: the role")
        parser.add_argument("--reason", default="", help="exclude, hold: why (kept in the audit trail)")
        parser.add_argument("--actor", default=None,
                            help="act as this docqa account (a manager of the matter; create: an administrator)")

    def handle(self, *args: Any, **options: Any) -> None:
        require_database()
        action = options["action"]
        actor, account = acting_as(options["actor"])
        if action == "list":
            return self.list_matters(account)
        if not options["slug"]:
            raise CommandError(f"matter {action} needs the matter's SLUG")
        try:
            if action == "create":
                require_superuser(account, "create matters")
                matter = actions.do_create_matter(options["slug"], options["name"], actor)
                self.stdout.write(f"matter {matter.slug} created")
                return
            matter = matter_as(account, options["slug"], Role.MANAGER, doing="manage")
            if action == "roots":
                if options["paths"] and options["clear"]:
                    raise CommandError("give the folders, or --clear, not both")
                if not options["paths"] and not options["clear"]:  # a look, never a change
                    self.stdout.write(f"{matter.slug} may sync from: {', '.join(matter.roots()) or 'uploads only'}")
                    return
                require_superuser(account, "set the folders a matter may sync from")
                roots = actions.do_set_roots(matter, options["paths"], actor)
                self.stdout.write(f"{matter.slug} may sync from: {', '.join(roots) or 'uploads only'}")
                return
            if action == "hold":
                before = matter.legal_hold_reason if matter.legal_hold else None
                actions.do_hold(matter, options["reason"], actor)
                self.stdout.write(f"{matter.slug} is under legal hold: retention expires nothing of it"
                                  + again(before, options["reason"]))
                return
            if action == "release":
                if not actions.do_release(matter, actor):
                    raise CommandError(f"{matter.slug} is not under legal hold")
                self.stdout.write(f"{matter.slug} released from legal hold")
                return
            if action in ("grant", "revoke"):
                principal = self.principal(options)
                if action == "grant":
                    if not options["role"]:
                        raise CommandError("matter grant needs --role viewer|editor|manager")
                    actions.do_grant(matter, principal, options["role"], actor)
                    walled = isinstance(principal, get_user_model()) and Exclusion.objects.filter(
                        matter=matter, user=principal).exists()
                    self.stdout.write(f"{actions.principal_name(principal)} is {options['role']} in {matter.slug}"
                                      + (" (still walled off from it: the wall beats any role; `matter unexclude` "
                                         "lifts it)" if walled else ""))
                elif actions.do_revoke(matter, principal, actor):
                    self.stdout.write(f"{actions.principal_name(principal)} no longer a member of {matter.slug}")
                else:
                    raise CommandError(f"{actions.principal_name(principal)} is not a member of {matter.slug}")
                return
            user = self.user(options["user"])
            if action == "exclude":
                before = Exclusion.objects.filter(matter=matter, user=user).values_list("reason", flat=True).first()
                reason = options["reason"] or before or ""  # walled off again without a reason: the reason stays
                actions.do_exclude(matter, user, reason, actor)
                self.stdout.write(f"{user.get_username()} is walled off from {matter.slug}" + again(before, reason))
            elif actions.do_unexclude(matter, user, actor):
                self.stdout.write(f"{user.get_username()} is no longer walled off from {matter.slug}")
            else:
                raise CommandError(f"{user.get_username()} was not walled off from {matter.slug}")
        except DocqaError as exc:
            raise CommandError(str(exc)) from exc

    def list_matters(self, account: Any) -> None:
        matters = Matter.objects.all() if account is None else readable_matters(account)
        for matter in matters.order_by("slug").prefetch_related("memberships__user", "memberships__group",
                                                                        "exclusions__user"):
            hold = f"\tLEGAL HOLD: {matter.legal_hold_reason}" if matter.legal_hold else ""
            self.stdout.write(f"{matter.slug}\t{matter.name}{hold}")
            for root in matter.roots():
                self.stdout.write(f"  folders  {root}")
            for m in matter.memberships.all():
                who = actions.principal_name(m.group if m.group_id else m.user)
                self.stdout.write(f"  {m.role:8s} {who}")
            for e in matter.exclusions.all():
                self.stdout.write(f"  walled   {e.user.get_username()}" + (f" ({e.reason})" if e.reason else ""))

    def principal(self, options: dict[str, Any]) -> Any:
        if bool(options["user"]) == bool(options["group"]):
            raise CommandError("give exactly one of --user NAME or --group NAME")
        if options["group"]:
            group = Group.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"no group {options['group']!r}; create it in the admin first")
            return group
        return self.user(options["user"])

    def user(self, name: str | None) -> Any:
        if not name:
            raise CommandError("give --user NAME")
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"no user {name!r}")
        return user


def again(before: str | None, reason: str) -> str:
    """What a repeated hold or wall did to its reason: "" the first time."""
    if before is None:
        return ""
    return " (already; reason kept)" if reason == before else f" (already; reason was {before!r}, now {reason!r})"

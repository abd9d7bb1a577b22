"""Who may do what in which matter. Every view, command and query goes through these.

A user's role in a matter is the highest role held directly or through any of their groups.
An exclusion (ethical wall) beats every membership and superuser status: an excluded user does
not see the matter at all. Superusers otherwise hold the manager role everywhere.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from docqa.models import Matter, Membership, Role

RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.MANAGER: 3}


def readable_matters(user: Any) -> QuerySet[Matter]:
    if not getattr(user, "is_authenticated", False):
        return Matter.objects.none()
    matters = Matter.objects.all() if user.is_superuser else Matter.objects.filter(
        Q(memberships__user=user) | Q(memberships__group__in=user.groups.all())
    ).distinct()
    return matters.exclude(exclusions__user=user)


def role_in(user: Any, matter: Matter) -> Role | None:
    """The user's role in the matter, or None (no membership, or walled off)."""
    if not getattr(user, "is_authenticated", False) or matter.exclusions.filter(user=user).exists():
        return None
    if user.is_superuser:
        return Role(Role.MANAGER)
    held = Membership.objects.filter(Q(user=user) | Q(group__in=user.groups.all()), matter=matter)
    roles = [Role(r) for r in held.values_list("role", flat=True)]
    return max(roles, key=lambda r: RANK[r]) if roles else None


def matter_for(user: Any, slug: str, role: str = Role.VIEWER) -> Matter:
    """The matter if `user` holds at least `role` in it; 404 otherwise (no existence leak)."""
    matter = Matter.objects.filter(slug=slug).first()
    held = role_in(user, matter) if matter is not None else None
    if held is None or RANK[held] < RANK[Role(role)]:
        raise Http404("no such matter")
    return matter

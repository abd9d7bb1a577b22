"""Who may do what in which matter. Every view goes through these."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from docqa.models import Matter, Role

RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.MANAGER: 3}


def readable_matters(user: Any) -> QuerySet[Matter]:
    if user.is_superuser:
        return Matter.objects.all()
    return Matter.objects.filter(memberships__user=user)


def matter_for(user: Any, slug: str, role: str = Role.VIEWER) -> Matter:
    """The matter if `user` holds at least `role` in it; 404 otherwise (no existence leak)."""
    matter = readable_matters(user).filter(slug=slug).first()
    if matter is None:
        raise Http404("no such matter")
    if not user.is_superuser:
        held = matter.memberships.get(user=user).role
        if RANK[Role(held)] < RANK[Role(role)]:
            raise Http404("no such matter")
    return matter

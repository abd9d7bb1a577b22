"""What every page's navigation needs: the matters the signed-in user may read (the switcher)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from docqa.permissions import readable_matters


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"matters": readable_matters(user).order_by("slug")}

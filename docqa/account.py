"""Your API tokens, in the web UI: create one for a chat client or a script, see them, revoke them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from docqa import actions
from docqa.models import ApiToken


@login_required
def tokens(request: HttpRequest, created: str | None = None) -> HttpResponse:
    """The page lists your tokens; a token just created is shown once, in the answer to its POST
    (never kept anywhere: only its hash is stored)."""
    mine = ApiToken.objects.filter(user=request.user).order_by("-id")
    response = render(request, "docqa/tokens.html", {"tokens": mine, "created": created})
    if created:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def create_token(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()[:100]
    return tokens(request, actions.do_create_token(request.user, name, f"web:{request.user.get_username()}"))


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    # Only your own: another user's token id is as if it did not exist.
    if ApiToken.objects.filter(id=token_id, user=request.user).exists():
        actions.do_revoke_token(token_id, f"web:{request.user.get_username()}")
    return redirect("tokens")

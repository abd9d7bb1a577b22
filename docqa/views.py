"""Web views. Every one requires a login and checks the matter role."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from docqa import actions
from docqa.forms import AskForm
from docqa.models import Question
from docqa.permissions import matter_for, readable_matters
from ingest.errors import DocqaError


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    matters = list(readable_matters(request.user).order_by("slug"))
    if len(matters) == 1:
        return redirect("ask", slug=matters[0].slug)
    return render(request, "docqa/home.html", {"matters": matters})


@login_required
def ask(request: HttpRequest, slug: str) -> HttpResponse:
    matter = matter_for(request.user, slug)
    form = AskForm(request.POST or None)
    context: dict = {"matter": matter, "form": form, "matters": readable_matters(request.user).order_by("slug")}
    if request.method == "POST" and form.is_valid():
        try:
            outcome = actions.do_ask(
                matter,
                form.cleaned_data["question"],
                actor=request.user.get_username(),
                user=request.user,
                budget=form.cleaned_data["budget"],
                effort=form.cleaned_data["effort"],
            )
            result = outcome.result.as_dict() if outcome.result else None
            if result and result["mode"] == "search":
                # Nothing reads these in label order, so show the best passage first.
                result["sources"].sort(key=lambda s: -s["score"])
            context["result"] = result
        except DocqaError as exc:
            context["error"] = str(exc)
    context["recent"] = Question.objects.filter(matter=matter, user=request.user).order_by("-id")[:10]
    return render(request, "docqa/ask.html", context)


@login_required
def documents(request: HttpRequest, slug: str) -> HttpResponse:
    matter = matter_for(request.user, slug)
    docs = matter.documents.select_related("source", "text").order_by("path")
    return render(request, "docqa/documents.html", {"matter": matter, "documents": docs})

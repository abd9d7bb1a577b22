"""Sign-in that is audited and throttled.

Every sign-in, failed sign-in and sign-out is an audit event. The failures themselves are the
throttle's memory: after `DOCQA_LOGIN_MAX_FAILURES` failures for one user name (or four times as
many from one address) within `DOCQA_LOGIN_LOCKOUT_SECONDS`, further attempts are refused without
checking the password until the window has passed. Counting audit rows, rather than a per-process
cache, holds across web workers and restarts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.auth.views import LogoutView
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from docqa.actions import record_audit
from docqa.models import AuditEvent


def client_address(request: HttpRequest | None) -> str:
    return str(request.META.get("REMOTE_ADDR", "")) if request is not None else ""


def recent_failures(**match: str) -> int:
    since = timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    return AuditEvent.objects.filter(action="login.failure", created_at__gte=since,
                                     **{f"detail__{k}": v for k, v in match.items()}).count()


class Throttled:
    """Refuses a sign-in while its user name or address has too many recent failures."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = (self.cleaned_data.get("username") or "").strip().lower()
        address = client_address(self.request)
        limit = settings.LOGIN_MAX_FAILURES
        if username and (recent_failures(username=username) >= limit
                         or (address and recent_failures(address=address) >= 4 * limit)):
            record_audit(f"web:{username}", "login.throttled", None, {"username": username, "address": address})
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            raise forms.ValidationError(
                f"Too many failed sign-ins. Try again in {minutes} minutes, or ask an administrator.",
                code="throttled",
            )
        return super().clean()  # type: ignore[misc]


class ThrottledAuthenticationForm(Throttled, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(Throttled, AdminAuthenticationForm):
    pass


@receiver(user_logged_in)
def audit_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    record_audit(f"web:{user.get_username()}", "login.success", None, {"address": client_address(request)})


@receiver(user_login_failed)
def audit_login_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                        **kwargs: Any) -> None:
    # `credentials` has the password already masked by Django; only the name is kept.
    username = str(credentials.get("username", "")).strip().lower()
    record_audit(f"web:{username}", "login.failure", None, {"username": username, "address": client_address(request)})


@receiver(user_logged_out)
def audit_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record_audit(f"web:{user.get_username()}", "logout", None, {"address": client_address(request)})


class SignOut(LogoutView):
    """Sign out by POST (Django's rule: a link or a prefetch must not sign anyone out). Opened
    by address (a bookmark, the old habit of GET /logout/) it asks, in the site's layout, instead
    of answering a bare 405; signed out already, it goes to the sign-in page. Either way the
    sign-in page then says so."""

    http_method_names = ["get", "post", "options"]

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            messages.info(request, "You are signed out.")
            return redirect("login")
        return render(request, "registration/logout.html")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response

"""Django admin: every change made here lands in the audit trail (AuditedAdmin), users and groups included.

Documents and ingest runs are read-only here: they change only through a sync.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest

from docqa.actions import principal_name, record_audit
from docqa.models import AuditEvent, Document, Exclusion, IngestRun, Matter, Membership
from ingest.errors import DocqaError


class AuditedAdmin(admin.ModelAdmin):
    """Whatever the admin logs (add, change, delete) is also appended to the audit trail."""

    def audit(self, request: HttpRequest, verb: str, obj: Any, message: Any = "") -> None:
        meta = obj._meta
        matter = obj if isinstance(obj, Matter) else getattr(obj, "matter", None)
        if isinstance(message, list):
            message = json.dumps(message)
        record_audit(actor(request), f"admin.{verb}", matter if isinstance(matter, Matter) else None,
                     {"model": meta.label_lower, "object": str(obj.pk), "repr": str(obj)[:200],
                      "change": message})

    def log_addition(self, request, obj, message):  # type: ignore[no-untyped-def]
        self.audit(request, "add", obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):  # type: ignore[no-untyped-def]
        self.audit(request, "change", obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):  # type: ignore[no-untyped-def]
        for obj in queryset:
            self.audit(request, "delete", obj)
        return super().log_deletions(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


admin.site.unregister(get_user_model())
admin.site.unregister(Group)


@admin.register(get_user_model())
class UserAdmin(AuditedAdmin, auth_admin.UserAdmin):
    pass


@admin.register(Group)
class GroupAdmin(AuditedAdmin, auth_admin.GroupAdmin):
    pass


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    extra = 0
    fields = ("user", "reason")


class MatterForm(forms.ModelForm):
    class Meta:
        model = Matter
        fields = ["slug", "name", "legal_hold", "legal_hold_reason", "source_roots"]

    def clean_source_roots(self) -> str:
        from docqa.sources import check_roots

        lines = [line for line in self.cleaned_data["source_roots"].splitlines() if line.strip()]
        try:
            return "\n".join(check_roots(self.instance, lines))
        except DocqaError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(Matter)
class MatterAdmin(AuditedAdmin):
    """Matters, members, walls and legal holds, edited here as with `manage.py matter`: all audited."""

    form = MatterForm
    list_display = ("slug", "name", "legal_hold", "created_at")
    inlines = [MembershipInline, ExclusionInline]

    def save_model(self, request: HttpRequest, obj: Matter, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        record_audit(actor(request), "matter.update" if change else "matter.create", obj,
                     {"slug": obj.slug, "name": obj.name})
        if "source_roots" in form.changed_data:
            record_audit(actor(request), "matter.roots", obj, {"roots": obj.roots()})
        if "legal_hold" in form.changed_data or (obj.legal_hold and "legal_hold_reason" in form.changed_data):
            if obj.legal_hold:
                record_audit(actor(request), "matter.hold", obj, {"reason": obj.legal_hold_reason})
            else:
                record_audit(actor(request), "matter.release", obj, {})

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a matter's audit trail refers to it

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        instances = formset.save(commit=False)
        for gone in formset.deleted_objects:
            if isinstance(gone, Exclusion):
                record_audit(actor(request), "matter.unexclude", gone.matter, {"user": gone.user.get_username()})
            else:
                record_audit(actor(request), "matter.revoke", gone.matter, {**who(gone)})
            gone.delete()
        for obj in instances:
            if isinstance(obj, Exclusion):
                obj.created_by = actor(request)
                obj.save()
                record_audit(actor(request), "matter.exclude", obj.matter,
                             {"user": obj.user.get_username(), "reason": obj.reason})
            else:
                obj.save()
                record_audit(actor(request), "matter.grant", obj.matter, {**who(obj), "role": obj.role})
        formset.save_m2m()


def actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def who(membership: Membership) -> dict[str, str]:
    if membership.group_id:
        return {"group": principal_name(membership.group)}
    return {"user": principal_name(membership.user)}


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ("path", "matter", "status", "chunk_count", "updated_at")
    list_filter = ("status", "matter")
    search_fields = ("path",)


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "matter", "actor", "status", "started_at", "finished_at", "counts")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the trail is append-only."""

    list_display = ("id", "created_at", "actor", "matter", "action")
    list_filter = ("action", "matter")

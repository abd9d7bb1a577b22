from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from docqa.actions import principal_name, record_audit
from docqa.models import AuditEvent, Document, Exclusion, IngestRun, Matter, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    extra = 0
    fields = ("user", "reason")


@admin.register(Matter)
class MatterAdmin(admin.ModelAdmin):
    """Matters, members and walls, edited here as with `manage.py matter`: every change audited."""

    list_display = ("slug", "name", "created_at")
    inlines = [MembershipInline, ExclusionInline]

    def save_model(self, request: HttpRequest, obj: Matter, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        record_audit(actor(request), "matter.update" if change else "matter.create", obj,
                     {"slug": obj.slug, "name": obj.name})

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
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("path", "matter", "status", "chunk_count", "updated_at")
    list_filter = ("status", "matter")
    search_fields = ("path",)


@admin.register(IngestRun)
class IngestRunAdmin(admin.ModelAdmin):
    list_display = ("id", "matter", "actor", "status", "started_at", "finished_at", "counts")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only."""

    list_display = ("id", "created_at", "actor", "matter", "action")
    list_filter = ("action", "matter")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

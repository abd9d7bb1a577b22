from django.contrib import admin

from docqa.models import AuditEvent, Document, IngestRun, Matter, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Matter)
class MatterAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at")
    inlines = [MembershipInline]


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

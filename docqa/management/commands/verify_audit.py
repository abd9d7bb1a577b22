"""manage.py verify_audit: the earlier name of `audit_verify`, kept so existing scripts work."""

from docqa.management.commands.audit_verify import Command as AuditVerify


class Command(AuditVerify):
    pass

from django.apps import AppConfig


class DocqaConfig(AppConfig):
    name = "docqa"
    verbose_name = "docqa"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from docqa import signin  # noqa: F401  (connects the sign-in audit receivers)

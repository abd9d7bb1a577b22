from django.apps import AppConfig


class DocqaConfig(AppConfig):
    name = "docqa"
    verbose_name = "docqa"
    default_auto_field = "django.db.models.BigAutoField"

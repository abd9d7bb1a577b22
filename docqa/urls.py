from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, register_converter

from docqa import account, audit_views, conversations, metrics, openai_compat, sources, views
from docqa.api import api
from docqa.signin import SignOut, ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm

admin.site.login_form = ThrottledAdminAuthenticationForm
handler404 = "docqa.views.not_found"


class IdConverter:
    """A database id: at most 18 digits, so an id past the database's range is a 404, not a 500."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm), name="login"),
    path("logout/", SignOut.as_view(), name="logout"),
    path("m/<slug:slug>/", views.ask, name="ask"),
    path("m/<slug:slug>/ask/stream", conversations.ask_stream, name="ask_stream"),
    path("m/<slug:slug>/c/<id:conversation_id>/", conversations.conversation_page, name="conversation"),
    path("m/<slug:slug>/q/<id:question_id>/", conversations.answer_block, name="answer_block"),
    path("m/<slug:slug>/q/<id:question_id>/stop", conversations.stop, name="stop_question"),
    path("m/<slug:slug>/documents/", views.documents, name="documents"),
    path("m/<slug:slug>/documents/<id:doc_id>/", views.document, name="document"),
    path("m/<slug:slug>/documents/<id:doc_id>/file", views.document_file, name="document_file"),
    path("m/<slug:slug>/runs/", views.runs, name="runs"),
    path("m/<slug:slug>/sync", sources.sync, name="sync"),
    path("m/<slug:slug>/upload", sources.upload, name="upload"),
    path("m/<slug:slug>/runs/<id:run_id>/", views.run_detail, name="run"),
    path("m/<slug:slug>/runs/<id:run_id>/failures.csv", views.run_failures_csv, name="run_failures"),
    path("m/<slug:slug>/runs/<id:run_id>/<str:action>", views.run_action, name="run_action"),
    path("account/tokens/", account.tokens, name="tokens"),
    path("account/tokens/new", account.create_token, name="token_create"),
    path("account/tokens/<id:token_id>/revoke", account.revoke_token, name="token_revoke"),
    path("audit/", audit_views.review, name="audit"),
    path("audit/<id:event_id>/", audit_views.replay, name="audit_replay"),
    path("audit/export.<str:fmt>", audit_views.export, name="audit_export"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("v1/models", openai_compat.models, name="openai_models"),
    path("v1/chat/completions", openai_compat.chat_completions, name="openai_chat"),
]

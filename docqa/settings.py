"""Django settings: the only place that reads the environment.

No DOCQA_* variable set means the embedded default: SQLite and data under var/, Celery
in-process, Qdrant's embedded engine, no language model. Each DOCQA_*_URL switches one part to
a real service. Secrets may come from a file named by the *_FILE variant.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from docqa import offline  # noqa: F401  (sets offline flags before anything heavy loads)

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    """DOCQA_<NAME>, or the contents of the file named by DOCQA_<NAME>_FILE."""
    key = f"DOCQA_{name}"
    file_path = os.environ.get(f"{key}_FILE")
    if file_path:
        return Path(file_path).read_text(encoding="utf-8").strip()
    return os.environ.get(key, default)


def envbool(name: str, default: bool = False) -> bool:
    value = env(name)
    if not value:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = env(name)
    try:
        return int(value) if value else default
    except ValueError:  # said in one line at start-up, not as a traceback from inside the settings
        raise SystemExit(f"DOCQA_{name} must be a whole number, not {value!r}") from None


def envfloat(name: str, default: str) -> float:
    value = env(name, default)
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"DOCQA_{name} must be a number of seconds, not {value!r}") from None


def database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme in ("sqlite", "sqlite3"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.path}
    if parsed.scheme not in ("postgres", "postgresql", "psql"):
        raise SystemExit(f"DOCQA_DATABASE_URL: unsupported scheme {parsed.scheme!r}: use postgres://user:pw@host:5432/db "
                         "(or sqlite:////path/to/file.sqlite3)")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/"),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or "") or env("DATABASE_PASSWORD"),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


DATA_DIR = Path(env("DATA_DIR") or BASE_DIR / "var").resolve()
DEBUG = envbool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    # The embedded default keeps a generated key under var/, so sessions survive restarts
    # without anyone having to invent a secret.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        key_file.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text(encoding="utf-8").strip()

ALLOWED_HOSTS = [h for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "docqa.apps.DocqaConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "docqa.middleware.RefuseNulCharacters",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "docqa.urls"
WSGI_APPLICATION = "docqa.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "docqa.context.navigation",
            ]
        },
    }
]

DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "docqa.sqlite3",
            # The in-process worker thread writes while requests read: wait, don't fail.
            # IMMEDIATE: a transaction that reads then writes (the audit chain) takes the write
            # lock first, so it waits for the other writer instead of failing "database is locked".
            "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_MAX_FAILURES = envint("LOGIN_MAX_FAILURES", 5)  # per user name within the window (4x per address)
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", 900)
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve app static files (the admin's) straight from the packages: no collectstatic step needed.
WHITENOISE_USE_FINDERS = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = envint("SESSION_SECONDS", 8 * 3600)  # a working day, then sign in again
X_FRAME_OPTIONS = "DENY"
# Served over HTTPS (behind a TLS-terminating proxy that sets X-Forwarded-Proto): secure cookies,
# redirect plain HTTP, HSTS. Off for the embedded default, which listens on 127.0.0.1 only.
HTTPS = envbool("HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
# Health checks and Prometheus (token-protected) probe over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = envint("HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS and envbool("HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = HTTPS and envbool("HSTS_PRELOAD", default=False)
# The browsers' HSTS preload list is for public domains; a firm's internal host never goes there.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Task queue -------------------------------------------------------------------------
# No broker configured: Celery runs in-process on the memory transport, with a worker thread
# started by the process that does the work (the web server or a management command).
BROKER_URL = env("BROKER_URL")
EMBEDDED_WORKER = not BROKER_URL
CELERY_BROKER_URL = BROKER_URL or "memory://localhost/"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = envint(
    "TASK_SOFT_TIME_LIMIT", max(1, CELERY_TASK_TIME_LIMIT - min(60, CELERY_TASK_TIME_LIMIT // 4))
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task whose worker died is delivered again after this long; it must exceed the hard time
# limit, or a slow file still being processed would be handed to a second worker.
# Workers look for such tasks every tenth of the timeout (10 s at most): kombu's own default
# looks only every 100 s, which would add up to 100 s to a short timeout.
_VISIBILITY_TIMEOUT = envint("BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT * 2)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY_TIMEOUT,
    "unacked_restore_interval": max(1, min(10, _VISIBILITY_TIMEOUT // 10)),
    "unacked_restore_throttle": 1,
}

# --- Vector store -------------------------------------------------------------------------
# DOCQA_QDRANT_URL: http(s)://host:port for a Qdrant server, or path:/dir for qdrant-client's
# local mode (used by the tests, since no server binary is installable here).
QDRANT_URL = env("QDRANT_URL")
if BROKER_URL and not QDRANT_URL:
    # Every worker process would open the embedded engine, which locks its folder to one process:
    # each file failed with "storelocked" while `doctor` said all was well.
    raise SystemExit("DOCQA_BROKER_URL needs DOCQA_QDRANT_URL: Celery workers are processes of their own, and the "
                     "embedded engine's folder opens in one process only; point DOCQA_QDRANT_URL at a Qdrant server "
                     "(http://host:6333), or unset DOCQA_BROKER_URL for the embedded default")
QDRANT_API_KEY = env("QDRANT_API_KEY")
QDRANT_COLLECTION = env("QDRANT_COLLECTION", "docqa_chunks")
QDRANT_EDGE_PATH = DATA_DIR / "qdrant-edge"
LOCK_FILE = DATA_DIR / "embedded.lock"

# --- Models and ingestion -------------------------------------------------------------------
EMBED_BATCH_SIZE = envint("EMBED_BATCH_SIZE", 32)
# Torch threads per Celery worker process (services mode); 2 processes on 2 cores -> 1 each.
WORKER_TORCH_THREADS = envint("WORKER_TORCH_THREADS", 1)
CHUNK_TOKENS = envint("CHUNK_TOKENS", 200)
CHUNK_OVERLAP = envint("CHUNK_OVERLAP", 32)
MAX_FILE_BYTES = envint("MAX_FILE_MB", 100) * 1024 * 1024
# Scanned PDF pages are read by tesseract where it is installed; a document with more pages to
# read than this is recorded as "needs OCR" instead (0 turns OCR off).
# Parse and embed as two tasks on two queues, so that embedding can run on GPU workers
# (`celery -A docqa worker -Q embed`) while CPU workers parse (the default queue, "celery").
SPLIT_QUEUES = envbool("SPLIT_QUEUES", False) and bool(BROKER_URL)  # the embedded worker has one queue
EMBED_QUEUE = env("EMBED_QUEUE", "embed")
EMBED_DEVICE = env("EMBED_DEVICE", "cpu")  # "cuda" on GPU workers (the CUDA build of the image)
OCR_MAX_PAGES = envint("OCR_MAX_PAGES", 100)
OCR_LANGUAGES = env("OCR_LANGUAGES", "eng")  # tesseract's codes, joined by "+": "eng+deu"

# --- Language model (vLLM, OpenAI-compatible) -----------------------------------------------
LLM_BASE_URL = env("LLM_BASE_URL").rstrip("/")
LLM_MODEL = env("LLM_MODEL", "gpt-oss-120b")
LLM_API_KEY = env("LLM_API_KEY")
LLM_TIMEOUT = envfloat("LLM_TIMEOUT", "300")
LLM_CONNECT_TIMEOUT = envfloat("LLM_CONNECT_TIMEOUT", "5")
LLM_RESERVED_OUTPUT = envint("LLM_RESERVED_OUTPUT", 8192)
# The reasoning effort of a question that asks for none (each question may choose its own).
LLM_EFFORT = env("LLM_EFFORT", "medium")
if LLM_EFFORT not in ("low", "medium", "high"):
    raise SystemExit(f"DOCQA_LLM_EFFORT is one of low, medium, high, not {LLM_EFFORT!r}")
SEARCH_ONLY_BUDGET = envint("SEARCH_ONLY_BUDGET", 16384)
RETRIEVAL = env("RETRIEVAL", "hybrid")  # hybrid (dense + sparse, fused by RRF in Qdrant), dense or sparse
RETRIEVE_LIMIT = envint("RETRIEVE_LIMIT", 200)
# Keep the model's reasoning with each answer (off: it is shown while streaming, then dropped).
STORE_REASONING = envbool("STORE_REASONING", default=False)
# Retention: days that question text, answers, reasoning, quotes and the sources as sent are
# kept; then `manage.py retention` (run daily) replaces them by their sha256. 0 keeps them forever.
# A matter under legal hold keeps everything while the hold lasts.
RETENTION_DAYS = envint("RETENTION_DAYS", 0)
if not 0 <= RETENTION_DAYS <= 36_500:
    raise SystemExit(f"DOCQA_RETENTION_DAYS is 0 (keep forever) to 36,500 (a hundred years), not {RETENTION_DAYS:,}")
# Prometheus scrapes /metrics with this bearer token; unset, /metrics answers 404.
METRICS_TOKEN = env("METRICS_TOKEN")
# Folders under which editors may register sources from the web UI (separated by ":"); uploads
# always go to DATA_DIR/uploads/<matter>. Unset, the web UI syncs registered sources and uploads only.
SOURCE_ROOTS = [p for p in env("SOURCE_ROOTS").split(os.pathsep) if p]
UPLOAD_MAX_FILES = envint("UPLOAD_MAX_FILES", 10000)
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", 1 << 30)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
# Optional cross-encoder reranking: a local folder holding a sentence-transformers CrossEncoder
# (never downloaded). Unset, the default, ranks without one.
RERANK_MODEL = env("RERANK_MODEL", "")
RERANK_TOP = envint("RERANK_TOP", 30)  # how many of the best chunks the cross-encoder reorders

LOG_FORMAT = env("LOG_FORMAT", "plain")  # "json" for a log shipper
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "docqa.logs.JsonFormatter"}},
    # DOCQA_LOG_FORMAT=json: one JSON object per line (compose.yaml sets it).
    "filters": {"refusals": {"()": "docqa.logs.RefusalsWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["refusals"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "WARNING")},
    # Event lines (question answered, run finished) are for log shippers: on by default with JSON
    # logs, and kept out of a person's terminal otherwise (DOCQA_LOG_LEVEL=INFO shows them).
    "loggers": {"docqa": {"level": env("LOG_LEVEL", "INFO" if LOG_FORMAT == "json" else "WARNING"),
                          "propagate": True}},
}

"""Offline and quiet: environment flags that must be set before heavy libraries are imported.

Imported first by settings, manage.py, the Celery app and the test suite, so that no library
phones home or tries a hub download. Values already set by the operator are left alone.
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    # unstructured resolves a telemetry host at import unless one of these is set.
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
}


def apply_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # llama-index ships its own NLTK data and tiktoken files and breaks when these point
    # elsewhere (DEPENDENCIES.md), so an inherited value is removed rather than trusted.
    for key in ("NLTK_DATA", "TIKTOKEN_CACHE_DIR"):
        os.environ.pop(key, None)


apply_offline_env()

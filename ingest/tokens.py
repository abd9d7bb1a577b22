"""GPT-OSS token counting, offline: o200k_base (plain text counts the same as o200k_harmony).

The vocabulary ships inside the `bpe-openai` package, so no download ever happens. Chunks store
this count at ingest so packing a 128k-token prompt costs no tokenization.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.build_encoding_from_name("o200k_base")


def count_tokens(text: str) -> int:
    """Tokens GPT-OSS sees for `text`; special-token look-alikes count as plain text."""
    return len(_encoding().encode_ordinary(text))

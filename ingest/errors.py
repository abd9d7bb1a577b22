"""The error hierarchy shared by the pipelines. Every message is one a user can act on."""


class DocqaError(Exception):
    """Base of every error docqa raises on purpose."""

    # The question recorded with this failure, and its conversation, when one was (set by
    # docqa's ask): its stored answer holds the error and, when the model failed, the passages.
    question: int | None = None
    conversation: int | None = None
    # What kind of fault it is, for the reader who did not cause it (docqa.faults words it for
    # them; the message itself is for the operator). "" when the message is the reader's own
    # to act on (a budget out of range, no document indexed yet), and is shown as it is.
    kind: str = ""


class UnsupportedFile(DocqaError):
    """The file's type is not one docqa indexes; it is recorded as skipped."""


class ParseError(DocqaError):
    """The file could not be turned into text: corrupt, encrypted, empty, binary, scanned."""


class StoreLocked(DocqaError):
    """The embedded vector store's folder is held by another process."""

    kind = "store"


class StoreError(DocqaError):
    """The vector store refused or failed an operation."""

    kind = "store"


def is_time_limit(exc: BaseException) -> bool:
    """Celery's soft time limit (or docqa's own, raised as the same class) arriving inside a parser:
    it must reach the task as itself, to end the file as `timeout`, not be reported as a parse error."""
    return type(exc).__name__ == "SoftTimeLimitExceeded"

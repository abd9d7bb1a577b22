"""What the person who asked is told when their question fails, and who also sees why.

An error's own message is written for the operator who can fix it: it names the model server's
address, the setting to change, the socket's complaint. A lawyer can do nothing with that. So
the page tells them in plain words what happened and what they can try, and names the question
for their administrator. The operator's message is kept whole on the answer, in the audit trail
and in the log, and staff and auditors see it on the page as well.

The kind of fault comes from the error's class (`DocqaError.kind`); a kind of "" means the
message is the asker's own to act on (a budget out of range, no document indexed yet) and is
shown as it is. The REST API and the command line keep the operator's message.
"""

from __future__ import annotations

from typing import Any

from ingest.errors import DocqaError

TRY_LATER = "Try again later; if it keeps happening, tell your administrator."

PLAIN = {
    "unavailable": f"The language model is not available at the moment, so no answer was written. {TRY_LATER}",
    "setup": ("The language model leaves too little room for an answer at this effort level, so no answer was "
              "written. Try a lower effort; if it fails at low effort too, tell your administrator."),
    "timeout": ("The language model took too long to answer, so no answer was written. Try again, at a lower "
                "effort or with a narrower question; if it keeps happening, tell your administrator."),
    "too_long": ("The question and its passages were too long for the language model, so no answer was written. "
                 "Try a smaller budget or a shorter question."),
    "reasoning": ("The language model spent all its room on working the question out and wrote no answer, even "
                  "when asked again at low effort. Try a narrower question, or a smaller budget."),
    "failed": f"The language model failed while answering, so no answer was written. {TRY_LATER}",
    "stopped": "The answer was stopped.",
    "store": f"The search index is not available at the moment, so the question could not be searched. {TRY_LATER}",
    "search_setup": ("The search is not set up correctly for this matter, so the question could not be answered. "
                     "Tell your administrator."),
    "internal": ("Something went wrong in docqa while answering, so no answer was written. The error was logged for "
                 "your administrator."),
}


def kind_of(exc: BaseException) -> str:
    """The kind of fault `exc` is: its class's, or "internal" for one docqa did not raise on purpose."""
    return exc.kind if isinstance(exc, DocqaError) else "internal"


def plain(kind: str, error: str) -> str:
    """What the asker is told: the plain words for the kind, or the error itself when it is theirs
    (kind ""). A kind without words of its own is told as an internal failure, never in the
    operator's words."""
    if not kind:  # written as a sentence: "A budget of 10 tokens is out of range: ..."
        return sentence(error)
    return PLAIN.get(kind, PLAIN["internal"])


def says_more(error: str, said: str) -> bool:
    """Whether the operator's message `error` tells more than `said`, the words the asker got (an
    asker's own error is told as itself, only written as a sentence)."""
    return bool(error) and sentence(error) != said


def sentence(text: str) -> str:
    """`text` with a capital first letter and a full stop, as the page's other messages are. A
    first word that is not a plain word (a file name, a path, a setting) is left as written:
    "notes.zip is not ..." is not "Notes.zip is not ..."."""
    text = text.strip()
    if not text:
        return text
    first = text.split(None, 1)[0].rstrip(":,;")
    head = text[0].upper() if first.isalpha() else text[0]
    return head + text[1:] + ("" if text[-1] in ".!?)" else ".")


def recorded_error(exc: BaseException) -> str:
    """The operator's message for `exc` as it is recorded: an error docqa did not raise on purpose
    is named by its class too ("KeyError: 'text'"), and none is ever empty."""
    if isinstance(exc, DocqaError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def sees_detail(user: Any) -> bool:
    """Who is shown the operator's message beside the plain one: staff, and auditors (who read
    it in the audit trail anyway)."""
    return bool(getattr(user, "is_staff", False) or (
        getattr(user, "is_authenticated", False) and user.has_perm("docqa.view_auditevent")))

"""docqa's data: matters, sources, documents, ingest runs, questions, answers and the audit trail."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    VIEWER = "viewer"
    EDITOR = "editor"
    MANAGER = "manager"


class Matter(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # A legal hold suspends retention: nothing of this matter expires while it is on.
    legal_hold = models.BooleanField(default=False)
    legal_hold_reason = models.TextField(blank=True)
    # Server folders (one per line) under which this matter's editors may add folders from the web
    # UI or the API. Set by an administrator (`matter roots`, or the admin); none: uploads only.
    source_roots = models.TextField(blank=True)

    def roots(self) -> list[str]:
        return [line.strip() for line in self.source_roots.splitlines() if line.strip()]

    def upload_folder(self) -> Path:
        """Where the web UI's uploads land: a folder of docqa's data, synced like any source."""
        return (settings.DATA_DIR / "uploads" / self.slug).resolve()

    def folder_names(self, as_of: datetime | None = None) -> dict[int, str]:
        """What each of the matter's synced folders is called where its documents are listed and
        cited, by source id: none with one folder (a document is then named by its path alone).
        `as_of` a time: as they were named then, among the folders added by that time."""
        return self.folder_naming(as_of)[0]

    def sources_holding(self) -> models.QuerySet[Source]:
        """The matter's folders, each with `holding`: whether it holds a document that is not deleted
        (a folder taken over, emptied, or all of it skipped holds none)."""
        return self.sources.annotate(holding=models.Exists(Document.objects.filter(
            source=models.OuterRef("pk")).exclude(status=DocumentStatus.DELETED)))

    def folder_naming(self, as_of: datetime | None = None) -> tuple[dict[int, str], dict[int, str]]:
        """(`folder_names`, the others): with several folders, each that holds no document but
        deleted ones has no name, and is called by its root on the server where documents are
        listed, opened or audited, so that a deleted document is told apart from a live one of the
        same path."""
        sources = self.sources_holding()
        rows = list((sources.filter(created_at__lte=as_of) if as_of is not None else sources)
                    .values_list("id", "root", "holding"))
        names = folder_names([(id_, root) for id_, root, holding in rows if holding], str(self.upload_folder()))
        return names, {id_: root for id_, root, holding in rows if not holding} if len(rows) > 1 else {}

    def listed_names(self) -> dict[int, str]:
        """Every folder's name where documents are listed: `folder_naming`'s two in one."""
        names, others = self.folder_naming()
        return {**names, **others}

    def renamed_scope(self, scope: str, given_at: datetime) -> str:
        """A scope given at `given_at` ("docs/annex"), in today's folder names: a folder added since
        whose name clashes renames the older one ("a/docs/annex"); "" for the matter's only folder."""
        source, inside = split_shown(self.folder_names(as_of=given_at), scope)
        return scope if source is None else shown_path(self.folder_names(), source, inside).rstrip("/")

    def __str__(self) -> str:
        return self.slug


UPLOADS = "uploads"


def folder_names(roots: list[tuple[int, str]], uploads: str) -> dict[int, str]:
    """Names that tell a matter's folders apart: the fewest last parts of their roots that are all
    different ("pleadings", or "client-a/docs" beside "client-b/docs"), "uploads" for the web's
    uploads; none when there is one folder. Two documents of one matter may share a path, one in
    each folder, and are then told apart by it ("pleadings/contract.pdf", "uploads/contract.pdf")."""
    if len(roots) < 2:
        return {}
    parts = {id_: PurePosixPath(root).parts[1:] or (root,) for id_, root in roots if root != uploads}
    taken = [UPLOADS] if len(parts) < len(roots) else []
    # Only the names that clash grow: adding "/srv/b/docs" beside "/srv/a/docs" and "/srv/pleadings"
    # renames the two docs folders, never "pleadings".
    last = dict.fromkeys(parts, 1)
    names = {id_: "/".join(p[-1:]) for id_, p in parts.items()}
    while not told_apart([*names.values(), *taken]):
        clashing = {id_ for id_, name in names.items()
                    if any(not told_apart([name, other]) for other in [*taken, *(
                        o for other_id, o in names.items() if other_id != id_)])}
        grown = {id_ for id_ in clashing if last[id_] < len(parts[id_])}
        if not grown:  # the roots' own paths ("/uploads" beside the uploads folder)
            names = {id_: root for id_, root in roots if root != uploads}
            break
        for id_ in grown:
            last[id_] += 1
            names[id_] = "/".join(parts[id_][-last[id_]:])
    return {**names, **{id_: UPLOADS for id_, root in roots if root == uploads}}


def told_apart(names: list[str]) -> bool:
    """No two the same, and none the start of another ("docs" and "docs/2019" would read as one folder)."""
    return len(set(names)) == len(names) and not any(b.startswith(f"{a}/") for a in names for b in names)


def shown_path(names: dict[int, str], source_id: int, path: str) -> str:
    """A document's name where it is listed and cited: its path, after its folder's name when the
    matter has several folders."""
    return f"{names[source_id]}/{path}" if source_id in names else path


def folder_field(names: dict[int, str], source_id: int) -> dict[str, str]:
    """{"folder": its name} for an audit record of a document, when the matter has several folders
    (its path alone does not say which document was meant)."""
    return {"folder": names[source_id]} if source_id in names else {}


def split_shown(names: dict[int, str], shown: str) -> tuple[int | None, str]:
    """A name as `shown_path` writes it, back to (source id, path); (None, shown) when it starts with
    no folder's name (the same path in every folder)."""
    trimmed = shown.strip("/")
    # As given first: a folder may be named by its root ("/uploads" beside the web's "uploads").
    for given in dict.fromkeys((shown.rstrip("/"), trimmed)):
        for id_, name in sorted(names.items(), key=lambda item: -len(item[1])):
            if given == name or given.startswith(f"{name}/"):
                return id_, given[len(name) + 1:].strip("/")
    return None, trimmed


class Membership(models.Model):
    """A user or a group (exactly one) holding a role in a matter."""

    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="memberships")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["matter", "user"], name="one_membership_per_user"),
            models.UniqueConstraint(fields=["matter", "group"], name="one_membership_per_group"),
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False),
                name="membership_is_a_user_or_a_group",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group} {self.role} in {self.matter}"


class Exclusion(models.Model):
    """An ethical wall: the user may not see the matter, whatever their groups or roles say."""

    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="exclusions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exclusions")
    reason = models.TextField(blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["matter", "user"], name="one_exclusion_per_user")]

    def __str__(self) -> str:
        return f"{self.user} walled off from {self.matter}"


class Source(models.Model):
    """A folder root registered to a matter for (re)sync."""

    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="sources")
    root = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["matter", "root"], name="one_source_per_root")]

    def __str__(self) -> str:
        return self.root


class DocumentText(models.Model):
    """Extracted text of one file content, stored once however many documents share it.

    Keyed by content and parser: the same bytes named .md and .txt parse to different texts,
    and a chunk's character span must index the text its own parser produced.
    """

    sha256 = models.CharField(max_length=64)
    text = models.TextField()
    parser = models.CharField(max_length=64)
    page_count = models.IntegerField(null=True)
    # Where each element of the text starts and ends, its page, category and section: what the
    # embed stage needs to chunk the text when parsing ran in another worker (split queues).
    layout = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sha256", "parser"], name="one_text_per_content_and_parser")]


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETED = "deleted"


class Document(models.Model):
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="documents")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="documents")
    path = models.CharField(max_length=1000)  # relative to the source root
    kind = models.CharField(max_length=16)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)  # the version currently indexed
    status = models.CharField(max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.PENDING)
    error = models.TextField(blank=True)
    text = models.ForeignKey(DocumentText, null=True, blank=True, on_delete=models.SET_NULL)
    chunk_count = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    # An e-mail attachment's message; its path is the message's path plus "/" and its name.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="attachments")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "path"], name="one_document_per_path")]

    def __str__(self) -> str:
        return self.path


def path_starts(prefix: str) -> models.Q:
    """Documents whose path starts with `prefix`, case-sensitively on every database (SQLite's
    LIKE, behind `startswith`, ignores case: "Contracts/" must not match "contracts/")."""
    from django.db.models.functions import Substr

    return models.Q(path__startswith=prefix) & models.Q(
        models.lookups.Exact(Substr("path", 1, len(prefix)), prefix))


class RunStatus(models.TextChoices):
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class IngestRun(models.Model):
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="runs")
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="runs")
    actor = models.CharField(max_length=150)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True)
    counts = models.JSONField(default=dict)
    # The Redis server instance (its run_id) that holds this run's tasks; a different one means
    # the broker restarted and lost them (Redis here keeps nothing on disk): they are sent again.
    broker_epoch = models.CharField(max_length=64, blank=True, default="")
    # Folders inside this one, synced before on their own, whose documents this run took over:
    # [{"root", "documents"}]. Their files are this folder's from then on, indexed once.
    took_over = models.JSONField(default=list, blank=True)
    # When the run was last resumed or its failures retried: its pace counts from then (a run
    # taken up again the next day did not slow down overnight).
    resumed_at = models.DateTimeField(null=True, blank=True)

    @property
    def counts_in_order(self) -> dict[str, int]:
        return in_count_order(self.counts)


def in_count_order(counts: dict[str, int]) -> dict[str, int]:
    """A run's counts in the order people read them (PostgreSQL's jsonb keeps keys in its own order)."""
    return {**{k: counts[k] for k in COUNT_KEYS if k in counts}, **counts}


# A finished run's counts: what the sync found each file to be, then what became of it.
COUNT_KEYS = ("new", "changed", "retried", "unchanged", "deleted", "moved", "indexed", "skipped", "failed", "cancelled")


class Change(models.TextChoices):
    NEW = "new"
    CHANGED = "changed"
    RETRIED = "retried"  # failed before: tried again, whether or not its content changed
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    MOVED = "moved"
    SKIPPED = "skipped"


class ItemState(models.TextChoices):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    MOVED = "moved"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = (
    ItemState.INDEXED, ItemState.UNCHANGED, ItemState.DELETED, ItemState.MOVED, ItemState.SKIPPED,
    ItemState.FAILED, ItemState.CANCELLED,
)


class IngestItem(models.Model):
    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="items")
    document = models.ForeignKey(Document, null=True, on_delete=models.SET_NULL, related_name="items")
    path = models.CharField(max_length=1000)
    change = models.CharField(max_length=16, choices=Change.choices)
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.QUEUED)
    error_class = models.CharField(max_length=32, blank=True)  # parse, store, timeout, internal, ...
    error = models.TextField(blank=True)
    attempts = models.IntegerField(default=0)
    pages = models.IntegerField(null=True)
    chunks = models.IntegerField(null=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["run", "state"])]


class Conversation(models.Model):
    """A thread of questions in one matter; earlier answers go back to the model as context."""

    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)


class Question(models.Model):
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="questions")
    conversation = models.ForeignKey(Conversation, null=True, on_delete=models.CASCADE, related_name="questions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150)
    text = models.TextField()
    effort = models.CharField(max_length=8, default="medium")
    # The prompt tokens the answer was packed for: null while the model's window is not yet known,
    # and for good when the question was stopped before the model server told it (nothing packed).
    budget = models.IntegerField(null=True)
    # The folders or documents the search was limited to, as given; [] for the whole matter.
    scope = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when retention replaced the question, its answer, reasoning, quotes and the packed
    # source text by their hashes ("sha256:<hex>"); see docqa/retention.py.
    expired_at = models.DateTimeField(null=True, blank=True)
    # Set when the asker pressed Stop (or called the API's stop) while it was being answered;
    # the answering thread, in whichever web process, looks for it (actions.StopWatch).
    stop_requested_at = models.DateTimeField(null=True, blank=True)


class Answer(models.Model):
    question = models.OneToOneField(Question, on_delete=models.CASCADE, related_name="answer")
    mode = models.CharField(max_length=8)  # "llm", "search", "error", or "stopped" (by the asker, mid-answer)
    text = models.TextField(blank=True)
    model = models.CharField(max_length=100, blank=True)
    sources = models.JSONField(default=list)  # what was packed, text as sent
    dropped = models.JSONField(default=list)
    usage = models.JSONField(default=dict)
    error = models.TextField(blank=True)  # for the operator: the asker is told it plainly (docqa.faults)
    error_kind = models.CharField(max_length=16, blank=True, default="")  # DocqaError.kind
    latency_ms = models.IntegerField(default=0)
    # The model's reasoning, kept only when DOCQA_STORE_REASONING allows; never in the audit
    # trail or its exports, never shown to anyone but the asker (on request) and auditors.
    reasoning = models.TextField(blank=True)
    # What the user is told beside the answer: a retry at low effort, a cut-off answer, a cut budget.
    notes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    @property
    def ended(self) -> str:
        """"failed" or "stopped" when the question did not get its whole answer, else ""."""
        return "failed" if self.error else "stopped" if self.mode == "stopped" else ""


class Citation(models.Model):
    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="citations")
    label = models.CharField(max_length=8)
    quote = models.TextField(blank=True)
    status = models.CharField(max_length=16)  # "quote verified", "source only" or "failed"
    verified = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    # Where the cited source came from: a document version and a span of its extracted text.
    document_id = models.IntegerField(null=True)
    version = models.CharField(max_length=64, blank=True)
    path = models.CharField(max_length=1000, blank=True)
    page = models.IntegerField(null=True)
    # The section heading of the chunk the quote opens in (a passage, or a whole document, spans many).
    section = models.CharField(max_length=1000, blank=True, default="")
    start = models.IntegerField(null=True)
    end = models.IntegerField(null=True)


class ApiToken(models.Model):
    """A user's bearer token for the REST and OpenAI-compatible APIs; only its sha256 is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12)  # the token's first characters, to tell tokens apart
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


# Content in an audit event's detail: any string under one of these keys. The hash chain covers
# its sha256, not the text, so retention can replace the text by {"sha256": ...} and every hash
# still verifies: an expired event proves what it held without holding it.
SEALED_KEYS = frozenset({"text", "answer", "quote"})
EXPIRED_MARK = "expired_at"  # top-level detail key set once, by retention; outside the hash


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sealed(value: object, key: str = "") -> object:
    """`value` as hashed: content strings (and their expired form) become "sha256:<hex>"."""
    if key in SEALED_KEYS:
        if isinstance(value, str):
            return "sha256:" + sha256_text(value)
        if isinstance(value, dict) and set(value) == {"sha256"}:
            return "sha256:" + str(value["sha256"])
    if isinstance(value, dict):
        return {k: sealed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [sealed(v) for v in value]
    return value


def expired(value: object, key: str = "") -> object:
    """`value` with every content string replaced by {"sha256": <hex>} (what retention stores)."""
    if key in SEALED_KEYS and isinstance(value, str):
        return {"sha256": sha256_text(value)}
    if isinstance(value, dict):
        return {k: expired(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [expired(v) for v in value]
    return value


class AuditEvent(models.Model):
    """Append-only and hash-chained: each row carries the hash of the one before it.

    The only change the database allows after insert is retention's, once per row: content
    replaced by its hash and `expired_at` added to the detail, every hashed column unchanged.
    """

    # Set before saving (not auto_now_add) because it is part of the hashed body.
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150)
    matter = models.ForeignKey(Matter, null=True, on_delete=models.PROTECT, related_name="audit_events")
    action = models.CharField(max_length=64)
    detail = models.JSONField(default=dict)
    # Unique: two writers that read the same tail cannot both append; one retries.
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]

    def body(self, detail: object) -> str:
        return json.dumps(
            {
                "prev": self.prev_hash,
                "created_at": self.created_at.isoformat(),
                "actor": self.actor,
                "matter": self.matter_id,
                "action": self.action,
                "detail": detail,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def compute_hash(self) -> str:
        detail = {k: v for k, v in self.detail.items() if k != EXPIRED_MARK} if isinstance(self.detail, dict) else self.detail
        return hashlib.sha256(self.body(sealed(detail)).encode("utf-8")).hexdigest()

    def legacy_hash(self) -> str:
        """The hash as written before content was sealed (events from before retention existed)."""
        return hashlib.sha256(self.body(self.detail).encode("utf-8")).hexdigest()

    def verifies(self) -> bool:
        return self.hash == self.compute_hash() or (
            isinstance(self.detail, dict) and EXPIRED_MARK not in self.detail and self.hash == self.legacy_hash())

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError("audit events are append-only")

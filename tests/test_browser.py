"""The main journeys in a real browser: Playwright driving Debian's Chromium, headless, against the
live server with the embedded worker and the vLLM stand-in, on real CUAD contracts (original PDFs).

Every step saves a screenshot under var/screenshots/browser/ for a person to look at.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import connections

from docqa.models import Matter, Membership, Role
from tests.conftest import REPO, SHARED

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "var" / "screenshots" / "browser"
PDFS = SHARED / "corpus" / "dev" / "originals_pdf" / "cuad"
CONTRACTS = ["ADAMSGOLFINC_03_21_2005-EX-10.17-ENDORSEMENT AGREEMENT.PDF",
             "ARMSTRONGFLOORING,INC_01_07_2019-EX-10.2-INTELLECTUAL PROPERTY AGREEMENT.PDF"]
QUESTION = "Consider the ENDORSEMENT AGREEMENT between TOM WATSON and ADAMS GOLF, LTD; Is there an anti-assignment clause?"
PASSWORD = "pw-browser-123"


@pytest.fixture(autouse=True)
def sync_database_calls_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still
    synchronous and safe, so Django's guard against ORM calls inside an event loop is lifted."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def site(data_dir: Path, tmp_path: Path, standin: Any, live_server: Any) -> Iterator[dict[str, Any]]:
    from docqa import embedded

    folder = tmp_path / "contracts"
    folder.mkdir()
    for name in CONTRACTS:
        shutil.copy(PDFS / name, folder / name)
    call_command("ingest", str(folder), "--matter", "golf", stdout=io.StringIO())
    matter = Matter.objects.get(slug="golf")
    ann = User.objects.create_user("ann", password=PASSWORD)
    Membership.objects.create(matter=matter, user=ann, role=Role.EDITOR)
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_auditevent"))
    User.objects.create_user("aud", password=PASSWORD, is_staff=True).groups.add(auditors)
    standin.mode, standin.delay = "slow", 0.05  # a model that writes at a readable pace
    embedded.ensure_worker()  # as `serve` does: the web UI's syncs run in this process
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"url": live_server.url, "folder": folder, "standin": standin}
    embedded.stop_worker()
    # A connection the test body opened while Playwright ran (do_ask in the auditor's test) was
    # found still open when the test database was dropped ("being accessed by other users").
    connections.close_all()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make setup` (or apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def sign_in(browser: Any, site: dict[str, Any], name: str) -> Any:
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(site["url"] + "/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")  # the keyboard alone signs in
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_ask_watch_it_stream_check_a_citation_follow_up_and_sync(browser: Any, site: dict[str, Any]) -> None:
    page = sign_in(browser, site, "ann")
    page.wait_for_url(re.compile(r"/m/golf/$"))
    shot(page, "01-signed-in")

    page.get_by_label("Question").fill(QUESTION)
    page.get_by_label("Effort").select_option("low")
    page.evaluate("""() => { window.shifts = 0; new PerformanceObserver(list => { for (const e of list.getEntries())
        if (!e.hadRecentInput) window.shifts += e.value; }).observe({type: "layout-shift", buffered: true}); }""")
    page.get_by_role("button", name="Ask").click()
    page.locator("#live-status").filter(has_text=re.compile("Searching|Found|Sent|Waiting|Writing|thinking")).wait_for()
    live = page.locator("#live-answer")
    live.filter(has_text=re.compile(r"\w")).wait_for()  # the first tokens are in
    before = len(live.inner_text())
    page.wait_for_timeout(400)
    assert len(live.inner_text()) > before or page.locator("#live").is_hidden()  # ...and more keep coming
    shot(page, "02-streaming")
    streamed_shift = page.evaluate("window.shifts")
    answer = page.locator("#turns .turn").first
    answer.wait_for()
    assert page.locator("#live").is_hidden()
    assert re.search(r"/m/golf/c/\d+/$", page.url)  # the address is the conversation's
    assert streamed_shift < 0.05, streamed_shift  # nothing moved while the answer streamed (CLS)
    assert page.get_by_label("Follow-up question").count() == 1  # the box now continues the thread
    listed = page.locator("#history-list li").first  # the new conversation is listed, dated as on a reload
    assert listed.locator("a[aria-current]").count() == 1
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d", listed.locator(".muted").inner_text())
    shot(page, "03-answer")

    answer.locator("a.cite").first.click()  # [S1] in the answer opens its source in the panel
    target = page.locator(".panel .source:target")
    assert target.count() == 1 and target.locator(".badge.ok").inner_text() == "verified"
    assert target.locator(".passage mark").count() >= 1  # the quoted words are marked
    shot(page, "04-citation")
    target.get_by_role("link", name="Open in its document").click()
    hit = page.locator("mark#hit")
    hit.wait_for()
    assert len(hit.inner_text()) > 20 and page.get_by_role("link", name=re.compile("Open the original file")).count()
    shot(page, "05-document-highlight")
    document_url = page.url
    page.go_back()

    page.get_by_label("Follow-up question").fill("And who may assign it?")
    page.get_by_label("Follow-up question").press("Control+Enter")  # asks from the keyboard
    page.locator("#turns .turn").nth(1).wait_for()
    assert page.locator("#history-list a[aria-current]").count() == 1
    shot(page, "06-follow-up")
    page.set_viewport_size({"width": 720, "height": 1000})  # what 200% zoom leaves of 1440 pixels
    main, panel = page.locator(".turn-main").first.bounding_box(), page.locator(".panel").first.bounding_box()
    assert panel["y"] >= main["y"] + main["height"] - 1  # the columns stack; nothing is cut off
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "06b-200-percent-zoom")
    page.set_viewport_size({"width": 1440, "height": 1000})
    handset = browser.new_context(viewport={"width": 390, "height": 844})  # a phone, signed in as the same person
    handset.add_cookies(page.context.cookies())
    phone = handset.new_page()  # no page scrolls sideways
    for where in (page.url, f"{site['url']}/m/golf/runs/", f"{site['url']}/m/golf/documents/", f"{site['url']}/nowhere/"):
        phone.goto(where)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), where
    shot(phone, "06d-phone-not-found")
    phone.goto(page.url)  # the conversation comes first, then the list; the ask box does not cover the answer
    thread, history = phone.locator(".thread").bounding_box(), phone.locator(".history").bounding_box()
    assert thread["y"] < history["y"]
    assert phone.locator(".ask-form").evaluate("f => getComputedStyle(f).position") == "static"
    phone.goto(document_url)  # a document's text with a signature line: a run of underscores with no break
    phone.evaluate("document.querySelector('.fulltext').append('Signed: ' + '_'.repeat(120))")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    handset.close()

    # The model fails: the turn says so and shows what the search found, and the question stays
    # in the box to ask again.
    site["standin"].mode = "error"
    page.get_by_label("Follow-up question").fill("Which law governs it?")
    page.get_by_role("button", name="Ask").click()
    failed = page.locator("#turns .turn").nth(2)
    failed.wait_for()
    # In plain words for the lawyer, naming the question for an administrator (not HTTP 500).
    assert failed.locator(".error").inner_text().startswith("The language model failed while answering")
    assert "under question" in failed.locator(".fault").inner_text() and "HTTP 500" not in failed.inner_text()
    assert page.locator("#live").is_hidden()
    assert failed.locator(".panel h4").inner_text() == "Passages the model was sent"  # it answered HTTP 500
    assert failed.locator(".panel .source").count() >= 1 and failed.locator(".badge.ok").count() == 0
    assert page.get_by_label("Follow-up question").input_value() == "Which law governs it?"
    failed.scroll_into_view_if_needed()
    shot(page, "06c-model-failed")
    badge = page.locator("#history-list li:has(a[aria-current]) .badge")
    assert badge.inner_text() == "failed"  # the conversation list says so at once, as after a reload

    # Asked again, the answer heads the wrong way: Stop hangs up on the model and keeps what was
    # written, said to be incomplete; the question stays in the box.
    site["standin"].mode, site["standin"].delay = "slow", 0.3
    page.get_by_role("button", name="Ask").click()
    page.locator("#live-answer").filter(has_text=re.compile(r"\w")).wait_for()
    shot(page, "06d-streaming-with-stop")
    page.get_by_role("button", name="Stop").click()
    stopped = page.locator("#turns .turn").nth(3)
    stopped.wait_for()
    assert "Stopped by the asker" in stopped.locator(".note").inner_text() and stopped.locator(".error").count() == 0
    assert stopped.locator(".answer").inner_text().strip() and page.locator("#live").is_hidden()
    assert page.get_by_label("Follow-up question").input_value() == "Which law governs it?"
    assert page.get_by_role("button", name="Stop").is_hidden()
    for _ in range(50):  # the model server notices the hang-up at its next write or two
        if site["standin"].hangups:
            break
        page.wait_for_timeout(100)
    assert site["standin"].hangups == 1
    stopped.scroll_into_view_if_needed()
    shot(page, "06e-stopped")
    assert badge.count() == 1 and badge.inner_text() == "stopped"
    site["standin"].delay = 0.05

    # An editor uploads a file and watches the sync finish on the run page.
    page.get_by_role("link", name="Runs").click()
    (site["folder"].parent / "side-letter.txt").write_text(
        "SIDE LETTER\n\nAdams Golf may not assign the Endorsement Agreement without Tom Watson's written consent.\n")
    page.get_by_label("Upload files or a zip").set_input_files(str(site["folder"].parent / "side-letter.txt"))
    page.get_by_role("button", name="Upload and sync").click()
    page.wait_for_url(re.compile(r"/m/golf/runs/\d+/$"))
    shot(page, "07-run-started")
    page.get_by_text(re.compile(r"\bfinished\b")).first.wait_for(timeout=120_000)  # the page refreshes itself
    shot(page, "08-run-finished")
    assert "1/1" in page.locator(".figures").inner_text() and "indexed 1" in page.locator(".counts").inner_text()

    # Signed out in another tab, the page says so when asked, instead of waiting for ever.
    page.get_by_role("link", name="Ask").click()
    elsewhere = browser.new_context()
    elsewhere.add_cookies(page.context.cookies())
    tab = elsewhere.new_page()
    tab.goto(f"{site['url']}/m/golf/")
    tab.get_by_role("button", name="Sign out").click()
    elsewhere.close()
    page.locator("#id_question").fill("Who may assign it?")
    page.get_by_role("button", name="Ask").click()
    page.locator("#live-error").filter(has_text="You are signed out").wait_for()
    shot(page, "08b-signed-out")


def test_an_auditor_finds_the_question_and_replays_the_answer(browser: Any, site: dict[str, Any]) -> None:
    from docqa.actions import do_ask

    do_ask(Matter.objects.get(slug="golf"), QUESTION, actor="web:ann", user=User.objects.get(username="ann"),
           effort="low")
    page = sign_in(browser, site, "aud")
    page.get_by_role("link", name="Audit").click()
    page.get_by_label(re.compile("Search", re.I)).fill("anti-assignment")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="replay").first.click()
    page.get_by_text("matches the stored answer").wait_for()
    assert "text matches its SHA-256" in page.content()
    assert "You review the trail but are not a member of this matter" in page.content()
    shot(page, "09-audit-replay")

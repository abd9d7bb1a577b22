"""The embedded default as a user runs it: ingest, serve, sign in over HTTP, ask.

While the server holds var/, the CLI commands stop at once with a clear message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], tuple[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path_factory.mktemp("served") / "var"))
    assert manage(env, "migrate", "-v0").returncode == 0
    login = manage(env, "bootstrap", "--matter", "default").stdout
    username, password = re.search(r"Sign in as (\S+) / (\S+)", login).groups()  # type: ignore[union-attr]
    ingest = manage(env, "ingest", str(REPO / "sample"), "--matter", "default")
    assert ingest.returncode == 0, ingest.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        yield url, env, (username, password)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_until_up(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited: {server.stdout.read() if server.stdout else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError("server did not come up in 120 s")


def test_cli_commands_stop_at_once_while_the_server_holds_the_store(served) -> None:
    url, env, _ = served

    ingest = manage(env, "ingest", str(REPO / "sample"), "--matter", "default", timeout=60)
    ask = manage(env, "ask", "--matter", "default", "What is the warranty?", timeout=60)

    for result in (ingest, ask):
        assert result.returncode != 0
        assert "in use by docqa the web server at http://127.0.0.1" in result.stderr


def test_served_ui_signs_in_and_answers_from_the_sample(served) -> None:
    url, _, (username, password) = served
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as browser:
        page = browser.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        home = browser.post("/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token})
        assert home.status_code == 200 and "Ask" in home.text

        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', home.text).group(1)  # type: ignore[union-attr]
        answer = browser.post(str(home.url), data={"question": "What is the warranty period of the actuators?",
                                                   "effort": "medium", "csrfmiddlewaretoken": token})

    assert answer.status_code == 200
    assert "No language model is connected" in answer.text
    assert "contracts/supply-agreement.txt" in answer.text and "twenty-four (24) months" in answer.text


def test_commands_on_a_database_never_set_up_say_how_to_set_it_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"))
    for args in (("ask", "--matter", "default", "Who are the parties?"), ("runs",),
                 ("ingest", str(REPO / "sample"), "--matter", "default")):
        result = manage(env, *args, timeout=120)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "run `python manage.py migrate` first" in result.stderr, (args, result.stderr)


def interruptible(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """A command as a terminal runs it: Ctrl-C (SIGINT) reaches it even when the tests run in the
    background, where the shell starts them with SIGINT ignored."""
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_ingest_says_what_is_left_and_the_same_sync_finishes_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"))
    assert manage(env, "migrate", "-v0").returncode == 0
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(60):
        (folder / f"note-{i:03}.txt").write_text(f"Note {i}. The supplier ships order {i} within {i % 30 + 1} days.\n")
    ingest = interruptible(env, "ingest", str(folder), "--matter", "notes")
    database = sqlite3.connect(tmp_path / "var" / "docqa.sqlite3", timeout=30)
    try:
        deadline = time.monotonic() + 240
        while ingest.poll() is None and time.monotonic() < deadline:  # Ctrl-C once the first file is in
            try:
                if database.execute("SELECT count(*) FROM docqa_ingestitem WHERE state = 'indexed'").fetchone()[0]:
                    break
            except sqlite3.OperationalError:  # the run is not recorded yet, or a write holds the file
                pass
            time.sleep(0.05)
        ingest.send_signal(signal.SIGINT)
        _, err = ingest.communicate(timeout=120)
    finally:
        database.close()

    assert ingest.returncode == 130, err
    assert "Traceback" not in err
    said = re.search(r"interrupted: run 1 stopped with (\d+) of 60 files done, the rest recorded as cancelled; "
                     r"the same sync again, or `manage.py runs resume 1`, does them", err)
    assert said, err
    done = int(said.group(1))
    assert 0 < done < 60
    assert re.search(r"^\s+1  cancelled  notes", manage(env, "runs").stdout, re.M)
    again = manage(env, "ingest", str(folder), "--matter", "notes", "--json")
    counts = json.loads(again.stdout)["counts"]
    assert again.returncode == 0 and counts["unchanged"] == done
    assert counts["new"] == counts["indexed"] == 60 - done


def test_ctrl_c_while_django_starts_or_a_command_runs_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(DJANGO_SETTINGS_MODULE="docqa.settings", DOCQA_DATA_DIR=str(tmp_path / "var"))
    for delay in (0.5, 4.0):  # while Django starts up, then in the command itself
        command = interruptible(env, "shell", "-c", "import time; time.sleep(60)")
        time.sleep(delay)
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=60)
        assert command.returncode == 130 and err.strip() == "interrupted", err

"""Ingest a folder and ask a question with every non-loopback socket blocked.

Run by tests/test_offline.py in a fresh process, so every heavy import, model load and parser
runs under the guard. Prints one JSON line: the attempts it blocked and the answer it got.
Usage: python -m tests.offline_run FOLDER QUESTION
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

attempts: list[str] = []
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def is_loopback(host: object) -> bool:
    text = str(host)
    if text in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def refuse(what: str) -> OSError:
    attempts.append(what)
    return OSError(f"network blocked by the offline test: {what}")


def guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):  # type: ignore[index]
        raise refuse(f"connect {address}")
    return _connect(self, address)


def guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):  # type: ignore[index]
        raise refuse(f"connect_ex {address}")
    return _connect_ex(self, address)


def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if host is not None and not is_loopback(host):
        raise refuse(f"resolve {host}")
    return _getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


def install_guard() -> None:
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]


def main() -> None:
    import io
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docqa.settings")
    import django

    django.setup()
    from django.core.management import call_command

    folder, question = sys.argv[1], sys.argv[2]
    call_command("migrate", verbosity=0)
    ingest_out, ask_out = io.StringIO(), io.StringIO()
    call_command("ingest", folder, "--matter", "offline", "--json", stdout=ingest_out)
    call_command("ask", "--matter", "offline", "--json", question, stdout=ask_out)
    print(json.dumps({"attempts": attempts, "ingest": json.loads(ingest_out.getvalue()),
                      "ask": json.loads(ask_out.getvalue())}))


if __name__ == "__main__":
    install_guard()  # before Django, torch, unstructured or anything else is imported
    main()

"""Schemathesis against the live test server: every API operation, generated requests, no server error.

The schema it reads is the one the server serves (/api/v1/openapi.json), so the fuzzing follows
the API as built. Requests carry a viewer's token (so they reach the handlers, not just the
authentication check); answers run the real retrieval path in search-only mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from docqa.actions import do_create_token
from tests.test_authorization import build_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(live_server: Any, data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    world = build_world(tmp_path)
    return {"url": live_server.url, "token": do_create_token(world["users"]["editor"], "fuzz", "test")}


def test_no_request_makes_the_server_fail(served: dict[str, Any]) -> None:
    """Every operation of the served schema, a dozen generated requests each (hypothesis)."""
    from hypothesis import given

    api = schemathesis.openapi.from_url(served["url"] + "/api/v1/openapi.json")
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()

        # The same generated requests on every run, so CI is repeatable; DOCQA_FUZZ_RANDOM=1 explores
        # new ones (13 random runs in a row found nothing after the fixes the first runs led to).
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=os.environ.get("DOCQA_FUZZ_RANDOM") != "1")
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            if case.path_parameters and "slug" in case.path_parameters:
                case.path_parameters["slug"] = "acme"  # a matter the token may read: the handlers run in full
            response = case.call(headers={"Authorization": f"Bearer {served['token']}"}, timeout=120)
            case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])

        fuzz()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) == 18, checked  # every operation was exercised

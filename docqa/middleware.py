"""Refuse NUL characters in any request's query or JSON body, with a clear 400.

PostgreSQL text cannot hold NUL, and no question, path or filter needs one; Django's forms
already refuse them, and this does the same for the JSON API and the OpenAI-compatible endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse


class RefuseNulCharacters:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        json_body = request.content_type == "application/json"
        if "%00" in query or "\x00" in query or (json_body and (b"\\u0000" in request.body or b"\x00" in request.body)):
            return JsonResponse({"detail": "NUL characters are not allowed in a request"}, status=400)
        return self.get_response(request)

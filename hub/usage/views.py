"""Requests (a member's own log) and Admin → Requests (the club's), each with its CSV export."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.params import FromQuery
from litestar.response import Stream, Template

from hub.runtime import runtime_of
from hub.usage import log
from hub.web.context import Db, Viewer, admin, signed_in
from hub.web.render import page

_CSV_HEADERS = {"Cache-Control": "no-store"}


def _filters(
    since: str, until: str, model: str, key: str, status: str, member: str = "", agent: str = ""
) -> log.Filters:
    return log.parse_filters(since=since, until=until, model=model, key=key, status=status, member=member, agent=agent)


def _block(request: Request[Any, Any, Any]) -> str | None:
    # Filter and paging links push their URL; htmx asks for the whole page when it restores one from history.
    return None if request.headers.get("hx-history-restore-request") == "true" else "log"


@get("/requests", name="requests")
async def requests_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    model: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
    before: FromQuery[str] = "",
) -> Template:
    user = signed_in(viewer)
    filters = _filters(since, until, model, key, status)
    found = await log.member_log(db, user, filters, log.parse_before(before))
    return page(
        request, "requests.html", block=_block(request), log=found, statuses=log.STATUSES, base="/requests", club=False
    )


@get("/requests.csv", name="requests_csv")
async def requests_csv(
    request: Request[Any, Any, Any],
    viewer: Viewer,
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    model: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
) -> Stream:
    user = signed_in(viewer)
    filters = _filters(since, until, model, key, status)
    lines = log.csv_lines(runtime_of(request).database, user, filters, club=False)
    headers = _CSV_HEADERS | {"Content-Disposition": 'attachment; filename="gpuclub-requests.csv"'}
    return Stream(lines, media_type="text/csv; charset=utf-8", headers=headers)


@get("/admin/requests", name="admin_requests")
async def admin_requests_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    model: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
    member: FromQuery[str] = "",
    agent: FromQuery[str] = "",
    before: FromQuery[str] = "",
) -> Template:
    user = admin(viewer)
    filters = _filters(since, until, model, key, status, member, agent)
    found = await log.club_log(db, user, filters, log.parse_before(before))
    return page(
        request,
        "requests.html",
        block=_block(request),
        log=found,
        statuses=log.STATUSES,
        base="/admin/requests",
        club=True,
    )


@get("/admin/requests.csv", name="admin_requests_csv")
async def admin_requests_csv(
    request: Request[Any, Any, Any],
    viewer: Viewer,
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    model: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
    member: FromQuery[str] = "",
    agent: FromQuery[str] = "",
) -> Stream:
    user = admin(viewer)
    filters = _filters(since, until, model, key, status, member, agent)
    lines = log.csv_lines(runtime_of(request).database, user, filters, club=True)
    headers = _CSV_HEADERS | {"Content-Disposition": 'attachment; filename="gpuclub-club-requests.csv"'}
    return Stream(lines, media_type="text/csv; charset=utf-8", headers=headers)


routes = [requests_page, requests_csv, admin_requests_page, admin_requests_csv]

"""A small recording fake of Stripe's HTTP API: the outgoing seam of billing.

The hub's real `stripe` library talks to it through GPUCLUB_STRIPE_API_BASE. It listens on a free loopback port
in a thread and serves

    POST /v1/checkout/sessions          create a session (form-encoded, as the library sends it)
    GET  /v1/checkout/sessions/{id}     read it back

answering with Stripe-shaped JSON (a `url` on checkout.stripe.com, `payment_status`, `amount_total`, …) and
Stripe-shaped errors (401 for a wrong key, 400 for a missing parameter, or whatever `fail_next` says). Every
request is recorded with its headers and its parameters decoded into nested dicts and lists, so tests can
assert what the hub sent. The fake also plays Stripe's part after the payment page: `pay`, `refund` and
`dispute` change its sessions and return the event Stripe would deliver, ready to be signed with `signed`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import stripe

Json = dict[str, Any]
_SESSION_PATH = re.compile(r"^/v1/checkout/sessions/([A-Za-z0-9_]+)$")
_KEY_PARTS = re.compile(r"[^\[\]]+")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    form: list[tuple[str, str]]  # the raw form fields, in order
    params: Json  # the same, nested: line_items[0][quantity] → {"line_items": [{"quantity": "1"}]}


@dataclass
class FakeStripe:
    secret_key: str
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, Json] = field(default_factory=dict)
    charges: dict[str, Json] = field(default_factory=dict)  # by session id, once paid
    fail_next: tuple[int, Json] | None = None  # (status, error object) for the next API call
    lock: threading.Lock = field(default_factory=threading.Lock)

    # Stripe's side of the payment page -----------------------------------------------------------------

    def pay(self, session_id: str, *, paid: bool = True) -> Json:
        """The member finished the payment page: `checkout.session.completed`, paid or (slow methods) unpaid."""
        with self.lock:
            session = self.sessions[session_id]
            session.update(status="complete", payment_status="paid" if paid else "unpaid")
            session["payment_intent"] = session["payment_intent"] or _id("pi")
            self.charges[session_id] = {
                "id": _id("ch"),
                "object": "charge",
                "amount": session["amount_total"],
                "amount_captured": session["amount_total"],
                "amount_refunded": 0,
                "captured": True,
                "currency": session["currency"],
                "paid": paid,
                "payment_intent": session["payment_intent"],
                "refunded": False,
                "status": "succeeded" if paid else "pending",
            }
            return event("checkout.session.completed", dict(session))

    def settle(self, session_id: str) -> Json:
        """A slow payment method went through after all: `checkout.session.async_payment_succeeded`."""
        with self.lock:
            session = self.sessions[session_id]
            session["payment_status"] = "paid"
            self.charges[session_id].update(paid=True, status="succeeded")
            return event("checkout.session.async_payment_succeeded", dict(session))

    def refund(self, session_id: str, amount_refunded: int) -> Json:
        """`charge.refunded`; `amount_refunded` is cumulative, as on Stripe's charge object."""
        with self.lock:
            charge = self.charges[session_id]
            charge.update(amount_refunded=amount_refunded, refunded=amount_refunded >= charge["amount"])
            return event("charge.refunded", dict(charge))

    def dispute(self, session_id: str) -> Json:
        with self.lock:
            charge = self.charges[session_id]
            dispute = {
                "id": _id("dp"),
                "object": "dispute",
                "amount": charge["amount"],
                "charge": charge["id"],
                "currency": charge["currency"],
                "payment_intent": charge["payment_intent"],
                "reason": "fraudulent",
                "status": "needs_response",
            }
            return event("charge.dispute.created", dispute)

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # The API ---------------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, Json]:
        form = parse_qsl(body, keep_blank_values=True)
        with self.lock:
            self.requests.append(Recorded(method, path, headers, form, nest(form)))
            if headers.get("authorization") != f"Bearer {self.secret_key}":
                return 401, _error("Invalid API Key provided.", "invalid_request_error")
            if self.fail_next is not None:
                status, error = self.fail_next
                self.fail_next = None
                return status, {"error": error}
            if method == "POST" and path == "/v1/checkout/sessions":
                return self._create_session(nest(form))
            match = _SESSION_PATH.match(path)
            if method == "GET" and match:
                session = self.sessions.get(match.group(1))
                if session is None:
                    return 404, _error(f"No such checkout.session: '{match.group(1)}'", "invalid_request_error")
                return 200, session
        return 404, _error(f"Unrecognized request URL ({method}: {path}).", "invalid_request_error")

    def _create_session(self, params: Json) -> tuple[int, Json]:
        for name in ("mode", "line_items", "success_url"):
            if name not in params:
                return 400, _error(f"Missing required param: {name}.", "invalid_request_error", param=name)
        items = params["line_items"]
        total = sum(int(item["price_data"]["unit_amount"]) * int(item.get("quantity", "1")) for item in items)
        session_id = "cs_test_" + secrets.token_hex(24)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": int(time.time()),
            "currency": items[0]["price_data"]["currency"],
            "customer": None,
            "customer_email": params.get("customer_email"),
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "mode": params["mode"],
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "url": f"https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        }
        self.sessions[session_id] = session
        return 200, session


def event(kind: str, obj: Json) -> Json:
    """An event as Stripe delivers it to a webhook endpoint."""
    return {
        "id": _id("evt"),
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


def signed(event: Json, secret: str, *, timestamp: int | None = None) -> tuple[str, dict[str, str]]:
    """The body and headers of a webhook delivery, signed by the real library the way Stripe signs."""
    payload = json.dumps(event)
    signature = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return payload, {"Stripe-Signature": str(signature), "Content-Type": "application/json"}


def nest(form: list[tuple[str, str]]) -> Json:
    """Stripe's form encoding back into objects: a[b][0][c]=v → {"a": {"b": [{"c": "v"}]}}."""
    root: Json = {}
    for key, value in form:
        parts = _KEY_PARTS.findall(key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    nested: Json = _lists(root)
    return nested


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isdigit() for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


def _id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def _error(message: str, kind: str, *, param: str | None = None) -> Json:
    return {"error": {"message": message, "type": kind, **({"param": param} if param else {})}}


@contextmanager
def fake_stripe(secret_key: str) -> Iterator[FakeStripe]:
    """The fake, listening on 127.0.0.1 until the block ends."""
    fake = FakeStripe(secret_key)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            path, _, query = self.path.partition("?")
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, answer = fake.answer(self.command, path, headers, body or query)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", _id("req"))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

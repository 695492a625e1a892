"""The outgoing seam to Stripe: create and read Checkout Sessions, and verify webhook signatures.

Each call opens its own `StripeClient` on the configured API base (tests and staging point it elsewhere) and
closes its HTTP connections when done; nothing is set on the `stripe` module. Everything returned is plain
JSON-shaped dicts, so the rules in `service.py` read Stripe's objects the same way whether they came from the
API or from a webhook.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import stripe

from hub.errors import BadRequest, Unavailable
from hub.settings import StripeSettings

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParams

log = logging.getLogger("gpuclub.billing")

TOLERANCE_SECONDS = 300  # how old a signed webhook may be; older ones are refused as possible replays
Json = dict[str, Any]


class _Http(stripe.HTTPClient):
    """Stripe's requests over an httpx client of ours: the library's own httpx client passes the form body as
    `data=`, which httpx deprecates (a warning on every call), so this sends it as `content=`."""

    name = "httpx"

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.client = httpx.AsyncClient(timeout=timeout)

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self.client.request(method, url, headers=headers, content=post_data)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__} talking to Stripe"
            raise stripe.APIConnectionError(error, should_retry=True) from exc  # type: ignore[no-untyped-call]
        return response.content, response.status_code, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self.client.aclose()

    def close(self) -> None:
        """Nothing synchronous is ever opened."""


class StripeApi:
    def __init__(self, settings: StripeSettings) -> None:
        self.settings = settings

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[stripe.StripeClient]:
        http = _Http(timeout=20)
        try:
            yield stripe.StripeClient(
                self.settings.secret_key,
                base_addresses={"api": self.settings.api_base},
                http_client=http,
                max_network_retries=2,
            )
        except stripe.StripeError as exc:
            log.warning("stripe call failed: %s", exc)
            if isinstance(exc, stripe.APIConnectionError) or not exc.user_message:
                detail = "Stripe could not be reached"
            else:
                detail = f"Stripe refused the payment: {exc.user_message.rstrip('.')}"
            raise Unavailable(f"{detail}. Nothing was charged; please try again in a minute.") from exc
        finally:
            await http.close_async()

    async def create_checkout(
        self,
        *,
        product: str,
        amount: int,
        currency: str,
        success_url: str,
        cancel_url: str,
        client_reference_id: str,
        metadata: dict[str, str],
        customer_email: str | None = None,
    ) -> Json:
        """A one-off payment page for `amount` (minor units) of `currency`, bought as one `product`."""
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {"currency": currency, "unit_amount": amount, "product_data": {"name": product}},
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": client_reference_id,
            "metadata": metadata,
        }
        if customer_email:
            params["customer_email"] = customer_email
        async with self._client() as client:
            session = await client.v1.checkout.sessions.create_async(params)
        return session.to_dict()

    async def retrieve_checkout(self, session_id: str) -> Json:
        async with self._client() as client:
            session = await client.v1.checkout.sessions.retrieve_async(session_id)
        return session.to_dict()

    def verify_event(self, payload: bytes, signature: str | None) -> Json:
        """The event in a webhook body, once its signature and age check out; BadRequest otherwise."""
        if not signature:
            raise BadRequest("The request has no Stripe-Signature header; only Stripe can post here.")
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature, self.settings.webhook_secret, tolerance=TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            log.warning("stripe webhook refused: %s", exc.user_message)
            raise BadRequest(f"The Stripe signature does not check out: {exc.user_message}") from None
        try:
            event = json.loads(payload)
        except ValueError:
            raise BadRequest("The webhook body is not JSON.") from None
        if not (isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("type"), str)):
            raise BadRequest("The webhook body is not a Stripe event.")
        data = event.get("data")
        if not (isinstance(data, dict) and isinstance(data.get("object"), dict)):
            raise BadRequest("The webhook body is not a Stripe event.")
        return event

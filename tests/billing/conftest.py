"""Billing tests run the app with Stripe keys, its real `stripe` library pointed at the recording fake."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from hub.settings import Settings, StripeSettings
from tests.billing.steps import SECRET_KEY, WEBHOOK_SECRET
from tests.support.fake_stripe import FakeStripe, fake_stripe


@pytest.fixture
def stripe_fake() -> Iterator[FakeStripe]:
    with fake_stripe(SECRET_KEY) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, stripe_fake: FakeStripe) -> Settings:
    return replace(settings, stripe=StripeSettings(SECRET_KEY, WEBHOOK_SECRET, stripe_fake.url))

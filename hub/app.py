"""`create_app(settings)`: the route table, the shared parts and the plugins. No logic lives here."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from hub.accounts import views as accounts
from hub.admin import member as admin_member
from hub.admin import views as admin
from hub.agents import admin_views as club_gpus
from hub.agents import probe_views, tunnel
from hub.agents import views as gpus
from hub.agents.disputes import Disputes
from hub.agents.live import Registry
from hub.agents.prober import Prober
from hub.background import Background
from hub.billing import views as billing
from hub.changes import (
    AgentChanged,
    AgentRevoked,
    BalanceChanged,
    Changes,
    KeyLimitsChanged,
    KeysChanged,
    PricesChanged,
)
from hub.credits import admin_views as money
from hub.credits import views as credits
from hub.db import Database
from hub.drain import Drain
from hub.housekeeping import Housekeeping
from hub.invitations import views as invitations
from hub.keys import views as keys
from hub.keys.cache import KeyCache
from hub.ledger.purses import Purses
from hub.metrics import Metrics
from hub.outage import Outage
from hub.pages import views as pages
from hub.proxy import views as proxy
from hub.proxy.admission import Admission
from hub.proxy.bills import Bills, confirm
from hub.proxy.recorder import Recorder
from hub.proxy.relay import Proxy
from hub.proxy.scheduler import Scheduler
from hub.runtime import Runtime
from hub.settings import Settings
from hub.signin import views as signin
from hub.signin.providers import build_providers
from hub.tokenizers import views as tokenizer_pages
from hub.tokenizers.counting import Tokenizers
from hub.usage import views as request_log
from hub.web.context import provide_db, provide_viewer
from hub.web.errors import handle
from hub.web.headers import SecurityHeaders


def create_app(settings: Settings, database: Database | None = None) -> Litestar:
    runtime = build_runtime(settings, database or Database(settings.database_url))
    housekeeping = Housekeeping(
        runtime.database,
        runtime.purses,
        runtime.admission.limiter,
        outage=runtime.outage,
        retention_days=settings.log_retention_days,
    )

    async def shutdown() -> None:
        await housekeeping.stop()
        await runtime.tokenizers.stop()
        await runtime.prober.stop()
        await runtime.background.drain()
        await runtime.recorder.stop()  # after the requests still finishing in the background
        await runtime.outage.stop()
        await runtime.database.dispose()

    return Litestar(
        route_handlers=[
            *pages.routes,
            *accounts.routes,
            *signin.routes,
            *keys.routes,
            *gpus.routes,
            *club_gpus.routes,
            *probe_views.routes,
            *invitations.routes,
            *admin.routes,
            *admin_member.routes,
            *credits.routes,
            *request_log.routes,
            *money.routes,
            *tokenizer_pages.routes,
            *billing.routes,
            *proxy.routes,
            tunnel.tunnel,
            create_static_files_router(path="/static", directories=[settings.static_dir], name="static"),
        ],
        dependencies={"db": Provide(provide_db), "viewer": Provide(provide_viewer)},
        state=State({"runtime": runtime}),
        template_config=TemplateConfig(directory=settings.templates_dir, engine=JinjaTemplateEngine),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name="gpuclub_csrf",
            cookie_secure=settings.secure_cookies,
            cookie_httponly=False,
            exclude=["/v1/", "^/rerank$", "/healthz", "/agent/", "/stripe/webhook"],
        ),
        exception_handlers={Exception: handle},
        before_send=[SecurityHeaders(settings)],
        middleware=[runtime.drain.middleware],
        on_startup=[housekeeping.start, runtime.tokenizers.start, runtime.prober.start],
        on_shutdown=[shutdown],
        request_max_body_size=settings.max_body_bytes + 1024,
        openapi_config=None,
        debug=False,
    )


def build_runtime(settings: Settings, db: Database) -> Runtime:
    """The live state and the parts that keep it, wired together; what a change affects subscribes to it here."""
    registry = Registry()
    scheduler = Scheduler(
        registry, queue_per_member=settings.queue_per_member, wait_seconds=settings.queue_wait_seconds, database=db
    )
    background = Background()
    disputes = Disputes(db, registry, background)  # the proxy reports disputed usage here
    metrics = Metrics(
        agents_online=lambda: len(registry.links),
        queued=scheduler.waiting,
        in_flight=lambda: sum(link.in_flight for link in registry.links.values()),
    )
    outage = Outage(db, settings.outage_seconds)  # what reads the database serves what it read last while it is away
    purses = Purses(
        db,
        hold_seconds=settings.queue_wait_seconds + settings.upstream_timeout + 60,
        outage=outage,
        buy_url=settings.url("/credits/buy") if settings.stripe_enabled else None,  # the 402 offers buying only then
    )
    recorder = Recorder(db, purses, outage=outage)
    bills = Bills.for_secret(settings.secret_key)  # what agents keep until it is written (hub/proxy/bills.py)
    recorder.on_written = lambda written: confirm(registry, written)
    admission = Admission(db, purses, recorder, outage=outage)
    tokenizers = Tokenizers(db, outage=outage)  # the hub's own token count, for models an admin attached a tokenizer to
    key_cache = KeyCache(outage=outage)

    changes = Changes()
    changes.subscribe(KeysChanged, lambda _: key_cache.clear())
    changes.subscribe(PricesChanged, lambda _: admission.forget())
    changes.subscribe(PricesChanged, lambda _: scheduler.catalog.forget_prices())
    changes.subscribe(BalanceChanged, lambda c: purses.stale_all() if c.user_id is None else purses.stale(c.user_id))
    changes.subscribe(
        AgentChanged, lambda c: registry.configure(c.agent_id, name=c.name, shared=c.shared, paused=c.paused)
    )
    changes.subscribe(AgentChanged, lambda c: registry.vouch(c.agent_id, verified=c.verified))
    changes.subscribe(AgentRevoked, lambda c: registry.disconnect(c.agent_id, c.reason))
    changes.subscribe(KeyLimitsChanged, lambda c: admission.forget_key(c.user_id, c.key_id))
    changes.subscribe(AgentChanged, lambda c: scheduler.catalog.configure(c.agent_id, shared=c.shared, paused=c.paused))
    changes.subscribe(AgentRevoked, lambda c: scheduler.catalog.revoked(c.agent_id))

    return Runtime(
        settings=settings,
        database=db,
        providers=build_providers(settings),
        changes=changes,
        registry=registry,
        keys=key_cache,
        purses=purses,
        admission=admission,
        recorder=recorder,
        bills=bills,
        proxy=Proxy(
            scheduler,
            admission,
            background,
            metrics,
            settings.upstream_timeout,
            max_answer_bytes=settings.max_answer_bytes,
            on_dispute=disputes.record,
            tokenizers=tokenizers,
            bills=bills,
        ),
        metrics=metrics,
        background=background,
        disputes=disputes,
        tokenizers=tokenizers,
        prober=Prober(db, registry, scheduler.release, minutes=settings.probe_minutes),  # model identity probes
        drain=Drain(settings.drain_seconds, scheduler, registry),  # `gpuclub serve` runs it on SIGTERM
        outage=outage,
    )

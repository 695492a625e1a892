"""`create_app(settings)`: the route table and the plugins. No logic lives here."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from hub.accounts import views as accounts
from hub.admin import views as admin
from hub.db import Database
from hub.invitations import views as invitations
from hub.keys import views as keys
from hub.pages import views as pages
from hub.proxy import views as proxy
from hub.settings import Settings
from hub.signin import views as signin
from hub.signin.providers import build_providers
from hub.web.context import provide_db, provide_viewer
from hub.web.errors import handle


def create_app(settings: Settings, database: Database | None = None) -> Litestar:
    db = database or Database(settings.database_url)

    async def close_database() -> None:
        await db.dispose()

    return Litestar(
        route_handlers=[
            *pages.routes,
            *accounts.routes,
            *signin.routes,
            *keys.routes,
            *invitations.routes,
            *admin.routes,
            *proxy.routes,
            create_static_files_router(path="/static", directories=[settings.static_dir], name="static"),
        ],
        dependencies={"db": Provide(provide_db), "viewer": Provide(provide_viewer)},
        state=State({"settings": settings, "db": db, "providers": build_providers(settings)}),
        template_config=TemplateConfig(directory=settings.templates_dir, engine=JinjaTemplateEngine),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name="gpuclub_csrf",
            cookie_secure=settings.secure_cookies,
            cookie_httponly=False,
            exclude=["/v1/", "/healthz"],
        ),
        exception_handlers={Exception: handle},
        on_shutdown=[close_database],
        openapi_config=None,
        debug=False,
    )

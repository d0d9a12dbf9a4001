"""`BaseRouter`: the CRUD endpoints of one resource, mounted from its service and schemas.

    router = BaseRouter(
        WidgetService, prefix="/widgets",
        create_schema=WidgetCreate, update_schema=WidgetUpdate, public_schema=WidgetPublic,
        permissions=Permissions(delete=[admins_only]),
    )
    app.include_router(router)

Routes (`{id}` is the primary key):

    POST   /widgets                 create              201  {"data": widget, "message"}
    GET    /widgets                 list                200  {"data": [...], "meta": {...}}
    GET    /widgets/deleted         list the trash      (soft-deletable models only)
    GET    /widgets/{id}            read one
    PATCH  /widgets/{id}            partial update      only the fields sent are applied
    DELETE /widgets/{id}            soft delete         (hard delete without SoftDeleteMixin)
    POST   /widgets/{id}/restore    undo a soft delete
    DELETE /widgets/{id}/purge      hard delete         (only with hard_delete=True)

`routes=` mounts a subset (by name: create, list, list_deleted, read, update, delete,
restore, purge), for a resource whose other operations are custom routes.

List query: `page`/`size` or `offset`/`limit`, `sort=-price_cents,name`, and filters
(`status=active`, `price_cents__gte=100`; see core.bases.filters). Other parameters
(`utm_source=...`) are ignored, unless they look like a filter (`colour__in=...`): see
`core.bases.filters.meant_as_filters`.

What a client sends is bounded by what the model stores: the create and update schemas get the
ranges of their integer columns (core.bases.bounds), and paging values stay within SQL's 64-bit
OFFSET, so a value too large is a 422 naming it, never an overflow in the driver. Every status a
route can answer is declared in the OpenAPI with the standard error body (core.bases.responses).

Each route runs its action's permission dependencies first, then the service with the session
`core.bases.deps.SessionDep` would give: one transaction per request for a write, reads without
BEGIN/COMMIT for GET. Routes stay thin: rules live in the
service, error responses in core.bases.errors.
"""

# No `from __future__ import annotations`: the endpoints are closures, and FastAPI must see
# their annotations as objects, not as strings it would resolve in module globals.

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, cast, get_args

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.params import Depends as DependsParam
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases.bounds import bounded_schema
from core.bases.deps import open_session, outbox_of
from core.bases.errors import ConfigurationError
from core.bases.filters import OPERATORS, SEPARATOR, QueryFilters
from core.bases.pagination import MAX_OFFSET, Page, PageRequest, max_page
from core.bases.permissions import Action, Permissions
from core.bases.responses import error_responses
from core.bases.schemas import Envelope, ListEnvelope, PageMeta
from core.bases.service import BaseService
from core.bases.types import CreateT, EventOutbox, ModelT, PublicT, UpdateT
from core.db.models import is_soft_deletable

ServiceFactory = Callable[[AsyncSession, EventOutbox | None], BaseService[ModelT, CreateT, UpdateT]]
"""Builds the service for one request; a BaseService subclass itself fits."""

RESERVED_QUERY = frozenset({"page", "size", "offset", "limit", "sort"})
RouteName = Literal["create", "list", "list_deleted", "read", "update", "delete", "restore",
                    "purge"]
ROUTE_NAMES: tuple[str, ...] = get_args(RouteName)
ALWAYS = (422, 500)
"""Any route can answer these: its parameters are validated, and nothing is infallible."""


@dataclass(frozen=True, slots=True)
class _ListQuery:
    """The parsed list query: which page, which filters, which order."""

    page: PageRequest
    filters: QueryFilters
    sort: str | None


class BaseRouter(APIRouter, Generic[ModelT, CreateT, UpdateT, PublicT]):
    """An APIRouter with the CRUD routes of one resource; add custom routes to it freely."""

    def __init__(
        self,
        service: ServiceFactory[ModelT, CreateT, UpdateT],
        *,
        prefix: str,
        create_schema: type[CreateT],
        update_schema: type[UpdateT],
        public_schema: type[PublicT],
        permissions: Permissions | None = None,
        label: str | None = None,
        soft_delete: bool | None = None,
        hard_delete: bool = False,
        default_page_size: int = 20,
        max_page_size: int = 100,
        routes: Collection[RouteName] | None = None,
        **router_options: Any,
    ) -> None:
        """`routes` names the CRUD routes to mount (default: all that apply), for a resource
        whose other operations are custom routes or not offered over HTTP at all."""
        super().__init__(prefix=prefix, **router_options)
        unknown = set(routes or ()) - set(ROUTE_NAMES)
        if unknown:
            raise ConfigurationError(f"BaseRouter: no routes named {sorted(unknown)}; "
                                     f"choose from {', '.join(ROUTE_NAMES)}")
        self.mounted = frozenset(ROUTE_NAMES if routes is None else routes)
        model = _model_of(service)
        if soft_delete is None:
            if model is None:
                raise ConfigurationError("BaseRouter: pass soft_delete= when `service` is not "
                                         "a BaseService subclass")
            soft_delete = is_soft_deletable(model)
        if not 1 <= default_page_size <= max_page_size:
            raise ConfigurationError("need 1 <= default_page_size <= max_page_size")
        self.service_factory = service
        # Bounded by the model's columns when the model is known; the service still receives
        # instances of the given schemas (these are subclasses).
        self.create_schema = bounded_schema(create_schema, model) if model else create_schema
        self.update_schema = bounded_schema(update_schema, model) if model else update_schema
        self.public_schema = public_schema
        self.permissions = permissions or Permissions()
        self.label = label or (model.__name__ if model else prefix.strip("/").title())
        self.route_name = prefix.strip("/").replace("/", "_").replace("-", "_")
        self.soft_delete = soft_delete
        self.hard_delete = hard_delete
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self._one: Any = cast(Any, Envelope)[public_schema]
        self._many: Any = cast(Any, ListEnvelope)[public_schema]
        self._mount(self._list_description(service))

    def public(self, obj: ModelT) -> PublicT:
        """The client's view of a stored row."""
        return self.public_schema.model_validate(obj, from_attributes=True)

    def page_envelope(self, page: Page[ModelT], message: str | None = None) -> Any:
        return self._many(
            data=[self.public(obj) for obj in page.items], message=message,
            meta=PageMeta(page=page.page, size=page.size, total=page.total, pages=page.pages))

    def checks(self, action: Action) -> list[DependsParam]:
        return [Depends(check) for check in self.permissions.for_action(action)]

    # --- routes -----------------------------------------------------------------------------

    def _mount(self, list_description: str) -> None:
        factory = self.service_factory

        # One dependency, not a chain of four (session, database, outbox): FastAPI's
        # resolution of each is a measurable part of a request's CPU time.
        async def get_service(request: Request) -> AsyncIterator[BaseService[Any, Any, Any]]:
            async with open_session(request) as session:
                yield factory(session, outbox_of(request))

        Service = Annotated[BaseService[Any, Any, Any],
                            Depends(get_service, scope="function")]
        label = self.label
        none_envelope = Envelope[None]
        list_params = self._list_params()

        async def create(data: Any, service: Service) -> Any:
            obj = await service.create(data)
            return self._one(data=self.public(obj), message=f"{label} created")

        create.__annotations__["data"] = self.create_schema  # the schema is known at runtime

        async def list_(params: Annotated[_ListQuery, Depends(list_params)],
                        service: Service) -> Any:
            page = await service.list(params.page, filters=params.filters, sort=params.sort)
            return self.page_envelope(page)

        async def list_deleted(params: Annotated[_ListQuery, Depends(list_params)],
                               service: Service) -> Any:
            page = await service.list(params.page, filters=params.filters, sort=params.sort,
                                      only_deleted=True)
            return self.page_envelope(page)

        async def read(id: str, service: Service) -> Any:
            return self._one(data=self.public(await service.get(id)))

        async def update(id: str, data: Any, service: Service) -> Any:
            obj = await service.update(id, data)
            return self._one(data=self.public(obj), message=f"{label} updated")

        update.__annotations__["data"] = self.update_schema

        async def delete(id: str, service: Service) -> Any:
            obj = await service.delete(id)
            if obj is None:
                return none_envelope(data=None, message=f"{label} deleted")
            return self._one(data=self.public(obj), message=f"{label} deleted")

        async def restore(id: str, service: Service) -> Any:
            obj = await service.restore(id)
            return self._one(data=self.public(obj), message=f"{label} restored")

        async def purge(id: str, service: Service) -> Any:
            await service.purge(id)
            return none_envelope(data=None, message=f"{label} permanently deleted")

        # The statuses beyond ALWAYS that each route answers: 400 for a body that is not
        # JSON, 404 for an unknown id, 409 where a write can clash with stored state.
        route = self._route
        route("", create, "POST", "create", self._one, f"Create a {label}", (400, 409),
              status_code=status.HTTP_201_CREATED)
        route("", list_, "GET", "read", self._many, f"List {label} items", (),
              description=list_description)
        if self.soft_delete:
            route("/deleted", list_deleted, "GET", "read_deleted", self._many,
                  f"List soft-deleted {label} items", (), description=list_description)
        route("/{id}", read, "GET", "read", self._one, f"Read a {label}", (404,))
        route("/{id}", update, "PATCH", "update", self._one, f"Update a {label} (partial)",
              (400, 404, 409))
        route("/{id}", delete, "DELETE", "delete", self._one if self.soft_delete
              else none_envelope, f"Delete a {label}", (404, 409))
        if self.soft_delete:
            route("/{id}/restore", restore, "POST", "restore", self._one,
                  f"Restore a deleted {label}", (404, 409))
            if self.hard_delete:
                route("/{id}/purge", purge, "DELETE", "hard_delete", none_envelope,
                      f"Delete a {label} for good", (404, 409))

    def _route(self, path: str, endpoint: Callable[..., Any], method: str, action: Action,
               response_model: Any, summary: str, errors: tuple[int, ...],
               **options: Any) -> None:
        if endpoint.__name__.strip("_") not in self.mounted:
            return
        checks = self.checks(action)
        self.add_api_route(
            path, endpoint, methods=[method], response_model=response_model, summary=summary,
            name=f"{self.route_name}_{endpoint.__name__.strip('_')}", dependencies=checks,
            responses=error_responses(
                ALWAYS, errors,
                (401, 403) if checks else (),  # a permission refuses anonymous or unallowed
                (413,) if self.max_body_size is not None else ()),  # the router limits bodies
            **options)

    def _list_params(self) -> Callable[..., Awaitable[_ListQuery]]:
        default_size, max_size = self.default_page_size, self.max_page_size
        last_page = max_page(max_size)

        async def params(  # async: a plain def would run in a worker thread
            request: Request,
            page: Annotated[int, Query(ge=1, le=last_page, description="1-based page number.")]
            = 1,
            size: Annotated[int, Query(ge=1, le=max_size, description="Items per page.")]
            = default_size,
            offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET,
                                                description="Instead of page.")] = None,
            limit: Annotated[int | None, Query(ge=1, le=max_size, description="With offset.")]
            = None,
            sort: Annotated[str | None, Query(
                description="Comma-separated fields, '-' for descending: -created_at,name")]
            = None,
        ) -> _ListQuery:
            if offset is not None:
                request_page = PageRequest(offset, limit or size)
            else:
                request_page = PageRequest.of(page, limit or size)
            filters = QueryFilters(tuple((k, v) for k, v in request.query_params.multi_items()
                                         if k not in RESERVED_QUERY))
            return _ListQuery(request_page, filters, sort)

        return params

    @staticmethod
    def _list_description(service: Any) -> str:
        repository = getattr(service, "repository_class", None)
        if repository is None:
            return ("Fields of the resource are filters; other query parameters are ignored, "
                    f"unless shaped like a filter (`name{SEPARATOR}op`).")
        fields = ", ".join(sorted(repository.filter_fields)) or "none"
        sortable = ", ".join(sorted(repository.sort_fields)) or "none"
        ops = ", ".join(sorted(OPERATORS - {"eq"}))
        return (f"Filters: {fields} (as `field=value` or `field{SEPARATOR}op=value`, op one "
                f"of {ops}). Sort on: {sortable}. Other query parameters are ignored, unless "
                f"shaped like a filter (`name{SEPARATOR}op`).")


def _model_of(service: Any) -> Any:
    if isinstance(service, type) and issubclass(service, BaseService):
        repository = getattr(service, "repository_class", None)
        return getattr(repository, "model", None)
    return None


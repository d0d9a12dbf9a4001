"""One OpenAPI document and docs page at the gateway, merged from every routed service's own:
`merge_openapi` (pure), `OpenApiCache` (fetches and keeps it), `docs_routes` (serves it)."""

from gateway.openapi.cache import Fetch, OpenApiCache, docs_routes, merged_openapi
from gateway.openapi.merge import RouteLike, TableLike, gateway_spec, merge_openapi

__all__ = ["Fetch", "OpenApiCache", "RouteLike", "TableLike", "docs_routes", "gateway_spec",
           "merge_openapi", "merged_openapi"]

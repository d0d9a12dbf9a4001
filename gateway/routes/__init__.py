"""The route table: which service answers a path, and on what terms.

    table = load_route_table(settings.gateway_routes_file, settings)   # RouteTableError if bad
    route = table.match("/api/users/me")        # longest prefix, on whole segments
    route.upstream_path("/api/users/me")        # "/users/me"

The table is a TOML file (shape in gateway/README.md; gateway/routes.toml is the example). It
is validated whole before use: every problem is reported at once, each naming the file, the
route and the field, because a typo in a security setting (`pubic = true`, `permision = ...`)
must stop the gateway rather than be ignored. `RouteTableWatcher` reloads it when it changes;
a broken edit is logged and the table in force stays.

The parts: `table` (the model and matching, the hot path), `file` (reading and validating),
`checks` (single values), `watch` (the reload).
"""

from gateway.routes.checks import parse_rate_limit
from gateway.routes.file import RouteTableError, load_route_table
from gateway.routes.table import LEGACY, Route, RouteTable
from gateway.routes.watch import RouteTableWatcher

__all__ = ["LEGACY", "Route", "RouteTable", "RouteTableError", "RouteTableWatcher",
           "load_route_table", "parse_rate_limit"]

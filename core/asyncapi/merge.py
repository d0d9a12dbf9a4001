"""One AsyncAPI document from the services' own (the gateway's `/asyncapi.json`, and
`python -m core events docs`).

Unlike the OpenAPI merge nothing is re-rooted or renamed: a topic is one channel whoever
sends or reads it, so channels merge by id (their messages united), and operation ids already
name their service. A message id (`<type>.v<version>`) means one record format on the wire;
when two services describe it differently (a consumer keeps a copy with fewer fields), the
owner's description wins (the service the type is named after: `events check` keeps every
copy able to read it), else the first service's by name. The `$ref`s need no rewriting: every
id keeps its name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from core.asyncapi.document import ASYNCAPI_VERSION, CONTENT_TYPE

Json = dict[str, Any]


def merge_asyncapi(documents: Mapping[str, Mapping[str, Any]], *, title: str,
                   version: str = "", unavailable: Iterable[str] = ()) -> Json:
    """The merged document of `documents` (service name -> its own document)."""
    channels: dict[str, Json] = {}
    operations: dict[str, Json] = {}
    components: dict[str, dict[str, Json]] = {}
    owned: set[tuple[str, str]] = set()
    for service, doc in sorted(documents.items()):
        for channel_id, channel in (doc.get("channels") or {}).items():
            if channel_id not in channels:
                channels[channel_id] = copy.deepcopy(dict(channel))
                continue
            kept = channels[channel_id].setdefault("messages", {})
            for key, value in (channel.get("messages") or {}).items():
                kept.setdefault(key, copy.deepcopy(value))
        for op_id, operation in (doc.get("operations") or {}).items():
            operations.setdefault(op_id if op_id not in operations else f"{service}.{op_id}",
                                  copy.deepcopy(dict(operation)))
        for kind, items in (doc.get("components") or {}).items():
            section = components.setdefault(kind, {})
            for name, value in items.items():
                owner = name.split(".", 1)[0] == service
                if name not in section or (owner and (kind, name) not in owned):
                    section[name] = copy.deepcopy(value)
                    if owner:
                        owned.add((kind, name))
    missing = sorted(set(unavailable))
    info: Json = {"title": title, "version": version,
                  "description": "The events of " + (", ".join(sorted(documents)) or "no service")
                  + (f"; unavailable: {', '.join(missing)}" if missing else "") + "."}
    if missing:
        info["x-unavailable-services"] = missing
    return {"asyncapi": ASYNCAPI_VERSION, "info": info, "defaultContentType": CONTENT_TYPE,
            "channels": dict(sorted(channels.items())),
            "operations": dict(sorted(operations.items())),
            "components": {kind: dict(sorted(items.items()))
                           for kind, items in sorted(components.items())}}

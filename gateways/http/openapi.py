"""The OpenAPI 3.1 document of every REST route, built from the route table and the msgspec
types the handlers decode and encode (so it cannot drift from them). Served at
``GET /openapi.json``; ``python -m gateways.http openapi`` prints it (docs/openapi.json is that
output, and a test keeps the two equal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gateways.http.server import Request, Response

if TYPE_CHECKING:
    from gateways.http.app import Gateway, Route

REF = "#/components/schemas/{name}"
V1_AUTH: dict[str, list[str]] = {"v1Key": [], "v1Timestamp": [], "v1Signature": []}
V3_AUTH: dict[str, list[str]] = {"binanceKey": []}
BEARER: dict[str, list[str]] = {"session": []}


def document(gw: Gateway) -> dict[str, Any]:
    types: list[Any] = []
    for r in gw.routes:
        types += [t for t in (r.query, r.body, r.response) if t is not None]
    errors = [gw.apis["v1"].error_type, gw.apis["v3"].error_type]  # type: ignore[attr-defined]
    schemas, components = msgspec.json.schema_components(types + errors, ref_template=REF)
    index = dict(zip(types + errors, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in gw.routes:
        op = operation(r, index, components, list(gw.ex.markets))
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Exchange REST API",
            "version": "1",
            "description": "`/api/v1`: the exchange's own routes (docs/rest.md). `/api/v3`: "
            "the Binance spot subset ccxt uses. Money is decimal strings.",
        },
        "servers": [{"url": f"http://{gw.cfg.host}:{gw.cfg.port}"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "v1Key": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "v1Timestamp": {"type": "apiKey", "in": "header", "name": "X-API-TIMESTAMP"},
                "v1Signature": {"type": "apiKey", "in": "header", "name": "X-API-SIGNATURE"},
                "binanceKey": {"type": "apiKey", "in": "header", "name": "X-MBX-APIKEY"},
                "session": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def operation(
    r: Route, index: dict[Any, Any], components: dict[str, Any], markets: list[str]
) -> dict[str, Any]:
    err = {"$ref": REF.format(name="ErrorBody" if r.api == "v1" else "BinanceError")}
    op: dict[str, Any] = {
        "summary": r.summary,
        "operationId": f"{r.api}_{r.method.lower()}_{r.path.strip('/').replace('/', '_')}".replace(
            "{", ""
        ).replace("}", ""),
        "tags": [r.api],
        "responses": {
            str(r.status): {
                "description": "Created" if r.status == 201 else "OK",
                "content": _json(index[r.response]),
            },
            "4XX": {"description": "Refused; nothing was done", "content": _json(err)},
            "5XX": {
                "description": "Engine away (nothing done) or a write in doubt (v1 code 4003, "
                "v3 code -1007): look the order up",
                "content": _json(err),
            },
        },
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name, markets)}
        for name in _path_params(r.path)
    ]
    if r.query is not None:
        taken = {"market"} if "{symbol}" in r.path else set()  # the path names the market
        params += [q for q in _query_params(index[r.query], components) if q["name"] not in taken]
    if r.body is not None and r.api == "v3":  # Binance: a form body
        op["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": index[r.body]}},
        }
    elif r.body is not None:
        op["requestBody"] = {"required": True, "content": _json(index[r.body])}
    if params:
        op["parameters"] = params
    if r.auth == "session":
        op["security"] = [BEARER]
        op["description"] = "Needs a signed-in session: `Authorization: Bearer <access token>`."
    elif r.auth:
        op["security"] = [V1_AUTH, BEARER] if r.api == "v1" else [V3_AUTH]
        op["description"] = f"Needs an API key with permission `{r.auth}` (signed request)" + (
            ", or a session's access token (`Authorization: Bearer`)." if r.api == "v1" else "."
        )
    return op


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path_schema(name: str, markets: list[str]) -> dict[str, Any]:
    if name == "symbol":  # the market, as configured
        return {"type": "string", "enum": markets}
    # an order id (digits), or a client order id (see the route's ``by``)
    return {"type": "string", "minLength": 1, "maxLength": 64}


def _path_params(path: str) -> list[str]:
    return [p[1:-1] for p in path.split("/") if p.startswith("{")]


def _query_params(ref: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = components[ref["$ref"].rsplit("/", 1)[1]]
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def register(gw: Gateway) -> None:
    from gateways.http.app import Route

    cached: list[bytes] = []

    def serve(req: Request) -> Response:
        if not cached:
            cached.append(msgspec.json.encode(document(gw)))
        return Response(200, cached[0])

    gw.add(Route("GET", "/openapi.json", "This document", "v1", response=dict), serve)

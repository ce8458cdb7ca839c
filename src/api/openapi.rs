//! The API description: an OpenAPI 3 document written from the route table
//! in `api/mod.rs` (the same declarations the router is built from, so a
//! route cannot be served without being described or described without
//! being served). It gives every path, method, summary, path parameter and
//! credential; request and response bodies are described in prose in
//! docs/api.md.

use super::RouteDoc;
use serde_json::{Value, json};

/// The OpenAPI 3.0 document of `routes`.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = serde_json::Map::new();
    for route in routes {
        let full = format!("{}{}", if route.admin { "/api/v1/admin" } else { "/api/v1" }, route.path);
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let operation = json!({
            "summary": route.summary,
            "operationId": format!("{}_{}", route.method, full.trim_start_matches('/').replace(['/', '{', '}', '-'], "_")),
            "tags": [if route.admin { "admin" } else { "dashboard" }],
            "security": [{ (if route.admin { "adminToken" } else { "apiToken" }): [] }],
            "parameters": parameters,
            "responses": {
                "2XX": { "description": "Done; the body is JSON (see docs/api.md)" },
                "4XX": { "description": "Refused: `{\"error\": \"...\"}`" },
            },
        });
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(route.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mailgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The email side of a support desk: the Dashboard's API (`/api/v1`) and the admin API (`/api/v1/admin`).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiToken": { "type": "http", "scheme": "bearer", "description": "The Dashboard's API token" },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "The admin token" },
            }
        },
    })
}

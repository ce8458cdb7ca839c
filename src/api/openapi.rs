//! The API description: an OpenAPI 3.1 document written from the route
//! table in `api/mod.rs` (the same declarations the router is built from,
//! so a route cannot be served without being described or described without
//! being served). It gives every path, method, summary, path parameter and
//! credential, and the schema of every JSON body a route takes and answers,
//! generated (utoipa) from the very types the handlers read and write.

use super::RouteDoc;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

/// A JSON body by type: the name of its schema and every schema it needs.
#[derive(Debug, Clone)]
pub struct Body {
    name: String,
    schemas: Vec<(String, Value)>,
}

/// What a route answers on success.
#[derive(Debug, Clone)]
pub enum Shape {
    /// One JSON value of this type.
    One(Body),
    /// One JSON value of this type, just made (`201`).
    Created(Body),
    /// A JSON list of values of this type.
    List(Body),
    /// A JSON object whose shape docs/api.md describes.
    Object,
    /// A JSON object whose shape docs/api.md describes, for work queued (`202`).
    Accepted,
    /// A JSON list of objects whose shape docs/api.md describes.
    Objects,
    /// Bytes (a download).
    Bytes,
    /// Nothing (`204`).
    Empty,
}

/// The body of type `T`.
pub fn body_of<T: ToSchema>() -> Body {
    let mut found: Vec<(String, RefOr<Schema>)> = Vec::new();
    T::schemas(&mut found);
    let name = T::name().into_owned();
    found.push((name.clone(), <T as utoipa::PartialSchema>::schema()));
    let schemas =
        found.into_iter().map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null))).collect();
    Body { name, schemas }
}

/// The route takes no body.
pub fn none() -> Option<Body> {
    None
}

/// The route takes a JSON body of type `T`.
pub fn json<T: ToSchema>() -> Option<Body> {
    Some(body_of::<T>())
}

/// The route answers one `T`.
pub fn one<T: ToSchema>() -> Shape {
    Shape::One(body_of::<T>())
}

/// The route answers one `T` it made (`201`).
pub fn created<T: ToSchema>() -> Shape {
    Shape::Created(body_of::<T>())
}

/// The route answers a JSON object saying what it queued (`202`).
pub fn accepted() -> Shape {
    Shape::Accepted
}

/// The route answers a list of `T`.
pub fn list<T: ToSchema>() -> Shape {
    Shape::List(body_of::<T>())
}

/// The route answers a JSON object described in docs/api.md.
pub fn object() -> Shape {
    Shape::Object
}

/// The route answers a list of JSON objects described in docs/api.md.
pub fn objects() -> Shape {
    Shape::Objects
}

/// The route answers bytes (a download).
pub fn bytes() -> Shape {
    Shape::Bytes
}

/// The route answers nothing.
pub fn empty() -> Shape {
    Shape::Empty
}

/// A reference to the schema named `name`.
fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The success answer of a route, as OpenAPI writes it.
fn success(shape: &Shape) -> (&'static str, Value) {
    let content =
        |schema: Value| json!({ "description": "Done", "content": { "application/json": { "schema": schema } } });
    match shape {
        Shape::One(body) => ("200", content(reference(&body.name))),
        Shape::Created(body) => ("201", content(reference(&body.name))),
        Shape::List(body) => ("200", content(json!({ "type": "array", "items": reference(&body.name) }))),
        Shape::Object => ("200", content(json!({ "type": "object" }))),
        Shape::Accepted => ("202", content(json!({ "type": "object" }))),
        Shape::Objects => ("200", content(json!({ "type": "array", "items": { "type": "object" } }))),
        Shape::Bytes => (
            "200",
            json!({ "description": "The bytes", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
        ),
        Shape::Empty => ("204", json!({ "description": "Done; no body" })),
    }
}

/// The OpenAPI 3.0 document of `routes`.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert(
        "Error".to_owned(),
        json!({ "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }),
    );
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
                "4XX": { "description": "Refused", "content": { "application/json": { "schema": reference("Error") } } },
            },
        });
        let mut operation = operation;
        let (status, answer) = success(&route.response);
        operation["responses"][status] = answer;
        if let Some(body) = &route.request {
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": reference(&body.name) } } });
        }
        for body in route.request.iter().chain(match &route.response {
            Shape::One(body) | Shape::Created(body) | Shape::List(body) => Some(body),
            _ => None,
        }) {
            for (name, schema) in &body.schemas {
                schemas.insert(name.clone(), schema.clone());
            }
        }
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(route.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mailgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The email side of a support desk: the Dashboard's API (`/api/v1`) and the admin API (`/api/v1/admin`).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": { "type": "http", "scheme": "bearer", "description": "The Dashboard's API token" },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "The admin token" },
            }
        },
    })
}

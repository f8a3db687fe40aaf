//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand to say exactly what
//! the handlers do; a test walks every path in it against the real router.

use serde_json::{Value, json};

fn plant_param() -> Value {
    json!({ "name": "type", "in": "path", "required": true,
            "schema": { "type": "string", "enum": ["potato", "tomato", "pepper"] } })
}

fn flag(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "boolean" } })
}

fn filters() -> Vec<Value> {
    vec![
        flag("is_active", "Only images with this is_active."),
        flag(
            "has_disease",
            "true: only images with a disease; false: only without.",
        ),
        flag(
            "include_deleted",
            "Count/return soft-deleted images too (default true).",
        ),
    ]
}

fn error(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(schema: &str) -> Value {
    json!({ "description": "OK",
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// The document.
pub fn document(max_limit: u32, default_limit: u32) -> Value {
    let mut list_params = vec![
        plant_param(),
        json!({ "name": "from_id", "in": "query", "required": false,
                "schema": { "type": "integer", "minimum": 0, "default": 0 } }),
        json!({ "name": "limit", "in": "query", "required": false,
                "schema": { "type": "integer", "minimum": 1, "maximum": max_limit, "default": default_limit } }),
    ];
    list_params.extend(filters());
    let mut filter_params = vec![plant_param()];
    filter_params.extend(filters());
    let data_errors = |extra: Value| {
        let mut responses = json!({
            "422": error("Unknown plant type, bad id or bad query parameter"),
            "503": error("Database unavailable, timeout or overload"),
        });
        if let (Some(map), Value::Object(more)) = (responses.as_object_mut(), extra) {
            map.extend(more);
        }
        responses
    };
    json!({
        "openapi": "3.1.0",
        "info": { "title": "leafsync consumer-api", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Read API over the LIMS consumer DB (imagedbplantconsumer), compatible with the Image API's reads." },
        "paths": {
            "/image-plant/{type}": { "get": {
                "summary": "A page of images by ascending id",
                "parameters": list_params,
                "responses": data_errors(json!({ "200": ok("ImageList") })) } },
            "/image-plant/{type}/total": { "get": {
                "summary": "How many images are stored",
                "parameters": filter_params.clone(),
                "responses": data_errors(json!({ "200": ok("Total") })) } },
            "/image-plant/{type}/random": { "get": {
                "summary": "One image picked at random among the matches",
                "parameters": filter_params,
                "responses": data_errors(json!({ "200": ok("Image"), "404": error("No image matches") })) } },
            "/image-plant/{type}/{id}": { "get": {
                "summary": "One image by id",
                "parameters": [plant_param(), { "name": "id", "in": "path", "required": true,
                                                "schema": { "type": "integer", "minimum": 0 } }],
                "responses": data_errors(json!({ "200": ok("Image"), "404": error("No image with that id") })) } },
            "/live": { "get": { "summary": "Liveness: the process answers (no DB call)",
                                "responses": { "200": { "description": "live" } } } },
            "/ready": { "get": { "summary": "Readiness: MongoDB answers a ping",
                                 "responses": { "200": { "description": "ready" },
                                                "503": { "description": "database unavailable" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics",
                                   "responses": { "200": { "description": "text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "This document",
                                        "responses": { "200": { "description": "OpenAPI 3.1" } } } },
        },
        "components": { "schemas": {
            "Image": { "type": "object", "required": ["id"], "properties": {
                "id": { "type": "integer" }, "camera_id": { "type": ["integer", "null"] },
                "data": { "type": ["string", "null"], "description": "JPEG bytes as lowercase hex" },
                "gps_coordinates": { "type": ["array", "null"], "items": { "type": "number" } },
                "created_at": { "type": ["string", "null"], "description": "naive ISO-8601, UTC" },
                "updated_at": { "type": ["string", "null"], "description": "naive ISO-8601, UTC" },
                "is_active": { "type": ["boolean", "null"] }, "is_deleted": { "type": ["boolean", "null"] },
                "disease": { "type": ["string", "null"] }, "percentage": { "type": ["number", "null"] } },
                "additionalProperties": true },
            "ImageList": { "type": "object", "required": ["image_list", "total_images"], "properties": {
                "image_list": { "type": "array", "items": { "$ref": "#/components/schemas/Image" } },
                "total_images": { "type": "integer", "description": "Images in this page" } } },
            "Total": { "type": "object", "required": ["total_images"],
                       "properties": { "total_images": { "type": "integer" } } },
            "Error": { "type": "object", "required": ["detail", "error"], "properties": {
                "detail": { "type": "string" }, "error": { "type": "string" } } },
        } },
    })
}

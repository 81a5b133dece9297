//! `GET /api/v1/openapi.json`: the hand-written OpenAPI 3.1 document of every HTTP route of
//! the orchestrator (redirects, REST API, health and metrics). Keep it in step with `http`.

use axum::Json;
use serde_json::{Value, json};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn text(description: &str) -> Value {
    json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } })
}

fn redirect(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {
            "Location": { "schema": { "type": "string", "format": "uri" }, "description": "The chosen edge's endpoint." },
            "Cache-Control": { "schema": { "type": "string", "const": "no-store" } }
        }
    })
}

/// The answer of the per-client `[limits]` on the redirect POSTs.
fn rate_limited() -> Value {
    json!({
        "description": "This client address made more than `[limits] posts_per_minute` (after a burst of `posts_burst`) redirect POSTs.",
        "headers": {
            "Retry-After": { "schema": { "type": "integer", "minimum": 1 }, "description": "Seconds until the next POST from this address is accepted." }
        },
        "content": { "text/plain": { "schema": { "type": "string" } } }
    })
}

fn json_body(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

pub fn spec() -> Value {
    let stream = path_param("stream", "Stream name ([A-Za-z0-9._-], at most 128 bytes).");
    let region = json!({ "name": "region", "in": "query", "required": false, "description": "Preferred region; default: the [[regions]] network of the client address (first X-Forwarded-For entry, else the TCP peer).", "schema": { "type": "string" } });
    let whip_responses = json!({
        "307": redirect("To `{edge public_url}/whip/{stream}?ticket={publish ticket}`: re-send the same POST (SDP offer) there. The ticket replaces the key, which clients drop when the host changes."),
        "400": text("Invalid stream name."),
        "401": text("Missing or invalid stream key."),
        "403": text("The stream service refused the publisher."),
        "503": text("The stream service is down, or no ingest edge has headroom."),
        "429": rate_limited()
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Waveguide orchestrator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sends every WHIP publisher and WHEP viewer to the best edge with `307 Temporary Redirect`, and shows where each stream is. The request body of a redirected POST is never read."
        },
        "components": {
            "securitySchemes": {
                "streamKey": { "type": "http", "scheme": "bearer", "description": "The stream key (WHIP)." },
                "clusterToken": { "type": "http", "scheme": "bearer", "description": "The cluster token (relay requests from edges)." },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "[admin] token, else the cluster token." }
            },
            "schemas": {
                "Capacity": {
                    "type": "object",
                    "description": "Configured ceilings; 0 = no limit.",
                    "properties": {
                        "max_viewers": { "type": "integer" },
                        "max_egress_bps": { "type": "integer" },
                        "max_streams": { "type": "integer" },
                        "max_publishers": { "type": "integer" }
                    }
                },
                "NodeLoad": {
                    "type": "object",
                    "properties": {
                        "viewers": { "type": "integer" },
                        "publishers": { "type": "integer" },
                        "streams": { "type": "integer" },
                        "relay_pulls": { "type": "integer" },
                        "egress_bps": { "type": "integer" },
                        "ingress_bps": { "type": "integer" },
                        "cpu": { "type": "number", "description": "0.0 to 1.0 of all cores." },
                        "memory_bytes": { "type": "integer" }
                    }
                },
                "Node": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "region": { "type": "string" },
                        "zone": { "type": "string" },
                        "public_url": { "type": "string" },
                        "grpc_url": { "type": "string" },
                        "rtmp_url": { "type": "string" },
                        "version": { "type": "string" },
                        "roles": { "type": "array", "items": { "enum": ["ingest", "edge"] } },
                        "capabilities": { "type": "array", "items": { "enum": ["ingest_whip", "ingest_rtmp", "ingest_ftl", "egress_whep", "relay", "signaling"] } },
                        "capacity": { "$ref": "#/components/schemas/Capacity" },
                        "load": { "$ref": "#/components/schemas/NodeLoad" },
                        "score": { "type": "number", "description": "max(viewers/max_viewers, egress_bps/max_egress_bps, cpu); below 1.0 = headroom." },
                        "healthy": { "type": "boolean" },
                        "draining": { "type": "boolean" },
                        "eligible": { "type": "boolean", "description": "Healthy, not draining, heard from within three heartbeats." },
                        "last_seen_ms_ago": { "type": "integer" },
                        "streams": { "type": "array", "items": { "type": "string" } },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } }
                    }
                },
                "Track": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "kind": { "enum": ["video", "audio", "unspecified"] },
                        "codec": { "type": "string" },
                        "clock_rate": { "type": "integer" },
                        "fmtp": { "type": "string" },
                        "bitrate_bps": { "type": "integer" },
                        "width": { "type": "integer" },
                        "height": { "type": "integer" },
                        "framerate": { "type": "number" },
                        "channels": { "type": "integer" }
                    }
                },
                "Stream": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "origin": { "type": ["string", "null"], "description": "The node holding the publisher." },
                        "protocol": { "type": ["string", "null"], "description": "How the stream reaches its origin: whip, rtmp, ftl, ..." },
                        "relays": { "type": "array", "items": { "type": "string" }, "description": "Nodes pulling it from another edge." },
                        "viewers": { "type": "object", "additionalProperties": { "type": "integer" }, "description": "Viewers per node." },
                        "total_viewers": { "type": "integer" },
                        "tracks": { "type": "array", "items": { "$ref": "#/components/schemas/Track" } }
                    }
                }
            }
        },
        "paths": {
            "/whip": {
                "post": {
                    "summary": "Publish (WHIP): redirect to an ingest edge; the stream is the one the key resolves to.",
                    "security": [{ "streamKey": [] }],
                    "parameters": [region],
                    "responses": whip_responses
                }
            },
            "/whip/{stream}": {
                "post": {
                    "summary": "Publish a named stream (WHIP): redirect to an ingest edge.",
                    "security": [{ "streamKey": [] }],
                    "parameters": [stream, region],
                    "responses": whip_responses
                }
            },
            "/whep/{stream}": {
                "post": {
                    "summary": "Watch (WHEP), or locate an upstream for a relay pull (`?node=` with the cluster token).",
                    "security": [{}, { "clusterToken": [] }],
                    "parameters": [
                        stream,
                        { "name": "node", "in": "query", "required": false, "description": "The requesting edge's id: a relay pull. Needs the cluster token; that edge is never chosen.", "schema": { "type": "string" } }
                    ],
                    "responses": {
                        "307": redirect("Viewer: to `{edge}/whep/{stream}` (an edge that holds the stream, else one that will relay it). Relay: to `{holder}/whep/{stream}?ticket={relay ticket}`."),
                        "400": text("Invalid stream name."),
                        "401": text("Relay request without the cluster token."),
                        "404": text("No node holds the stream."),
                        "503": text("The stream exists but no edge can serve it now."),
                        "429": rate_limited()
                    }
                }
            },
            "/api/v1/nodes": {
                "get": {
                    "summary": "Every live node.",
                    "responses": { "200": { "description": "Nodes by id.", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Node" } } } } } }
                }
            },
            "/api/v1/nodes/{id}": {
                "get": {
                    "summary": "One node.",
                    "parameters": [path_param("id", "Node id.")],
                    "responses": { "200": json_body("The node.", "Node"), "404": text("Unknown node.") }
                }
            },
            "/api/v1/nodes/{id}/drain": {
                "post": {
                    "summary": "Drain a node (ModuleService.Configure draining=true): it gets nothing new.",
                    "security": [{ "adminToken": [] }],
                    "parameters": [path_param("id", "Node id.")],
                    "responses": { "200": json_body("The node, now draining.", "Node"), "401": text("Missing or invalid admin token."), "404": text("Unknown node."), "502": text("The node could not be reached.") }
                }
            },
            "/api/v1/nodes/{id}/undrain": {
                "post": {
                    "summary": "Stop draining a node (ModuleService.Configure draining=false).",
                    "security": [{ "adminToken": [] }],
                    "parameters": [path_param("id", "Node id.")],
                    "responses": { "200": json_body("The node.", "Node"), "401": text("Missing or invalid admin token."), "404": text("Unknown node."), "502": text("The node could not be reached.") }
                }
            },
            "/api/v1/streams": {
                "get": {
                    "summary": "Every live stream: origin, relays, viewers per node.",
                    "responses": { "200": { "description": "Streams by name.", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Stream" } } } } } }
                }
            },
            "/api/v1/streams/{name}": {
                "get": {
                    "summary": "One stream.",
                    "parameters": [path_param("name", "Stream name.")],
                    "responses": { "200": json_body("The stream.", "Stream"), "404": text("No node holds it.") }
                },
                "delete": {
                    "summary": "End a stream on its origin (EntityService.DestroyEntity); relays follow.",
                    "security": [{ "adminToken": [] }],
                    "parameters": [path_param("name", "Stream name.")],
                    "responses": { "204": { "description": "Ended." }, "401": text("Missing or invalid admin token."), "404": text("No origin holds it."), "502": text("The origin could not be reached.") }
                }
            },
            "/api/v1/openapi.json": {
                "get": { "summary": "This document.", "responses": { "200": { "description": "OpenAPI 3.1 JSON." } } }
            },
            "/healthz": { "get": { "summary": "Alive.", "responses": { "200": text("ok") } } },
            "/readyz": { "get": { "summary": "Ready: the node registry answers and gRPC listens.", "responses": { "200": text("ready"), "503": text("not ready") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics.", "responses": { "200": text("Prometheus text format 0.0.4.") } } }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_every_route() {
        let spec = super::spec();
        assert_eq!(spec["openapi"], "3.1.0");
        for path in [
            "/whip",
            "/whip/{stream}",
            "/whep/{stream}",
            "/api/v1/nodes",
            "/api/v1/nodes/{id}",
            "/api/v1/nodes/{id}/drain",
            "/api/v1/nodes/{id}/undrain",
            "/api/v1/streams",
            "/api/v1/streams/{name}",
            "/api/v1/openapi.json",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(spec["paths"][path].is_object(), "{path} undocumented");
        }
        assert!(spec["paths"]["/whip"]["post"]["responses"]["307"].is_object());
        for path in ["/whip", "/whip/{stream}", "/whep/{stream}"] {
            let refused = &spec["paths"][path]["post"]["responses"]["429"];
            assert!(refused["headers"]["Retry-After"].is_object(), "{path}");
        }
        assert!(spec["paths"]["/api/v1/streams/{name}"]["delete"].is_object());
    }
}

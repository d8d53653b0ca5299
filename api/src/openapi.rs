//! The OpenAPI 3 document (`/api/openapi.json`), built from the route table
//! and the request and answer types themselves (their JSON Schemas are
//! derived), so it cannot drift from the code: a route without an entry
//! here fails the tests.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::routes::{
    Access, TABLE, alerts, audit, blocklist, capture, export, import, incidents, logs, plugins, query, records,
    reports, rules, settings, system, traffic, users,
};

/// What a route takes and gives.
struct Doc {
    body: Option<Schema>,
    /// Query parameters: the properties of this object schema.
    params: Option<Schema>,
    reply: Option<Schema>,
    status: u16,
    /// Another content type than JSON for the answer.
    content: &'static str,
    /// The body is a file (CSV or binary), not JSON.
    file_body: bool,
}

impl Doc {
    fn new() -> Doc {
        Doc { body: None, params: None, reply: None, status: 200, content: "application/json", file_body: false }
    }
    fn body<T: JsonSchema>(mut self, g: &mut SchemaGenerator) -> Doc {
        self.body = Some(g.subschema_for::<T>());
        self
    }
    fn params<T: JsonSchema>(mut self, g: &mut SchemaGenerator) -> Doc {
        // Inline: parameters are listed one by one.
        self.params = Some(g.root_schema_for::<T>());
        self
    }
    fn reply<T: JsonSchema>(mut self, g: &mut SchemaGenerator) -> Doc {
        self.reply = Some(g.subschema_for::<T>());
        self
    }
    fn status(mut self, s: u16) -> Doc {
        self.status = s;
        self
    }
}

fn doc(method: &str, path: &str, g: &mut SchemaGenerator) -> Option<Doc> {
    let d = Doc::new();
    Some(match (method, path) {
        ("GET", "/api/health") => d.reply::<system::Health>(g),
        ("GET", "/api/openapi.json") => d.reply::<Map<String, Value>>(g),
        ("POST", "/api/login") => d.body::<auth_types::Login>(g).reply::<auth_types::Tokens>(g),
        ("POST", "/api/refresh") => d.body::<auth_types::Refresh>(g).reply::<auth_types::Tokens>(g),
        ("POST", "/api/logout") => d.status(204),
        ("GET", "/api/me") => d.reply::<auth_types::UserInfo>(g),
        ("POST", "/api/me/password") => d.body::<auth_types::PasswordChange>(g).status(204),
        ("POST", "/api/me/totp") => d.reply::<auth_types::Enrolment>(g),
        ("POST", "/api/me/totp/confirm") | ("DELETE", "/api/me/totp") => d.body::<auth_types::Code>(g).status(204),
        ("GET", "/api/me/layout") => d.reply::<auth_types::Layout>(g),
        ("PUT", "/api/me/layout") => d.body::<auth_types::Layout>(g).status(204),
        ("GET", "/api/users") => d.reply::<Vec<users::User>>(g),
        ("POST", "/api/users") => d.body::<users::NewUser>(g).reply::<users::User>(g).status(201),
        ("PATCH", "/api/users/{name}") => d.body::<users::UserChange>(g).reply::<users::User>(g),
        ("DELETE", "/api/users/{name}") => d.status(204),
        ("GET", "/api/user_activity") => d.params::<audit::Filter>(g).reply::<Vec<audit::Entry>>(g),
        ("GET", "/api/alerts") | ("GET", "/api/anomalies") | ("GET", "/api/threats") => {
            d.params::<alerts::Filter>(g).reply::<Vec<alerts::AlertView>>(g)
        }
        ("GET", "/api/alerts/{id}") => d.reply::<alerts::AlertDetail>(g),
        ("POST", "/api/alerts/{id}/ack") | ("POST", "/api/alerts/{id}/resolve") => {
            d.body::<alerts::Comment>(g).reply::<alerts::WorkflowReply>(g)
        }
        ("POST", "/api/alerts/{id}/assign") => d.body::<alerts::Assign>(g).reply::<alerts::AssignReply>(g),
        ("GET", "/api/alerts/rules") => d.reply::<Vec<rules::StoredRule>>(g),
        ("POST", "/api/alerts/rules") => d.body::<rules::RuleBody>(g).reply::<rules::StoredRule>(g).status(201),
        ("GET", "/api/alerts/rules/{id}") => d.reply::<rules::StoredRule>(g),
        ("PUT", "/api/alerts/rules/{id}") => d.body::<rules::RuleBody>(g).reply::<rules::StoredRule>(g),
        ("DELETE", "/api/alerts/rules/{id}") => d.status(204),
        ("GET", "/api/incidents") => d.params::<incidents::Filter>(g).reply::<Vec<incidents::Incident>>(g),
        ("POST", "/api/incidents") => d.body::<incidents::NewIncident>(g).reply::<incidents::Incident>(g).status(201),
        ("GET", "/api/incidents/{id}") => d.reply::<incidents::IncidentDetail>(g),
        ("PATCH", "/api/incidents/{id}") => d.body::<incidents::Change>(g).reply::<incidents::Incident>(g),
        ("POST", "/api/incidents/{id}/notes") => d.body::<incidents::NewNote>(g).status(201),
        ("POST", "/api/incidents/{id}/alerts") => d.body::<incidents::Link>(g).reply::<incidents::Incident>(g),
        ("POST", "/api/incidents/{id}/block") => d.reply::<blocklist::Entry>(g).status(201),
        ("GET", "/api/blocklist") => d.reply::<Vec<blocklist::Entry>>(g),
        ("POST", "/api/blocklist") => d.body::<blocklist::NewEntry>(g).reply::<blocklist::Entry>(g).status(201),
        ("DELETE", "/api/blocklist/{id}") => d.status(204),
        ("POST", "/api/query") => d.body::<query::Query>(g).reply::<query::Answer>(g),
        ("POST", "/api/export") => Doc { content: "export", ..d.body::<export::ExportRequest>(g) },
        ("POST", "/api/import") => {
            Doc { file_body: true, ..d.params::<import::ImportParams>(g).reply::<import::ImportReport>(g) }
        }
        ("GET", "/api/traffic") => d.params::<traffic::TrafficQuery>(g).reply::<traffic::Traffic>(g),
        ("GET", "/api/records") => d.params::<records::RecordsQuery>(g).reply::<records::Records>(g),
        ("GET", "/api/interfaces") => d.reply::<system::Interfaces>(g),
        ("GET", "/api/performance") => d.params::<system::Window>(g).reply::<system::Performance>(g),
        // A WebSocket upgrade: 101 to a WebSocket client, 4xx to anything else.
        ("GET", "/api/stream") => d.status(101),
        ("GET", "/metrics") | ("GET", "/api/logs/{name}") => Doc { content: "text/plain", ..d },
        ("GET", "/api/capture") => d.reply::<Vec<Map<String, Value>>>(g),
        ("POST", "/api/capture") => d.body::<capture::NewSession>(g).reply::<Map<String, Value>>(g).status(201),
        ("POST", "/api/capture/{name}/stop") => d.reply::<Map<String, Value>>(g),
        ("DELETE", "/api/capture/{name}") => d.status(204),
        ("GET", "/api/plugins") => d.reply::<plugins::Plugins>(g),
        ("POST", "/api/plugins") => d.body::<plugins::Upload>(g).reply::<plugins::PluginFile>(g).status(201),
        ("POST", "/api/plugins/{name}/enable") | ("POST", "/api/plugins/{name}/disable") => {
            d.reply::<plugins::PluginFile>(g)
        }
        ("DELETE", "/api/plugins/{name}") => d.status(204),
        ("GET", "/api/settings") => d.reply::<settings::Settings>(g),
        ("PUT", "/api/settings/retention") => d.body::<settings::RetentionSpec>(g).reply::<settings::RetentionView>(g),
        ("PUT", "/api/settings/channels/{name}") => {
            d.body::<crate::engine::ChannelSpec>(g).reply::<settings::ChannelView>(g)
        }
        ("DELETE", "/api/settings/channels/{name}") | ("POST", "/api/settings/channels/{name}/test") => d.status(204),
        ("PUT", "/api/settings/routes") => d.body::<settings::Routes>(g).reply::<Vec<crate::engine::RouteSpec>>(g),
        ("GET", "/api/reports") => {
            d.params::<reports::ListQuery>(g).reply::<Vec<crate::report::schedule::ReportInfo>>(g)
        }
        ("POST", "/api/reports") => {
            d.body::<reports::NewReport>(g).reply::<crate::report::schedule::ReportInfo>(g).status(201)
        }
        ("GET", "/api/reports/{id}") => Doc { content: "report", ..d },
        ("DELETE", "/api/reports/{id}") | ("DELETE", "/api/reports/schedules/{id}") => d.status(204),
        ("GET", "/api/reports/schedules") => d.reply::<Vec<crate::report::schedule::Schedule>>(g),
        ("POST", "/api/reports/schedules") => {
            d.body::<crate::report::schedule::NewSchedule>(g).reply::<crate::report::schedule::Schedule>(g).status(201)
        }
        ("POST", "/api/reports/schedules/{id}/run") => d.reply::<crate::report::schedule::ReportInfo>(g).status(201),
        ("GET", "/api/logs") => d.reply::<Vec<logs::LogFile>>(g),
        ("GET", "/api/logs/tail") => d.params::<logs::Tail>(g).reply::<logs::TailReply>(g),
        _ => return None,
    })
}

/// The request types of `routes::auth` (named here so the table above reads flat).
mod auth_types {
    pub use crate::routes::auth::{Code, Enrolment, Layout, Login, PasswordChange, Refresh, Tokens, UserInfo};
}

fn error_response(what: &str) -> Value {
    json!({
        "description": what,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// Routes without an OpenAPI entry (empty when the document is complete).
pub fn undocumented() -> Vec<String> {
    let mut g = SchemaSettings::openapi3().into_generator();
    TABLE
        .iter()
        .filter(|r| doc(r.method, r.path, &mut g).is_none())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for r in TABLE {
        let Some(d) = doc(r.method, r.path, &mut g) else { continue };
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_"))),
        );
        if let Access::Roles(roles) = r.access {
            op.insert("security".into(), json!([{ "bearer": [] }]));
            let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            op.insert("description".into(), json!(format!("Roles: {}.", names.join(", "))));
        } else {
            op.insert("security".into(), json!([]));
        }
        let mut params = Vec::new();
        for seg in r.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            let schema = if seg == "id" && !r.path.starts_with("/api/alerts/{id}") {
                json!({ "type": "integer", "format": "int64" })
            } else if seg == "id" {
                json!({ "type": "string", "pattern": "^[A-Za-z0-9]{1,64}$" })
            } else {
                json!({ "type": "string" })
            };
            params.push(json!({ "name": seg, "in": "path", "required": true, "schema": schema }));
        }
        if let Some(p) = &d.params {
            let required: Vec<String> = p
                .get("required")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if let Some(props) = p.get("properties").and_then(|v| v.as_object()) {
                for (name, schema) in props {
                    let mut schema = schema.clone();
                    let description = schema.as_object_mut().and_then(|o| o.remove("description"));
                    let mut q =
                        json!({ "name": name, "in": "query", "required": required.contains(name), "schema": schema });
                    if let Some(d) = description {
                        q["description"] = d;
                    }
                    params.push(q);
                }
            }
        }
        if r.path == "/api/stream" {
            params.push(
                json!({ "name": "access_token", "in": "query", "required": false, "schema": { "type": "string" },
                                "description": "The access token, for clients that cannot set headers." }),
            );
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = &d.body {
            // The comment of an acknowledgement may be left out entirely.
            let required = !matches!(r.path, "/api/alerts/{id}/ack" | "/api/alerts/{id}/resolve");
            op.insert(
                "requestBody".into(),
                json!({ "required": required, "content": { "application/json": { "schema": b } } }),
            );
        }
        if d.file_body {
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": {
                    "text/csv": { "schema": { "type": "string" } },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                    "application/vnd.tcpdump.pcap": { "schema": { "type": "string", "format": "binary" } }
                } }),
            );
        }
        let mut responses = Map::new();
        let ok = match (&d.reply, d.content) {
            (_, "export") => json!({ "description": "The export, streamed", "content": {
                "text/csv": { "schema": { "type": "string" } },
                "application/json": { "schema": {} },
                "application/x-ndjson": { "schema": { "type": "string" } },
                "application/vnd.apache.parquet": { "schema": { "type": "string", "format": "binary" } },
                "application/vnd.tcpdump.pcap": { "schema": { "type": "string", "format": "binary" } }
            } }),
            (_, "report") => json!({ "description": "The report's file", "content": {
                "application/pdf": { "schema": { "type": "string", "format": "binary" } },
                "text/csv": { "schema": { "type": "string" } },
                "application/json": { "schema": {} }
            } }),
            (_, "text/plain") => {
                json!({ "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } })
            }
            (Some(s), _) => json!({ "description": "OK", "content": { "application/json": { "schema": s } } }),
            (None, _) => json!({ "description": if d.status == 101 { "Switching to WebSocket" } else { "Done" } }),
        };
        responses.insert(d.status.to_string(), ok);
        responses.insert(
            "4XX".into(),
            error_response("Bad request, unauthorised, forbidden, not found, conflict, too large, or locked out"),
        );
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = Value::Object(op);
    }
    let mut schemas = g.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error", "detail"],
            "properties": { "error": { "type": "string" }, "detail": { "type": "string" } }
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tapstream",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The appliance's REST API. Log in at /api/login for a bearer token."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } }
        }
    })
}

pub async fn serve_document(axum::extract::State(st): axum::extract::State<crate::AppState>) -> axum::Json<Value> {
    axum::Json(st.openapi.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_and_nothing_else() {
        assert_eq!(super::undocumented(), Vec::<String>::new());
        let d = super::document();
        let mut documented: Vec<String> = d["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| format!("{} {p}", m.to_uppercase())))
            .collect();
        let mut table: Vec<String> = super::TABLE.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
        // Every $ref points at a schema that exists.
        let text = d.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(d["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
        }
    }
}

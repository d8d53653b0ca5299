//! The web console: the static files `console/` builds (`npm run build`
//! there, which the project's scripts run), embedded in the binary at
//! compile time and served at `/` with no token (the console logs in
//! through the API like any client). Everything under `/api/` and
//! `/metrics` is the API's; other paths are console files, and a path
//! without a file extension is the console's page (its router reads the
//! location hash).

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../console/dist/"]
struct Assets;

/// Content security: scripts and styles only from the appliance itself
/// (ECharts writes inline styles into its tooltips), no frames.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Is this path the console's (not the API's)?
pub fn owns(path: &str) -> bool {
    !(path == "/api" || path.starts_with("/api/") || path == "/metrics")
}

/// Serve a console file, or the console's page for a path without an
/// extension; `None` when there is no such file.
pub fn serve(method: &Method, uri: &Uri) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = uri.path().trim_start_matches('/');
    let (name, file) = match Assets::get(path) {
        Some(f) if !path.is_empty() => (path, f),
        _ if path.is_empty() || !path.rsplit('/').next().unwrap_or("").contains('.') => {
            ("index.html", Assets::get("index.html")?)
        }
        _ => return None,
    };
    // Vite names built files by their content hash: cache them for good;
    // the page itself is always checked again.
    let cache = if name.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut r = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(r)
}

/// Names of the embedded files (for tests and the start-up log).
pub fn files() -> impl Iterator<Item = String> {
    Assets::iter().map(|n| n.into_owned())
}

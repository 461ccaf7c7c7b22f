//! The dashboard: static files compiled into the binary (no CDN, no tile server). They hold no
//! data; every figure comes from the API behind the session cookie. Served with a strict
//! Content-Security-Policy: scripts, styles and connections only from this origin.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiContext;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../web/app.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/app.css") },
    Asset {
        path: "countries-110m.json",
        content_type: "application/json",
        body: include_bytes!("../../web/vendor/world-atlas/countries-110m.json"),
    },
];

const INDEX: &[u8] = include_bytes!("../../web/index.html");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<ApiContext> {
    Router::new().route("/", get(index)).route("/assets/{name}", get(asset))
}

fn with_headers(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == name) {
        Some(asset) => with_headers(asset.content_type, asset.body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

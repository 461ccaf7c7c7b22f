//! The dashboard: static files compiled into the binary (no CDN, no tile server). They hold no
//! data; every figure comes from the API behind the session cookie. Served with a strict
//! Content-Security-Policy: scripts, styles and connections only from this origin.
//!
//! `index.html` is served at `/`; every other file under `web/` at `/assets/<its path there>`
//! (`/assets/pages/alerts.js`), from the list `build.rs` writes.

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

// `const ASSETS: &[Asset]`, one entry per file under `web/`.
include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

const INDEX: &[u8] = include_bytes!("../../web/index.html");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<ApiContext> {
    routes()
}

fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/assets/{*path}", get(asset))
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

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => with_headers(asset.content_type, asset.body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn fetch(uri: &str) -> Response {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        routes::<()>().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn the_files_under_web_are_served_at_their_paths_there() {
        let js = "text/javascript; charset=utf-8";
        for (uri, content_type) in [
            ("/assets/app.js", js),
            ("/assets/pages/alerts.js", js),
            ("/assets/app.css", "text/css; charset=utf-8"),
            ("/assets/vendor/world-atlas/countries-110m.json", "application/json"),
        ] {
            let response = fetch(uri).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type, "{uri}");
            assert!(response.headers().contains_key(header::CONTENT_SECURITY_POLICY), "{uri}");
        }
        let index = fetch("/").await;
        assert_eq!(index.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        for uri in ["/assets/index.html", "/assets/README.md", "/assets/countries-110m.json", "/assets/pages/none.js"] {
            assert_eq!(fetch(uri).await.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }
}

//! `/metrics` as a scrape sees it, through the router alone.

use sqlx::PgPool;

/// The text of one scrape of `/metrics` over `pool`.
pub async fn scrape(pool: &PgPool) -> String {
    let router = skywarden::http::metrics::router(skywarden::http::ApiContext::new(pool.clone()));
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    String::from_utf8_lossy(&axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap()).into_owned()
}

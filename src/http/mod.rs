//! HTTP API. Health checks are open; everything under `/api/v1` needs a bearer token
//! ([`extractor`]), and each resource module brings its own router.

pub mod accounts;
pub mod alerts;
pub mod error;
pub mod events;
pub mod extractor;
pub mod flows;
pub mod incidents;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod posture;
pub mod query;
pub mod resources;
pub mod respond;
pub mod session;
pub mod stats;
pub mod tokens;
pub mod users;
pub mod web;

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct ApiContext {
    pub db: PgPool,
    pub metrics: std::sync::Arc<metrics::Metrics>,
    /// Skywarden's own AWS configuration, for checking an account's role.
    pub aws: Option<std::sync::Arc<(crate::aws::AwsSettings, aws_types::SdkConfig)>>,
    /// The key that seals channel secrets and the sender the test button uses.
    pub notify: Option<std::sync::Arc<NotifyContext>>,
    /// Posture checks for `POST /api/v1/posture/run`.
    pub posture: Option<std::sync::Arc<PostureContext>>,
    /// The request timeout and the concurrency limit, with the slots in use.
    pub limiter: std::sync::Arc<limits::Limiter>,
    /// Reads archived months back for the audit trail (docs/archive.md), with its bounds.
    pub lake: std::sync::Arc<crate::archive::read::Lake>,
    /// The detector's trusted ranges (`security_group_ingress.trusted_cidrs`), which response
    /// actions judge rules by: a rule widened to one of them is not exposed.
    pub trusted_cidrs: std::sync::Arc<Vec<crate::net::Cidr>>,
}

pub struct PostureContext {
    pub checks: tokio::sync::Mutex<crate::posture::checks::CheckSet>,
    pub alert_at: Option<crate::model::Severity>,
}

/// What the notification routes need besides the database.
pub struct NotifyContext {
    pub key: std::sync::Arc<crate::notify::secrets::SecretKey>,
    pub sender: crate::notify::sender::Sender,
}

impl NotifyContext {
    pub fn sender_policy(&self) -> &crate::notify::network::NetworkPolicy {
        self.sender.policy()
    }
}

impl ApiContext {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            metrics: Default::default(),
            aws: None,
            notify: None,
            posture: None,
            limiter: Default::default(),
            lake: Default::default(),
            trusted_cidrs: Default::default(),
        }
    }

    pub fn with_trusted_cidrs(mut self, trusted: Vec<crate::net::Cidr>) -> Self {
        self.trusted_cidrs = std::sync::Arc::new(trusted);
        self
    }

    /// Other bounds for reading the lake.
    pub fn with_lake(mut self, limits: crate::archive::read::LakeLimits) -> Self {
        self.lake = std::sync::Arc::new(crate::archive::read::Lake::new(limits));
        self
    }

    pub fn with_limits(mut self, limits: limits::ApiLimits) -> Self {
        self.limiter = std::sync::Arc::new(limits::Limiter::new(limits));
        self
    }

    pub fn with_aws(mut self, settings: crate::aws::AwsSettings, base: aws_types::SdkConfig) -> Self {
        self.aws = Some(std::sync::Arc::new((settings, base)));
        self
    }

    pub fn with_posture(
        mut self,
        checks: crate::posture::checks::CheckSet,
        alert_at: Option<crate::model::Severity>,
    ) -> Self {
        self.posture = Some(std::sync::Arc::new(PostureContext { checks: tokio::sync::Mutex::new(checks), alert_at }));
        self
    }

    pub fn with_notify(
        mut self,
        key: std::sync::Arc<crate::notify::secrets::SecretKey>,
        sender: crate::notify::sender::Sender,
    ) -> Self {
        self.notify = Some(std::sync::Arc::new(NotifyContext { key, sender }));
        self
    }
}

pub fn router(context: ApiContext) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(events::router())
        .merge(alerts::router())
        .merge(incidents::router())
        .merge(flows::router())
        .merge(accounts::router())
        .merge(resources::router())
        .merge(session::router())
        .merge(stats::router())
        .merge(tokens::router())
        .merge(users::router())
        .merge(notifications::router())
        .merge(posture::router())
        .merge(respond::router())
        .merge(web::router())
        .merge(openapi::router())
        // Inside the metrics, so refusals and timeouts are counted too.
        .route_layer(axum::middleware::from_fn_with_state(context.clone(), limits::guard))
        .route_layer(axum::middleware::from_fn_with_state(context.clone(), metrics::track))
        .with_state(context)
}

/// Serves on an already bound listener until `shutdown` completes, so tests can bind port 0.
pub async fn serve(
    context: ApiContext,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router(context).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `/metrics` on its own listener until `shutdown` completes.
pub async fn serve_metrics(
    context: ApiContext,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, metrics::router(context)).with_graceful_shutdown(shutdown).await
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// The process can reach its database.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = String), (status = 503, description = "The database is unreachable", body = String)))]
async fn readyz(State(context): State<ApiContext>) -> (StatusCode, &'static str) {
    match sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(&context.db).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

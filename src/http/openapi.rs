//! The OpenAPI 3 document of the API at `GET /api/v1/openapi.json`, generated from the handlers'
//! own annotations so that it cannot drift from the code.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::ApiContext;
use super::extractor::Caller;
use super::{
    accounts, alerts, events, flows, incidents, notifications, posture, resources, session, stats, tokens, users,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Skywarden API", description = "Cloud security posture management and detection for AWS."),
    paths(
        super::healthz,
        super::readyz,
        events::list,
        events::export,
        events::one,
        events::detail,
        events::principal_activity,
        events::address_activity,
        alerts::list,
        alerts::one,
        alerts::evidence,
        alerts::set_status,
        incidents::incidents,
        incidents::incident,
        incidents::update,
        incidents::report,
        alerts::set_statuses,
        flows::top,
        flows::timeline,
        flows::records,
        resources::list,
        resources::one,
        resources::changes,
        accounts::list,
        accounts::onboard,
        accounts::onboard_organization,
        accounts::add_log_archive,
        accounts::template,
        accounts::one,
        accounts::status,
        accounts::test,
        accounts::remove,
        accounts::configure,
        accounts::poll_now,
        accounts::failed_objects,
        accounts::retry_failed_objects,
        session::login,
        session::current,
        session::logout,
        session::audit_log,
        stats::overview,
        stats::login_locations,
        stats::detection_health,
        tokens::list,
        tokens::create,
        tokens::revoke,
        users::list,
        users::disable,
        users::enable,
        notifications::list_channels,
        notifications::channel_form,
        notifications::create_channel,
        notifications::update_channel,
        notifications::delete_channel,
        notifications::test_channel,
        notifications::list_routes,
        notifications::create_route,
        notifications::replace_route,
        notifications::delete_route,
        notifications::list_deliveries,
        notifications::delivery_counts,
        notifications::retry_delivery,
        posture::scores,
        posture::list_findings,
        posture::one_finding,
        posture::checks,
        posture::list_suppressions,
        posture::create_suppression,
        posture::delete_suppression,
        posture::run_now,
        super::respond::for_alert,
        super::respond::list,
        super::respond::one,
        super::respond::plan,
        super::respond::apply,
        super::respond::undo,
        super::respond::approve,
        super::respond::approval_kinds,
        super::respond::set_approval,
        document,
    ),
    modifiers(&Security, &Unavailable),
    tags(
        (name = "audit trail", description = "CloudTrail events: who did what, when, from where"),
        (name = "alerts", description = "Detections, their evidence and triage"),
        (name = "incidents", description = "Intrusions: alerts linked by session, address, keys and resources"),
        (name = "inventory", description = "Resources, their versions and config changes"),
        (name = "network", description = "VPC flow logs"),
        (name = "accounts", description = "Onboarded AWS accounts and their pollers"),
        (name = "session", description = "Dashboard sign-in and Skywarden's own audit log"),
        (name = "notifications", description = "Alert routing: channels, routes and deliveries"),
        (name = "posture", description = "Compliance: posture checks, findings, suppressions and scores"),
        (name = "response", description = "Containment actions through the responder role: dry run, apply, undo"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("swk_<id>_<secret>").build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::extractor::SESSION_COOKIE,
                "Dashboard session; changes also need the X-CSRF-Token header",
            ))),
        );
    }
}

/// Every API route can answer 503: at the concurrency limit, past the request timeout, or when
/// a query ran past the statement timeout. Health checks are exempt.
struct Unavailable;

impl Modify for Unavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description(
                "Busy (the concurrency limit; see Retry-After), or the request or one of its queries ran past its timeout",
            )
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/") {
                continue;
            }
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.entry("503".into()).or_insert_with(|| response.clone().into());
            }
        }
    }
}

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/v1/openapi.json", get(document))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "session", responses((status = 200, description = "This document", body = Object), (status = 401, body = super::error::ErrorBody)), security(("bearer" = []), ("session" = [])))]
async fn document(_caller: Caller) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

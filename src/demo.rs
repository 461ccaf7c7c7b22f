//! What `skywarden demo` prints after importing the sample incident: the questions a SOC
//! analyst asks first, answered from the stored data.
//!
//! Reads alerts and events; imports `alerts`, `db` and `model`.

use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("reading alerts")]
    Alerts(#[from] crate::alerts::store::AlertStoreError),
}

/// Write calls that change who can get in or what is logged.
const NOTABLE_CHANGES: &[&str] = &[
    "AuthorizeSecurityGroupIngress",
    "ModifySecurityGroupRules",
    "RevokeSecurityGroupIngress",
    "AttachRolePolicy",
    "PutRolePolicy",
    "CreateRole",
    "AddRoleToInstanceProfile",
    "CreateInstanceProfile",
    "AssociateIamInstanceProfile",
    "ReplaceIamInstanceProfileAssociation",
    "CreateUser",
    "CreateAccessKey",
    "AttachUserPolicy",
    "StartSession",
    "StopLogging",
    "DeleteTrail",
    "UpdateTrail",
];

pub async fn print_story(pool: &PgPool) -> Result<(), DemoError> {
    println!("\nAlerts (skywarden alerts --json for all fields):");
    let alerts = crate::alerts::store::list(pool, &crate::alerts::store::AlertFilter::default()).await?;
    for alert in alerts.iter().filter(|a| a.severity >= crate::model::Severity::Medium) {
        println!(
            "  {}  {:<8} {:<38} {}",
            alert.first_seen.format("%Y-%m-%d %H:%M"),
            alert.severity,
            alert.policy_id,
            alert.title
        );
    }

    println!("\nConsole logins by user and country:");
    let logins = sqlx::query!(
        r#"SELECT coalesce(user_name, principal_arn, '?') AS "user!", coalesce(geo_country, '??') AS "country!",
                  count(*) AS "logins!", count(*) FILTER (WHERE error_message IS NOT NULL OR raw->'responseElements'->>'ConsoleLogin' = 'Failure') AS "failed!",
                  min(event_time) AS "first!", max(event_time) AS "last!"
           FROM cloudtrail_events WHERE event_name = 'ConsoleLogin'
           GROUP BY 1, 2 ORDER BY 1, 3 DESC"#
    )
    .fetch_all(pool)
    .await?;
    for row in logins {
        println!(
            "  {:<14} {}  {:>3} logins ({} failed)  {} .. {}",
            row.user,
            row.country,
            row.logins,
            row.failed,
            row.first.format("%Y-%m-%d %H:%M"),
            row.last.format("%Y-%m-%d %H:%M")
        );
    }

    println!("\nChanges to access and logging (who, when, from where):");
    let names: Vec<String> = NOTABLE_CHANGES.iter().map(|s| s.to_string()).collect();
    let changes = sqlx::query!(
        r#"SELECT event_time, event_name AS "event_name!", coalesce(user_name, principal_arn, '?') AS "who!",
                  source_ip_text, geo_country, resource_ids
           FROM cloudtrail_events WHERE event_name = ANY($1) ORDER BY event_time"#,
        &names
    )
    .fetch_all(pool)
    .await?;
    for row in changes {
        println!(
            "  {}  {:<34} by {:<12} from {} ({})  {}",
            row.event_time.format("%Y-%m-%d %H:%M:%S"),
            row.event_name,
            row.who,
            row.source_ip_text.unwrap_or_default(),
            row.geo_country.unwrap_or_else(|| "??".into()),
            row.resource_ids.join(", ")
        );
    }

    println!("\nLargest outbound flows to public addresses:");
    let flows = sqlx::query!(
        r#"SELECT host(srcaddr) AS "src!", host(dstaddr) AS "dst!", coalesce(dst_country, '??') AS "country!",
                  sum(bytes)::bigint AS "bytes!", count(*) AS "records!"
           FROM flow_records
           WHERE dstaddr IS NOT NULL AND dst_country IS NOT NULL AND action = 'ACCEPT'
           GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 5"#
    )
    .fetch_all(pool)
    .await?;
    for row in flows {
        println!(
            "  {:<15} -> {:<15} {}  {:>12} bytes in {} records",
            row.src, row.dst, row.country, row.bytes, row.records
        );
    }
    Ok(())
}

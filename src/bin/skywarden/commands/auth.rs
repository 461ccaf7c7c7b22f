//! `skywarden users` and `skywarden tokens`: who may use the API and the dashboard, and how to
//! shut a user out at once.

use std::process::ExitCode;

use anyhow::Context;
use skywarden::auth::{Role, audit, users};
use skywarden::db::{Database, DbOptions};

use super::cli_actor;
use crate::cli::{TokenAction, UserAction};

pub(crate) async fn users(db_options: &DbOptions, action: UserAction) -> anyhow::Result<ExitCode> {
    match action {
        UserAction::Create { username, role } => create_user(db_options, &username, role).await,
        UserAction::List => {
            let db = Database::open(db_options).await?;
            let listed = users::list(&db.pool).await;
            db.close().await?;
            for user in listed? {
                let state = if user.disabled { "disabled" } else { "active" };
                println!(
                    "{:<24} {:<8} {:<8} {} sessions  created {}",
                    user.username,
                    user.role,
                    state,
                    user.sessions,
                    user.created_at.format("%Y-%m-%d")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UserAction::Disable { username } => set_disabled(db_options, &username, true).await,
        UserAction::Enable { username } => set_disabled(db_options, &username, false).await,
    }
}

async fn create_user(db_options: &DbOptions, username: &str, role: Role) -> anyhow::Result<ExitCode> {
    let password = match std::env::var("SKYWARDEN_USER_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            eprintln!("password for {username}:");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let db = Database::open(db_options).await?;
    users::create(&db.pool, username, &password, role).await?;
    audit::record(&db.pool, &cli_actor(), "user.create", Some(username), None, serde_json::json!({"role": role})).await;
    println!("user {username} ({role}) created");
    db.close().await?;
    Ok(ExitCode::SUCCESS)
}

/// Disables (ending the user's sessions at once) or enables a user.
async fn set_disabled(db_options: &DbOptions, username: &str, disabled: bool) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let result = users::set_disabled(&db.pool, username, disabled).await;
    if result.is_ok() {
        let action = if disabled { "user.disable" } else { "user.enable" };
        audit::record(&db.pool, &cli_actor(), action, Some(username), None, serde_json::json!({})).await;
    }
    db.close().await?;
    result?;
    println!("user {username} {}", if disabled { "disabled; their sessions ended" } else { "enabled" });
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn tokens(db_options: &DbOptions, action: TokenAction) -> anyhow::Result<ExitCode> {
    let db = Database::open(db_options).await?;
    let result = match action {
        TokenAction::Create { name, role } => match skywarden::auth::create(&db.pool, &name, role).await {
            Ok((id, token)) => {
                let details = serde_json::json!({"name": name, "role": role});
                audit::record(&db.pool, &cli_actor(), "token.create", Some(&id), None, details).await;
                eprintln!("token {id} ({role}) created; it is shown only now:");
                println!("{token}");
                Ok(())
            }
            Err(error) => Err(error),
        },
        TokenAction::List => skywarden::auth::list(&db.pool).await.map(|tokens| {
            for t in tokens {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!(
                    "{}  {:<8} {:<8} {}  created {}",
                    t.token_id,
                    t.role,
                    state,
                    t.name,
                    t.created_at.format("%Y-%m-%d")
                );
            }
        }),
        TokenAction::Revoke { id } => match skywarden::auth::revoke(&db.pool, &id).await {
            Ok(()) => {
                audit::record(&db.pool, &cli_actor(), "token.revoke", Some(&id), None, serde_json::json!({})).await;
                println!("token {id} revoked");
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    db.close().await?;
    result?;
    Ok(ExitCode::SUCCESS)
}

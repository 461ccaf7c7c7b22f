//! `skywarden respond list|plan|apply|undo` and `skywarden accounts responder set|clear`:
//! containment actions through an account's responder role, each recorded and audited.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use skywarden::accounts::responder;
use skywarden::db::Database;
use skywarden::detect::DetectorSettings;
use skywarden::net::Cidr;
use skywarden::policy_files::{PolicyFiles, PolicyProblem};
use skywarden::respond::{self, Action, ApplyRequest, ResponseContext, ResponseRecord};

use super::{aws_credentials, cli_actor};

#[derive(Debug, Subcommand)]
pub enum RespondAction {
    /// Recorded actions, newest first; with --alert, the actions that fit that alert.
    List {
        /// The actions that fit this alert (and those already run for it).
        #[arg(long)]
        alert: Option<String>,
        /// Only this account's recorded actions.
        #[arg(long)]
        account: Option<String>,
        /// At most this many recorded actions.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// The policy folder whose detectors.yaml names the trusted ranges
        /// (security_group_ingress.trusted_cidrs): a rule widened to one opened nothing.
        #[arg(long, env = "SKYWARDEN_POLICIES")]
        policies: Option<PathBuf>,
    },
    /// Dry run: the exact calls and the live state they would change; changes nothing.
    Plan(ActionArgs),
    /// Apply an action (once per --idempotency-key); a reason is required.
    Apply {
        #[command(flatten)]
        action: ActionArgs,
        /// Why, for the record and the audit log.
        #[arg(long)]
        reason: String,
        /// Replaying a request with the same key does nothing again (a fresh key by default).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The alert this action contains (of the same account).
        #[arg(long)]
        alert: Option<String>,
        /// The enabled dashboard user asking (required for a kind that needs approval).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// Undo an applied action: restores exactly the state recorded before it (for a kind that
    /// needs approval: asks for the undo, which a second person approves).
    Undo {
        /// The action's id (from `respond list` or `apply`).
        id: String,
        /// Why, for the record and the audit log.
        #[arg(long)]
        reason: String,
        /// The enabled dashboard user asking (required for a kind that needs approval).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        /// One JSON object with the record.
        #[arg(long)]
        json: bool,
    },
    /// Refused: approvals come only from a dashboard session of another analyst or admin
    /// (the dashboard, or POST /api/v1/responses/{id}/approve); the CLI cannot prove who it is.
    Approve {
        /// The action's id.
        id: String,
        /// Not used: approve in the dashboard.
        #[arg(long)]
        reason: Option<String>,
        /// Not accepted: `--as` names a user the CLI cannot prove it is.
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// Require (or stop requiring) a second person's approval for a kind of action; without
    /// arguments, list the kinds that need one.
    Approval {
        /// The kind of action.
        kind: Option<String>,
        /// Stop requiring approval for it.
        #[arg(long, requires = "kind")]
        off: bool,
    },
}

/// `ACCOUNT KIND TARGET [--region R]`.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The account id (12 digits).
    pub account_id: String,
    /// revoke-ingress-rule, deactivate-access-key, delete-login-profile, quarantine,
    /// detach-role-policy, disassociate-instance-profile, stop-instance, start-logging or
    /// revoke-principal-ingress (every rule a user or role opened).
    pub kind: String,
    /// sgr-… (or sg-…:sgr-…); USER:AKIA…; USER; user/NAME or role/NAME; ROLE:POLICY_ARN; i-…; i-…;
    /// trail name or ARN; user/NAME or role/NAME.
    pub target: String,
    /// The resource's region (EC2 and CloudTrail actions).
    #[arg(long)]
    pub region: Option<String>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    /// The policy folder whose detectors.yaml names the trusted ranges
    /// (security_group_ingress.trusted_cidrs): a rule widened to one opened nothing.
    #[arg(long, env = "SKYWARDEN_POLICIES")]
    pub policies: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ResponderAction {
    /// Record the account's responder role (deploy/skywarden-responder-role.yaml). Its external
    /// ID is generated unless given, and shown once.
    Set {
        /// The account id (12 digits).
        account_id: String,
        /// arn:aws:iam::ACCOUNT:role/SkywardenResponder
        #[arg(long)]
        role_arn: String,
        /// The ExternalId the role's stack was deployed with (generated when absent).
        #[arg(long)]
        external_id: Option<String>,
        /// The stack was deployed with AllowGrantingUndo=true: the undos that grant access
        /// (re-authorize a rule, re-attach a role policy, re-associate a profile) may run.
        #[arg(long)]
        granting_undo: bool,
    },
    /// Forget the account's responder role: no action runs on it any more.
    Clear {
        /// The account id (12 digits).
        account_id: String,
    },
}

pub(crate) async fn responder(db: &Database, action: ResponderAction) -> anyhow::Result<ExitCode> {
    let actor = cli_actor();
    match action {
        ResponderAction::Set { account_id, role_arn, external_id, granting_undo } => {
            let stored = responder::set(&db.pool, &account_id, &role_arn, external_id.as_deref()).await?;
            responder::set_granting_undo(&db.pool, &account_id, granting_undo).await?;
            let details = serde_json::json!({"role_arn": role_arn, "granting_undo": granting_undo});
            skywarden::auth::audit::record(&db.pool, &actor, "account.responder_set", Some(&account_id), None, details)
                .await;
            println!("responder role {role_arn} recorded for {account_id}");
            if !granting_undo {
                println!(
                    "undos that grant access are refused (deploy with AllowGrantingUndo=true and add --granting-undo)"
                );
            }
            if external_id.is_none() {
                println!("its external ID (shown only now; deploy the role's stack with it): {stored}");
            }
        }
        ResponderAction::Clear { account_id } => {
            let cleared = responder::clear(&db.pool, &account_id).await?;
            let details = serde_json::json!({"cleared": cleared});
            skywarden::auth::audit::record(
                &db.pool,
                &actor,
                "account.responder_clear",
                Some(&account_id),
                None,
                details,
            )
            .await;
            println!("{}", if cleared { "responder role forgotten" } else { "no responder role was recorded" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the detector's settings, and so the trusted ranges, are read from.
const DETECTORS_FILE: &str = "detectors.yaml";

/// The detector's trusted ranges (`security_group_ingress.trusted_cidrs` of the tree's
/// `detectors.yaml`): `respond` takes them from its caller, as it may not import `detect`. With
/// each problem that changes them: the file unreadable or not parsing (no trusted range then),
/// an entry that is no range (left out).
pub(crate) fn trusted_cidrs(files: &PolicyFiles) -> (Vec<Cidr>, Vec<PolicyProblem>) {
    let mut problems: Vec<PolicyProblem> = files.unreadable_at(DETECTORS_FILE).cloned().collect();
    let Some(file) = files.get(DETECTORS_FILE) else { return (Vec::new(), problems) };
    let settings: DetectorSettings = match yaml_serde::from_str(&file.text) {
        Ok(settings) => settings,
        Err(error) => {
            problems.push(PolicyProblem { file: file.location(), problem: error.to_string() });
            return (Vec::new(), problems);
        }
    };
    let mut trusted = Vec::new();
    for text in &settings.security_group_ingress.trusted_cidrs {
        match text.parse::<Cidr>() {
            Ok(cidr) => trusted.push(cidr),
            Err(error) => problems.push(PolicyProblem {
                file: file.location(),
                problem: format!("security_group_ingress.trusted_cidrs: {error}"),
            }),
        }
    }
    (trusted, problems)
}

/// The trusted ranges for `serve` and `worker`: a problem with them stops the command, as a
/// broken response.yaml does (without them a rule to a trusted range would count as exposed).
pub(crate) fn load_trusted_cidrs(files: &PolicyFiles) -> anyhow::Result<Vec<Cidr>> {
    let (trusted, problems) = trusted_cidrs(files);
    if problems.is_empty() {
        return Ok(trusted);
    }
    for problem in &problems {
        tracing::warn!(%problem, "the trusted ranges response judges rules by could not be read");
    }
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "the trusted ranges (security_group_ingress.trusted_cidrs) could not be read: {}; response judges \
         security-group rules by them",
        listed.join("; ")
    )
}

/// The trusted ranges for one CLI command: each problem is printed to stderr, the rest apply.
fn cli_trusted_cidrs(policies: Option<&Path>) -> anyhow::Result<Vec<Cidr>> {
    let (trusted, problems) = trusted_cidrs(&PolicyFiles::builtin_with(policies)?);
    for problem in &problems {
        eprintln!("warning: trusted ranges: {problem} (the ranges that read apply)");
    }
    Ok(trusted)
}

async fn context(db: &Database, policies: Option<&Path>) -> anyhow::Result<ResponseContext> {
    let (settings, base) = aws_credentials::load_checked("no action can run without them").await?;
    let trusted_cidrs = cli_trusted_cidrs(policies)?;
    Ok(ResponseContext { pool: db.pool.clone(), settings, base, trusted_cidrs })
}

fn parse(args: &ActionArgs) -> anyhow::Result<Action> {
    Ok(Action::parse(&args.kind, &args.target, args.region.as_deref())?)
}

pub(crate) async fn run(db: &Database, action: RespondAction) -> anyhow::Result<ExitCode> {
    match action {
        RespondAction::List { alert: Some(alert), json, policies, .. } => {
            suggestions(db, &alert, json, policies.as_deref()).await
        }
        RespondAction::List { alert: None, account, limit, json, .. } => {
            let records = respond::record::list(&db.pool, account.as_deref(), None, limit.clamp(1, 1000)).await?;
            for record in &records {
                print_record(record, json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RespondAction::Plan(args) => plan(db, &args).await,
        RespondAction::Apply { action, reason, idempotency_key, alert, as_user } => {
            let key = match idempotency_key {
                Some(key) => key,
                None => skywarden::auth::random_secret(16)?,
            };
            let request = ApplyRequest {
                account_id: action.account_id.clone(),
                action: parse(&action)?,
                actor: actor(db, as_user.as_deref()).await?,
                reason,
                idempotency_key: key,
                alert_id: alert,
                automatic_rule: None,
            };
            let record = respond::run::apply(&context(db, action.policies.as_deref()).await?, &request).await?;
            print_record(&record, action.json)?;
            Ok(ExitCode::SUCCESS)
        }
        RespondAction::Approve { id, reason, as_user } => {
            let actor = match as_user {
                Some(name) => format!("{} as user:{name}", cli_actor()),
                None => cli_actor(),
            };
            let details = serde_json::json!({"action_id": id, "reason": reason, "refused": "approval from the CLI"});
            skywarden::auth::audit::record(&db.pool, &actor, "response.approve_refused", None, None, details).await;
            Err(respond::RespondError::ApproveInDashboard { id, actor }.into())
        }
        RespondAction::Approval { kind, off } => approval(db, kind, off).await,
        RespondAction::Undo { id, reason, as_user, json } => {
            let actor = actor(db, as_user.as_deref()).await?;
            let record = respond::run::undo(&context(db, None).await?, &id, &actor, &reason).await?;
            print_record(&record, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cli:LOGIN as user:NAME` for `--as NAME` (an enabled analyst or admin of the dashboard):
/// the record and the audit log keep the real login beside the user named; else the CLI login.
async fn actor(db: &Database, as_user: Option<&str>) -> anyhow::Result<String> {
    let Some(name) = as_user else { return Ok(cli_actor()) };
    let actor = format!("{} as user:{name}", cli_actor());
    respond::record::check_person(&db.pool, &actor, "--as").await?;
    Ok(actor)
}

async fn approval(db: &Database, kind: Option<String>, off: bool) -> anyhow::Result<ExitCode> {
    if let Some(kind) = kind {
        respond::record::set_approval(&db.pool, &kind, !off, &cli_actor()).await?;
        let details = serde_json::json!({"kind": kind, "required": !off});
        skywarden::auth::audit::record(&db.pool, &cli_actor(), "response.approval_setting", None, None, details).await;
    }
    for kind in respond::record::approval_kinds(&db.pool).await? {
        println!("{kind}: needs a second person's approval");
    }
    Ok(ExitCode::SUCCESS)
}

async fn suggestions(db: &Database, alert: &str, json: bool, policies: Option<&Path>) -> anyhow::Result<ExitCode> {
    let trusted = cli_trusted_cidrs(policies)?;
    let Some(applicable) = respond::suggest::for_alert(&db.pool, alert, &trusted).await? else {
        anyhow::bail!("no alert {alert}");
    };
    if json {
        println!("{}", serde_json::to_string(&applicable)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = &applicable.enable_command {
        println!("not enabled for account {}: {command}", applicable.account_id);
    }
    for action in &applicable.actions {
        let region = action.region.as_deref().map(|r| format!(" --region {r}")).unwrap_or_default();
        println!("{} {} {}{region}  ({})", applicable.account_id, action.kind, action.target, action.why);
    }
    for record in &applicable.recorded {
        print_record(record, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn plan(db: &Database, args: &ActionArgs) -> anyhow::Result<ExitCode> {
    let action = parse(args)?;
    let plan = respond::run::plan(&context(db, args.policies.as_deref()).await?, &args.account_id, &action).await?;
    if args.json {
        println!("{}", serde_json::to_string(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {} on {} ({})", plan.kind, plan.target, plan.account_id, plan.region);
    println!("now: {}", plan.current);
    if let Some(why) = &plan.will_fail {
        println!("WILL FAIL (refused before any call): {why}");
    }
    if plan.protected {
        println!("REFUSED: the resource is tagged {}", respond::PROTECTED_TAG);
    } else if plan.calls.is_empty() {
        println!("nothing to change");
    }
    for call in &plan.calls {
        println!("would call {} {}", call.operation, call.params);
    }
    println!("undo: {}", serde_json::to_value(plan.undo)?["how"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn print_record(record: &ResponseRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(record)?);
    } else {
        println!(
            "{}  {}  {:<8}  {} {} on {} by {}: {}{}",
            record.id,
            record.created_at.format("%Y-%m-%d %H:%M:%S"),
            record.status,
            record.kind,
            record.target,
            record.account_id,
            record.actor,
            record.reason,
            record.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted_in(detectors_yaml: &[u8]) -> (Vec<Cidr>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DETECTORS_FILE), detectors_yaml).unwrap();
        let (trusted, problems) = trusted_cidrs(&PolicyFiles::builtin_with(Some(dir.path())).unwrap());
        (trusted, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn trusted_ranges_come_from_the_override_folder_and_each_problem_is_named() {
        let (trusted, problems) =
            trusted_in(b"security_group_ingress: {trusted_cidrs: ['81.2.69.0/24', '2001:67c::/32']}\n");
        assert_eq!(trusted, ["81.2.69.0/24".parse::<Cidr>().unwrap(), "2001:67c::/32".parse().unwrap()]);
        assert!(problems.is_empty(), "{problems:?}");

        let (trusted, problems) = trusted_in(b"security_group_ingress: {trusted_cidrs: ['81.2.69.0/24', 'office']}\n");
        assert_eq!(trusted.len(), 1, "the entry that reads applies");
        assert!(
            problems.len() == 1 && problems[0].contains("detectors.yaml") && problems[0].contains("office"),
            "{problems:?}"
        );

        let (trusted, problems) = trusted_in(b"security_group_ingress: {trusted_cidrs: 81.2.69.0/24, typo: 1}\n");
        assert!(trusted.is_empty() && problems.len() == 1, "a file that does not parse: {problems:?}");

        let (trusted, problems) = trusted_in(&[0xff, 0xfe, 0x00]);
        assert!(trusted.is_empty(), "{trusted:?}");
        assert!(problems.len() == 1 && problems[0].contains("detectors.yaml"), "unreadable: {problems:?}");
        assert!(load_trusted_cidrs(&PolicyFiles::builtin_with(None).unwrap()).unwrap().is_empty(), "shipped: none");
    }
}

//! Command-line interface: one `clap` parser; every option can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use skywarden::auth::Role;
use skywarden::model::{AlertStatus, Severity};

use skywarden::db::{DatabaseUrl, DbOptions};
use skywarden::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "skywarden",
    version,
    about = "Cloud security posture management and detection for AWS",
    after_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    /// Log format on stderr: text or json.
    #[arg(long, env = "SKYWARDEN_LOG_FORMAT", default_value = "text", value_parser = parse_log_format, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Variables read from the environment that have no flag of their own (flags show theirs).
pub const ENVIRONMENT_HELP: &str = "\
Environment (besides the variables each flag names):
  SKYWARDEN_AWS_ENDPOINT_URL            send every AWS call to this endpoint (an emulator, a VPC endpoint)
  SKYWARDEN_AWS_ENDPOINT_URL_<SERVICE>  the same for one service: STS, CLOUDTRAIL, EC2, IAM, S3,
                                        CLOUDWATCH_LOGS, ORGANIZATIONS
  SKYWARDEN_AWS_HOME_REGION             region of STS and IAM calls (default us-east-1)
  AWS credentials                       Skywarden's own, from the AWS SDK's default chain:
                                        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;
                                        AWS_PROFILE with AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE
                                        (~/.aws/config, ~/.aws/credentials; SSO and credential_process);
                                        AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN;
                                        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI (ECS, EKS);
                                        the EC2 instance metadata service (AWS_EC2_METADATA_DISABLED=true
                                        turns it off)
  SKYWARDEN_SECRET_KEY, SKYWARDEN_SECRET_KEY_FILE
                                        the key sealing notification secrets (default <data dir>/secret.key)
  SKYWARDEN_USER_PASSWORD               the password of `users create` (else read from standard input)
  RUST_LOG                              log filter on stderr (default info); the AWS SDK's own logs
                                        show from warn in serve, worker, demo and deliver, and only
                                        as errors in other commands

--json prints JSON lines: one compact JSON object per line. Reference: docs/cli.md";

/// Exit codes of `worker`.
const WORKER_EXIT_CODES: &str = "\
Exit codes:
  0  stopped by SIGINT or SIGTERM; with --once: every due job ran without error
  1  the worker could not start (database, policies, secret key, notifications file)
  2  with --once: at least one job failed (its report line has an \"error\"); the others ran";

/// Exit codes of `import`.
const IMPORT_EXIT_CODES: &str = "\
Exit codes:
  0  every file imported
  1  nothing imported: the database, the policies or the options were wrong
  2  imported, but some files or records were not (listed in `errors`, or under \"problems\")";

/// Where the data lives: a server the user runs, or the embedded cluster.
#[derive(Clone, Debug, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL. Without it, Skywarden runs its own embedded cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// Folder for the embedded PostgreSQL cluster and other local state.
    #[arg(long, env = "SKYWARDEN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Connections in the pool (bulk import uses two of them for parallel COPY).
    #[arg(long, env = "SKYWARDEN_DB_CONNECTIONS", default_value_t = 4, global = true)]
    pub db_connections: u32,
}

impl From<DbArgs> for DbOptions {
    fn from(args: DbArgs) -> Self {
        DbOptions { database_url: args.database_url, data_dir: args.data_dir, db_connections: args.db_connections }
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{text:?}: text or json")),
    }
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn parse_status(text: &str) -> Result<AlertStatus, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (they also run at every start).
    Migrate,
    /// Import CloudTrail and VPC flow log files (plain or gzip; folders are searched).
    #[command(after_help = IMPORT_EXIT_CODES)]
    Import(ImportArgs),
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Manage the embedded PostgreSQL cluster.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Import the bundled sample incident into the embedded database and show what it holds.
    Demo(DemoArgs),
    /// List alerts, or change one's status.
    Alerts(AlertsArgs),
    /// Create, list and revoke API tokens.
    Tokens {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Incidents (alerts of one intrusion), each with its timeline; show one, or change its
    /// status or owner.
    Incidents(IncidentsArgs),
    /// Onboard AWS accounts (role ARN + external ID), test them, and see their pollers.
    #[command(after_help = ENVIRONMENT_HELP)]
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Dashboard users (user name, password, role): create, list, disable, enable.
    Users {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Run the pollers and the notification sender (no API). Start several to share the work.
    ///
    /// Poll jobs and outbox rows are leased in PostgreSQL, so any number of workers and `serve`
    /// processes share them. A worker sends notifications with the secret key `serve` uses
    /// (SKYWARDEN_SECRET_KEY, SKYWARDEN_SECRET_KEY_FILE or <data dir>/secret.key) and never makes
    /// one: without it, it sends nothing and logs why. --no-notifications leaves sending to others.
    #[command(after_help = WORKER_EXIT_CODES)]
    Worker(WorkerArgs),
    /// Check, list and backtest the policies (built in, and those of --policies).
    Policies {
        #[command(flatten)]
        policies: PolicyArgs,
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Posture: evaluate the Rego checks over the stored snapshots, list findings, suppress.
    Posture {
        #[command(flatten)]
        policies: PolicyArgs,
        #[command(subcommand)]
        action: PostureAction,
    },
    /// Alert routing: send due notifications, see deliveries, retry dead letters, apply the config file.
    Notifications {
        #[command(subcommand)]
        action: NotificationsAction,
    },
    /// Contain an intrusion through an account's responder role: list, plan (dry run), apply, undo.
    #[command(after_help = ENVIRONMENT_HELP)]
    Respond {
        #[command(subcommand)]
        action: crate::commands::respond::RespondAction,
    },
    /// Copy months older than the hot retention to Parquet (OCSF, Security Lake layout) in a
    /// folder or S3, then drop them from PostgreSQL; `archive status` shows the runs.
    #[command(after_help = ENVIRONMENT_HELP)]
    Archive(crate::commands::archive::ArchiveArgs),
}

/// Which policies run: the built-in ones, and a folder that adds to or overrides them.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Folder of policy files laid over the built-in ones (same layout as the repository's
    /// `policies/`): a file at the same path replaces the built-in file, a rule or check with a
    /// built-in one's id replaces it, any other file adds. Built-in policies only without it.
    #[arg(long, env = "SKYWARDEN_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Start even if policy files are broken: log each problem as a warning and leave the
    /// broken policies out (by default a broken policy stops the command).
    #[arg(long, env = "SKYWARDEN_ALLOW_BROKEN_POLICIES")]
    pub allow_broken_policies: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Load and compile every policy and posture check without running them; exit 1 if any is
    /// broken (each problem names its file and check).
    Lint {
        /// CloudTrail files (JSON, JSON lines, gzip) to check the rules against: a warning for
        /// each rule field that holds an object in events the rule applies to (rules match an
        /// object by its JSON text). Reads at most 100,000 events.
        #[arg(long = "events", value_name = "FILE")]
        events: Vec<std::path::PathBuf>,
    },
    /// One line per policy (JSON lines with --json).
    List {
        /// One JSON object per policy, one per line.
        #[arg(long)]
        json: bool,
    },
    /// What a policy would have raised over stored events, without creating alerts.
    Backtest {
        /// Policy id.
        id: String,
        /// Start of the period (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        /// One JSON object with the counts and the alert titles.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub action: Option<AlertsAction>,
    /// Only alerts in this status (open, acknowledged, resolved, dismissed, snoozed).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<AlertStatus>,
    /// Only alerts of this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Acknowledge, resolve, dismiss, snooze or reopen an alert.
    SetStatus {
        /// The alert's id (a UUID, as `skywarden alerts` lists it).
        id: String,
        /// open, acknowledged, resolved, dismissed or snoozed.
        #[arg(value_parser = parse_status)]
        status: AlertStatus,
        /// Why (kept in the alert's history).
        #[arg(long)]
        reason: String,
        /// With `snoozed`: until when (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Who is making the change (default: the login name).
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    pub action: Option<IncidentsAction>,
    /// Only incidents not resolved or dismissed.
    #[arg(long)]
    pub open: bool,
    /// One JSON object per incident, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsAction {
    /// One incident: its tactics, timeline, history and why each alert joined.
    Show {
        /// The incident's id (`inc-` and 16 hex digits).
        id: String,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The incident as a report to hand over: a self-contained HTML page or OCSF 1.1.0 JSON.
    Report {
        /// The incident's id.
        id: String,
        /// html or ocsf.
        #[arg(long, default_value = "html")]
        format: String,
        /// Where to write it (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Skywarden's address as users reach it, for the links back (OCSF `src_url`).
        #[arg(long, env = "SKYWARDEN_PUBLIC_URL", default_value = "")]
        public_url: String,
    },
    /// Change an incident's status or owner (or both).
    Set {
        /// The incident's id.
        id: String,
        /// open, investigating, contained, resolved or dismissed.
        #[arg(long)]
        status: Option<String>,
        /// The dashboard user who owns it ("" clears the owner).
        #[arg(long)]
        owner: Option<String>,
        /// Why (kept in the incident's history).
        #[arg(long)]
        reason: String,
        /// Who is making the change (default: the login name).
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct GeoArgs {
    /// MaxMind DB file (GeoIP2/GeoLite2 City, Country, ASN, or ip-location-db); repeatable.
    #[arg(long = "geoip", env = "SKYWARDEN_GEOIP", value_delimiter = ',')]
    pub geoip: Vec<PathBuf>,
    /// Tor exit nodes: one address a line (the bulk exit list) or Tor's exit-addresses format;
    /// read again when it changes.
    #[arg(long, env = "SKYWARDEN_TOR_EXITS")]
    pub tor_exits: Option<PathBuf>,
    /// VPN providers: a CIDR or `AS<number>` a line; read again when it changes.
    #[arg(long, env = "SKYWARDEN_VPN_RANGES")]
    pub vpn_ranges: Option<PathBuf>,
    /// Hosting providers: a CIDR or `AS<number>` a line; read again when it changes.
    #[arg(long, env = "SKYWARDEN_HOSTING_RANGES")]
    pub hosting_ranges: Option<PathBuf>,
    /// A downloaded copy of AWS's ip-ranges.json: its prefixes are AWS's addresses.
    #[arg(long, env = "SKYWARDEN_AWS_IP_RANGES")]
    pub aws_ip_ranges: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files or folders to import.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub geo: GeoArgs,
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Store only; do not run detection.
    #[arg(long)]
    pub no_detect: bool,
    /// Do not update the full-text index at the end (`serve` or a worker does it later;
    /// searches are exact meanwhile, only slower).
    #[arg(long, conflicts_with = "index_now")]
    pub no_search_index: bool,
    /// Update the full-text index at the end even while `serve` or a worker runs its indexer
    /// (which otherwise indexes these events within its next runs).
    #[arg(long)]
    pub index_now: bool,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Account id for records that name none.
    #[arg(long)]
    pub account: Option<String>,
    /// The files are GuardDuty or Security Hub findings saved from `get-findings` (JSON),
    /// imported as alerts (docs/aws-findings.md).
    #[arg(long)]
    pub findings: bool,
    /// Field order of flow logs without a header line, e.g. "version interface-id srcaddr dstaddr".
    #[arg(long)]
    pub flow_format: Option<String>,
    /// Files parsed in parallel.
    #[arg(long, default_value_t = 2)]
    pub parsers: usize,
    /// Database connections writing in parallel.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Largest record held in memory, in MiB (a JSON event or line, a flow log line); a larger
    /// one is reported with its file and byte offset and skipped.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_record_mb: u64,
    /// Largest ratio of decompressed to compressed size for gzip files, past their first
    /// 64 MiB; more is refused as a likely gzip bomb. 0 for no limit.
    #[arg(long, default_value_t = skywarden::ingest::source::DEFAULT_MAX_GZIP_RATIO)]
    pub max_gzip_ratio: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address for the HTTP API.
    #[arg(long, env = "SKYWARDEN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for Prometheus metrics (`/metrics`), kept apart from the API. Off if unset.
    #[arg(long, env = "SKYWARDEN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the API only; leave polling to `skywarden worker` processes.
    #[arg(long, env = "SKYWARDEN_NO_POLLERS")]
    pub no_pollers: bool,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub worker: PollerArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub archive: crate::commands::archive::ArchiveScheduleArgs,
}

/// What one client can take from the API: time, requests at once, database connections.
/// Pollers, the sender and posture keep the --db-connections pool, without a statement timeout.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Longest a request may take to be answered (a 503 after that).
    #[arg(long, env = "SKYWARDEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_positive_wait)]
    pub request_timeout: std::time::Duration,
    /// Requests answered at once; more get a 503 at once (health checks are not counted).
    #[arg(long, env = "SKYWARDEN_MAX_CONCURRENT_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_requests: u32,
    /// Connections of the API's own database pool.
    #[arg(long, env = "SKYWARDEN_API_DB_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub api_db_connections: u32,
    /// Longest one API query may run before PostgreSQL cancels it (a 503 naming the timeout);
    /// 0s for none.
    #[arg(long, env = "SKYWARDEN_API_STATEMENT_TIMEOUT", default_value = "15s", value_parser = parse_wait)]
    pub api_statement_timeout: std::time::Duration,
}

/// A duration above zero (`30s`).
fn parse_positive_wait(text: &str) -> Result<std::time::Duration, String> {
    let wait = parse_wait(text)?;
    if wait.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(wait)
}

/// Alert routing: where links point, which private networks receivers may be on, retries.
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyArgs {
    /// The dashboard's address as analysts reach it; messages link to alerts there
    /// (default: http://<listen address>).
    #[arg(long, env = "SKYWARDEN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A YAML file of notification channels and routes (secrets as env:NAME or file:/path).
    #[arg(long, env = "SKYWARDEN_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    /// Private networks receivers may be on, comma-separated (e.g. 10.0.0.0/8); by default only
    /// public addresses, never loopback, link-local or the metadata service.
    #[arg(long, env = "SKYWARDEN_NOTIFY_ALLOW_NETWORKS", default_value = "")]
    pub notify_allow_networks: String,
    /// Attempts before a delivery gives up and becomes a dead letter.
    #[arg(long, env = "SKYWARDEN_NOTIFY_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub notify_max_attempts: i32,
    /// The first retry's wait (500ms, 30s, 5m); each next one doubles, up to an hour.
    #[arg(long, env = "SKYWARDEN_NOTIFY_RETRY_BASE", default_value = "30s", value_parser = parse_wait)]
    pub notify_retry_base: std::time::Duration,
    /// How long a sender holds a delivery before another process may take it over.
    #[arg(long, env = "SKYWARDEN_NOTIFY_LEASE", default_value = "120s", value_parser = parse_wait)]
    pub notify_lease: std::time::Duration,
    /// Send no notifications from this process (another `serve`, `worker` or `notifications
    /// deliver` does).
    #[arg(long, env = "SKYWARDEN_NO_NOTIFICATIONS")]
    pub no_notifications: bool,
}

/// `500ms`, `30s`, `5m`, `1h`.
pub fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or("add a unit: ms, s, m or h")?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s"))?;
    let millis = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("{text:?}: the unit is ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(millis))
}

/// Settings of the pollers, shared by `serve` and `worker`.
#[derive(Debug, clap::Args)]
pub struct PollerArgs {
    /// Jobs this process runs at once.
    #[arg(long, env = "SKYWARDEN_POLL_CONCURRENCY", default_value_t = 4)]
    pub poll_concurrency: usize,
    #[command(flatten)]
    pub geo: GeoArgs,
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Store only; do not run detection on what the pollers bring in.
    #[arg(long)]
    pub no_detect: bool,
    #[command(flatten)]
    pub posture: PostureAlertArgs,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Run every due job once, print a JSON report per job (JSON lines), send the notifications
    /// due, and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub poller: PollerArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Onboard an account: store its role ARN, generate its external ID (shown once), create its
    /// poll jobs, and try the role. With --organization: onboard every active member account of
    /// the organization whose management (or delegated-admin) account the role is in.
    #[command(after_help = ENVIRONMENT_HELP)]
    Add(Box<AccountAddArgs>),
    /// Add a central log archive: one trail bucket read once for every account under it, each
    /// event stored under its own account.
    #[command(after_help = ENVIRONMENT_HELP)]
    AddLogArchive(Box<LogArchiveArgs>),
    /// Onboarded accounts (never their external IDs).
    List {
        /// One JSON object per account, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop polling an account and forget its role; its stored data stays.
    Remove {
        /// The account id (12 digits; `organization:…` or `log-archive:…` for those entries).
        account_id: String,
    },
    /// Assume the account's role and report who Skywarden is there.
    #[command(after_help = ENVIRONMENT_HELP)]
    Test {
        /// The account id (12 digits).
        account_id: String,
        /// One JSON object with the outcome.
        #[arg(long)]
        json: bool,
    },
    /// Each poll job: last success, next run, lag, last error.
    Status {
        /// Only this account's jobs; every account's by default.
        account_id: Option<String>,
        /// One JSON object per job, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Make poll jobs due now (the running workers pick them up within seconds).
    PollNow {
        /// Only this account; every account by default.
        #[arg(long)]
        account: Option<String>,
        /// Only this source: cloudtrail-lookup, cloudtrail-s3, cloudtrail-sqs, flowlogs-s3,
        /// flowlogs-sqs, flowlogs-cloudwatch, config-snapshot, regions, organization or
        /// cloudtrail-archive.
        #[arg(long)]
        source: Option<String>,
        /// One JSON object with the number of jobs made due.
        #[arg(long)]
        json: bool,
    },
    /// Change an account's region restriction or poll intervals; its jobs follow.
    Configure {
        /// The account id (12 digits).
        account_id: String,
        /// Poll only these regions, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all_regions")]
        regions: Option<Vec<String>>,
        /// Lift the restriction: poll every region the account has enabled.
        #[arg(long)]
        all_regions: bool,
        /// SOURCE=DURATION, e.g. cloudtrail-lookup=1m (repeatable; replaces the earlier choices).
        #[arg(long = "poll-interval", value_name = "SOURCE=DURATION")]
        poll_intervals: Vec<String>,
        /// Forget the chosen intervals: every source at its default.
        #[arg(long, conflicts_with = "poll_intervals")]
        default_intervals: bool,
        /// SQS queue announcing new trail files (near-real-time); "" removes it.
        #[arg(long)]
        trail_queue_url: Option<String>,
        /// SQS queue announcing new flow log files; "" removes it.
        #[arg(long)]
        flow_queue_url: Option<String>,
        /// Import GuardDuty findings as alerts (true) or stop (false).
        #[arg(long)]
        guardduty_findings: Option<bool>,
        /// Import Security Hub findings as alerts (true) or stop (false).
        #[arg(long)]
        security_hub_findings: Option<bool>,
        /// One JSON object with the account as configured.
        #[arg(long)]
        json: bool,
    },
    /// Print the CloudFormation template of the read-only role.
    Template,
    /// The optional responder role that `skywarden respond` acts through: set or clear it.
    Responder {
        #[command(subcommand)]
        action: crate::commands::respond::ResponderAction,
    },
}

#[derive(Debug, clap::Args)]
pub struct AccountAddArgs {
    /// arn:aws:iam::ACCOUNT:role/NAME
    #[arg(long)]
    pub role_arn: String,
    /// A name for people (shown by `accounts list` and the dashboard); the account id by default.
    #[arg(long)]
    pub name: Option<String>,
    /// Poll only these regions, comma-separated. By default every region the account has
    /// enabled, discovered with ec2:DescribeRegions (us-east-1 is always read for the events of
    /// global services: IAM, STS, console sign-in).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// How often a source's jobs run, as SOURCE=DURATION (repeatable): cloudtrail-lookup=1m,
    /// config-snapshot=1h. Defaults: 5 min for logs, 15 min for snapshots, a day for regions.
    #[arg(long = "poll-interval", value_name = "SOURCE=DURATION")]
    pub poll_intervals: Vec<String>,
    /// Endpoint for this account's AWS calls (an emulator or VPC endpoint).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Bucket with the account's CloudTrail files.
    #[arg(long)]
    pub trail_bucket: Option<String>,
    /// Key prefix before `AWSLogs/` in the trail bucket.
    #[arg(long)]
    pub trail_prefix: Option<String>,
    /// For an organization trail: the organization id (`o-…`).
    #[arg(long)]
    pub organization_id: Option<String>,
    /// Bucket with the account's VPC flow log files.
    #[arg(long)]
    pub flow_bucket: Option<String>,
    /// Key prefix before `AWSLogs/` in the flow log bucket.
    #[arg(long)]
    pub flow_prefix: Option<String>,
    /// CloudWatch Logs group with VPC flow logs (repeatable).
    #[arg(long = "flow-log-group")]
    pub flow_log_groups: Vec<String>,
    /// Region of the buckets, if not each job's region.
    #[arg(long)]
    pub bucket_region: Option<String>,
    /// SQS queue that S3 event notifications (or an EventBridge rule) fill with new trail
    /// files: they are read within seconds; the bucket listing stays as the safety net.
    #[arg(long)]
    pub trail_queue_url: Option<String>,
    /// SQS queue announcing new flow log files.
    #[arg(long)]
    pub flow_queue_url: Option<String>,
    /// Import GuardDuty findings of every polled region as alerts.
    #[arg(long)]
    pub guardduty_findings: bool,
    /// Import Security Hub findings (ASFF) of every polled region as alerts.
    #[arg(long)]
    pub security_hub_findings: bool,
    /// The role is in an organization's management (or delegated-admin) account: onboard each
    /// active member with --member-role-name and one external ID; a daily job onboards new
    /// members and stops polling suspended or closed ones.
    #[arg(long, conflicts_with_all = ["regions", "trail_bucket", "flow_bucket", "flow_log_groups", "trail_queue_url", "flow_queue_url"])]
    pub organization: bool,
    /// The role every member account has (deployed by deploy/skywarden-readonly-stackset.yaml).
    #[arg(long, requires = "organization", default_value = "SkywardenReadOnly")]
    pub member_role_name: String,
    /// Neither check Skywarden's own AWS credentials nor try the role now (they do not exist
    /// yet); without it, missing credentials stop the command before anything is stored.
    #[arg(long, visible_alias = "no-test")]
    pub skip_test: bool,
    /// One JSON object with the account, its external ID and the role check.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogArchiveArgs {
    /// The trail bucket (an organization trail's, usually in a log-archive account).
    #[arg(long)]
    pub bucket: String,
    /// Key prefix before `AWSLogs/`.
    #[arg(long)]
    pub prefix: Option<String>,
    /// An organization trail's organization id (`o-…`): files under `AWSLogs/o-…/<account>/`.
    #[arg(long)]
    pub organization_id: Option<String>,
    /// arn:aws:iam::LOG-ARCHIVE-ACCOUNT:role/NAME, the read-only role deployed in the account
    /// that holds the bucket, with TrailBucketName set.
    #[arg(long)]
    pub role_arn: String,
    /// The bucket's region, if known (else found once with HeadBucket or GetBucketLocation).
    #[arg(long)]
    pub bucket_region: Option<String>,
    /// A name for people (shown by `accounts list`).
    #[arg(long)]
    pub name: Option<String>,
    /// Endpoint for the archive's AWS calls (an emulator or VPC endpoint).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// cloudtrail-archive=DURATION (default 5m).
    #[arg(long = "poll-interval", value_name = "SOURCE=DURATION")]
    pub poll_intervals: Vec<String>,
    /// Neither check Skywarden's own AWS credentials nor try the role now (they do not exist
    /// yet); without it, missing credentials stop the command before anything is stored.
    #[arg(long, visible_alias = "no-test")]
    pub skip_test: bool,
    /// One JSON object with the account, its external ID and the role check.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the embedded cluster (initialising it on first use) and print its URL.
    Start,
    /// Stop the embedded cluster.
    Stop,
    /// Say whether the embedded cluster is running.
    Status,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder of the sample incident.
    #[arg(long, default_value = "samples/incident")]
    pub samples: PathBuf,
    #[command(flatten)]
    pub geo: GeoArgs,
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Where the dashboard listens once the incident is loaded.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Print the story and exit, without serving the dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

#[derive(Debug, Subcommand)]
pub enum PostureAction {
    /// Evaluate every posture check over the configuration snapshots already stored (by the
    /// pollers' config-snapshot jobs or `posture import`) and record findings; reads nothing
    /// from AWS unless --collect.
    #[command(after_help = ENVIRONMENT_HELP)]
    Run {
        /// Only this account (repeatable); every account with a snapshot by default (with
        /// --collect: every onboarded account).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// First take a fresh snapshot of the accounts from AWS (their config-snapshot poll
        /// jobs, run now in this process; a job another worker is running is left to it), then
        /// evaluate. Needs Skywarden's AWS credentials.
        #[arg(long)]
        collect: bool,
        #[command(flatten)]
        alerts: PostureAlertArgs,
        /// One JSON object with the evaluation (and, with --collect, each snapshot job's outcome).
        #[arg(long)]
        json: bool,
    },
    /// Findings: open by default.
    Findings {
        /// open, resolved or all.
        #[arg(long, default_value = "open")]
        status: String,
        /// Only this account's findings.
        #[arg(long)]
        account: Option<String>,
        /// Only this check's findings (its id, e.g. aws-vpc-flow-logs).
        #[arg(long)]
        check: Option<String>,
        /// One JSON object per finding, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Accept a failing check (on one resource, one account, or everywhere) with a reason.
    Suppress {
        /// The check's id (e.g. aws-vpc-flow-logs; `policies list` and `posture findings` show them).
        check: String,
        /// Only in this account; every account by default.
        #[arg(long)]
        account: Option<String>,
        /// Only on this resource (its id: sg-…, vpc-…, a user or role name); every resource by default.
        #[arg(long)]
        resource: Option<String>,
        /// Why the failure is accepted (kept with the suppression).
        #[arg(long)]
        reason: String,
        /// When the suppression ends (RFC 3339); never by default.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Who accepts it (default: the login name).
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
    /// Record the configuration snapshots of a dump file (skywarden.snapshot/v1), then evaluate.
    Import {
        /// The dump file (e.g. samples/incident.config.json).
        file: PathBuf,
        #[command(flatten)]
        alerts: PostureAlertArgs,
    },
    /// The score per account and section at the latest run.
    Scores {
        /// One JSON object per account and section, one per line.
        #[arg(long)]
        json: bool,
    },
}

/// Which new posture findings raise alerts (routed like event alerts).
#[derive(Debug, Clone, clap::Args)]
pub struct PostureAlertArgs {
    /// Findings of at least this severity raise an alert; `off` for none.
    #[arg(long = "posture-alert-severity", env = "SKYWARDEN_POSTURE_ALERT_SEVERITY", default_value = "high", value_parser = parse_alert_severity)]
    pub alert_severity: AlertThreshold,
}

/// A severity from which something raises alerts, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertThreshold(pub Option<Severity>);

fn parse_alert_severity(text: &str) -> Result<AlertThreshold, String> {
    if text.eq_ignore_ascii_case("off") {
        Ok(AlertThreshold(None))
    } else {
        text.parse().map(|s| AlertThreshold(Some(s)))
    }
}

#[derive(Debug, Subcommand)]
pub enum NotificationsAction {
    /// Send due notifications: once, or until stopped (for a process apart from `serve` and
    /// `worker`, which send too).
    Deliver {
        /// Send what is due now, print what happened, and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        notify: NotifyArgs,
    },
    /// Deliveries by state, and the dead letters.
    Status {
        /// One JSON object: the counts by state and the latest dead letters.
        #[arg(long)]
        json: bool,
    },
    /// Deliveries, newest first: `--status dead` lists the dead letters to retry.
    Deliveries {
        /// Only deliveries in this state: pending, sending, delivered or dead.
        #[arg(long, value_parser = ["pending", "sending", "delivered", "dead"])]
        status: Option<String>,
        /// Only deliveries of this alert (its id, a UUID).
        #[arg(long)]
        alert: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// One JSON object per delivery, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Send a dead letter again from scratch (its attempts start over); audit-logged like the
    /// dashboard's retry. A running sender (`serve`, `worker`, `notifications deliver`) sends it.
    Retry {
        /// The delivery's id (`notifications deliveries --status dead` lists them).
        delivery_id: i64,
    },
    /// Check a notifications config file and apply it to the database.
    Apply {
        /// The YAML file (or give it with --notifications / SKYWARDEN_NOTIFICATIONS).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        notify: NotifyArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// What the token is for (shown by `tokens list` and in the audit log).
        #[arg(long)]
        name: String,
        /// viewer, analyst or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `tokens list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a dashboard user. The password is read from SKYWARDEN_USER_PASSWORD, or from the
    /// first line of standard input, never from the command line (where `ps` would show it).
    Create {
        /// The user name to sign in with.
        #[arg(long)]
        username: String,
        /// viewer, analyst or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Every dashboard user with their role, state and live sessions.
    List,
    /// Refuse the user's logins and end their dashboard sessions at once.
    Disable {
        /// The user name.
        username: String,
    },
    /// Let a disabled user sign in again.
    Enable {
        /// The user name.
        username: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("skywarden").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn every_command_line_parses_into_its_types() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        match parse(&["serve", "--notify-retry-base", "500ms", "--posture-alert-severity", "off"]).command {
            Command::Serve(args) => {
                assert_eq!(args.notify.notify_retry_base, std::time::Duration::from_millis(500));
                assert_eq!(args.worker.posture.alert_severity, AlertThreshold(None));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["worker", "--once"]).command {
            Command::Worker(args) => {
                assert_eq!(args.poller.posture.alert_severity, AlertThreshold(Some(Severity::High)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["posture", "run", "--account", "111122223333"]).command, Command::Posture { .. }));
        assert!(matches!(parse(&["notifications", "deliver", "--once"]).command, Command::Notifications { .. }));
        assert!(matches!(parse(&["demo", "--no-dashboard"]).command, Command::Demo(_)));
        match parse(&["import", "--policies", "mine", "--allow-broken-policies", "logs"]).command {
            Command::Import(args) => {
                assert_eq!(args.policies.policies.as_deref(), Some(std::path::Path::new("mine")));
                assert!(args.policies.allow_broken_policies);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["skywarden", "serve", "--notify-retry-base", "30"]).is_err());
        assert!(Cli::try_parse_from(["skywarden", "serve", "--posture-alert-severity", "urgent"]).is_err());
    }

    #[test]
    fn new_spellings_parse_and_old_ones_still_do() {
        let apply = |args: &[&str]| match parse(args).command {
            Command::Notifications { action: NotificationsAction::Apply { file, notify } } => {
                (file, notify.notifications)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(apply(&["notifications", "apply", "n.yaml"]), (Some(PathBuf::from("n.yaml")), None));
        assert_eq!(apply(&["notifications", "apply", "--notifications", "n.yaml"]).1, Some(PathBuf::from("n.yaml")));
        assert!(matches!(
            parse(&["notifications", "retry", "42"]).command,
            Command::Notifications { action: NotificationsAction::Retry { delivery_id: 42 } }
        ));
        assert!(Cli::try_parse_from(["skywarden", "notifications", "retry", "forty-two"]).is_err());
        assert!(Cli::try_parse_from(["skywarden", "notifications", "deliveries", "--status", "gone"]).is_err());
        match parse(&["worker", "--no-notifications"]).command {
            Command::Worker(args) => assert!(args.notify.no_notifications),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["posture", "run", "--collect"]).command,
            Command::Posture { action: PostureAction::Run { collect: true, .. }, .. }
        ));
        for flag in ["--skip-test", "--no-test"] {
            match parse(&["accounts", "add", "--role-arn", "arn:aws:iam::111122223333:role/R", flag]).command {
                Command::Accounts { action: AccountsAction::Add(args) } => assert!(args.skip_test, "{flag}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every argument and every subcommand, at every depth, has a help line.
    #[test]
    fn every_argument_and_subcommand_has_help() {
        use clap::CommandFactory;
        fn without_help(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    found.push(format!("{path}: argument {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    found.push(format!("{sub_path}: subcommand"));
                }
                without_help(sub, &sub_path, found);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut found = Vec::new();
        without_help(&command, "skywarden", &mut found);
        assert!(found.is_empty(), "without help text:\n{}", found.join("\n"));
    }

    /// Variables without a flag of their own are named where they matter.
    #[test]
    fn help_names_the_aws_environment_and_the_exit_codes() {
        use clap::CommandFactory;
        let help = |path: &[&str]| {
            let mut command = Cli::command();
            command.build();
            let mut command = &mut command;
            for name in path {
                command = command.find_subcommand_mut(name).unwrap_or_else(|| panic!("{path:?}"));
            }
            command.render_long_help().to_string()
        };
        for path in [&[][..], &["accounts"], &["accounts", "add"], &["accounts", "test"], &["posture", "run"]] {
            let text = help(path);
            for variable in
                ["SKYWARDEN_AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED"]
            {
                assert!(text.contains(variable), "{path:?} help lacks {variable}:\n{text}");
            }
        }
        for path in [&["worker"][..], &["import"]] {
            let text = help(path);
            assert!(text.contains("Exit codes:") && text.contains("  2  "), "{path:?}:\n{text}");
        }
        let worker = help(&["worker"]);
        assert!(worker.contains("--no-notifications") && worker.contains("notification sender"), "{worker}");
        assert!(help(&["posture", "run"]).contains("already stored"));
    }
}

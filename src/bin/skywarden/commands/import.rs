//! `skywarden import`: log files into the database, then detection over what was stored.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use skywarden::db::DbOptions;
use skywarden::detect::{self, DetectionSummary, PolicySet};
use skywarden::ingest::flowlogs::FlowFormat;
use skywarden::ingest::{self, ImportOptions, ImportSummary};

use super::{EXIT_PARTIAL, load_policies, open_geo, with_db};
use crate::cli::ImportArgs;

/// How long an import waits for a detection pass a running service holds (one pass at a time
/// over every process) before it leaves its events to that pass.
const DETECTION_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs detection over what an import stored, and over what an earlier import or poll stored
/// but never evaluated (one killed half-way): one pass of its own, so the command reports what
/// its events raised (requests of other processes are left to the passes they run). Its request
/// is left first; while a running service holds the detection lease, it says so on stderr and
/// waits for that pass to end; after [`DETECTION_LEASE_WAIT`] it leaves its events to that
/// service's next pass.
pub(crate) async fn detect_after_import(
    pool: &sqlx::PgPool,
    policies: Option<&PolicySet>,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Option<DetectionSummary>> {
    let Some(policies) = policies else { return Ok(None) };
    let waiting = |holder: &str| {
        eprintln!(
            "Detection: waiting up to {} minutes for the detection pass of {holder} to end.",
            DETECTION_LEASE_WAIT.as_secs() / 60
        )
    };
    let options = detect::PendingOptions {
        wait: DETECTION_LEASE_WAIT,
        waiting: &waiting,
        own_pass_only: true,
        ..detect::PendingOptions::default()
    };
    let detection = detect::run_pending_with(pool, policies, since, &options);
    Ok(Some(detection.await.context("detection")?))
}

#[derive(Serialize)]
struct ImportReport<'a> {
    #[serde(flatten)]
    import: &'a ImportSummary,
    detection: Option<&'a DetectionSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search_index: Option<&'a skywarden::search::index::IndexRun>,
    /// The scheduled indexer (`host/pid` of `serve` or a worker) left to index these events.
    #[serde(skip_serializing_if = "Option::is_none")]
    search_index_left_to: Option<&'a str>,
    /// Wall time of each step of the command.
    steps_ms: StepTimes,
}

/// Wall time of each step of `skywarden import`, in milliseconds.
#[derive(Serialize, Default, Clone, Copy)]
struct StepTimes {
    import: u64,
    detection: u64,
    search_index: u64,
}

fn millis_since(started: std::time::Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

pub(crate) async fn import(db_options: &DbOptions, args: ImportArgs) -> anyhow::Result<ExitCode> {
    if args.findings {
        return import_findings(db_options, args).await;
    }
    let geo = open_geo(&args.geo)?;
    let flow_format = args.flow_format.as_deref().map(FlowFormat::parse).transpose().context("--flow-format")?;
    // The flow detectors look Tor exits up at detection time (flows store no network context).
    let policies = if args.no_detect { None } else { Some(load_policies(&args.policies)?.with_geo(geo.clone())) };
    let options = ImportOptions {
        geo,
        default_account: args.account,
        flow_format,
        parsers: args.parsers,
        writers: args.writers,
        show_progress: !args.json,
        max_record_bytes: (args.max_record_mb << 20) as usize,
        max_gzip_ratio: args.max_gzip_ratio,
        ..ImportOptions::new(args.paths)
    };
    let indexing = match (args.no_search_index, args.index_now) {
        (true, _) => Indexing::Off,
        (false, true) => Indexing::Now,
        (false, false) => Indexing::UnlessScheduled,
    };
    let (summary, detection, search_index, steps_ms) = with_db(db_options, async |db| {
        let mut steps = StepTimes::default();
        let started = detect::database_now(&db.pool).await?;
        let step = std::time::Instant::now();
        let summary = ingest::import(&db.pool, options).await?;
        steps.import = millis_since(step);
        let step = std::time::Instant::now();
        let detection = detect_after_import(&db.pool, policies.as_ref(), started).await?;
        steps.detection = millis_since(step);
        let step = std::time::Instant::now();
        let search_index = index_after_import(&db.pool, indexing).await;
        steps.search_index = millis_since(step);
        Ok((summary, detection, search_index, steps))
    })
    .await?;
    if args.json {
        let report = ImportReport {
            import: &summary,
            detection: detection.as_ref(),
            search_index: search_index.run(),
            search_index_left_to: search_index.left_to(),
            steps_ms,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&summary);
        if let Some(detection) = &detection {
            print_detection(detection);
        }
        match &search_index {
            IndexStep::Ran(run) if run.ran => println!("full-text index: {} events added", run.indexed),
            IndexStep::Ran(run) => println!(
                "full-text index: skipped, another process is indexing ({}); it indexes these events too",
                run.held_by.as_deref().unwrap_or("unknown")
            ),
            IndexStep::LeftTo(by) => println!(
                "full-text index: left to the indexer of {by}, which runs every {} s (--index-now indexes here); \
                 searches find these events meanwhile",
                skywarden::search::index::INTERVAL.as_secs()
            ),
            IndexStep::None => {}
        }
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL) })
}

/// Whether an import brings the full-text index up to date at its end.
#[derive(Clone, Copy)]
enum Indexing {
    Off,
    Now,
    /// Unless `serve` or a worker runs the indexer: it indexes the events within its next runs,
    /// and the import ends sooner (indexing was most of a large import's time).
    UnlessScheduled,
}

/// What an import did about the full-text index.
enum IndexStep {
    Ran(skywarden::search::index::IndexRun),
    LeftTo(String),
    None,
}

impl IndexStep {
    fn run(&self) -> Option<&skywarden::search::index::IndexRun> {
        match self {
            IndexStep::Ran(run) => Some(run),
            _ => None,
        }
    }

    fn left_to(&self) -> Option<&str> {
        match self {
            IndexStep::LeftTo(by) => Some(by),
            _ => None,
        }
    }
}

/// Brings the full-text index up to date after an import, as `indexing` says. A failure loses
/// nothing (the events are stored, searches stay exact, `serve` or a worker indexes them
/// later): a warning, not an error.
async fn index_after_import(pool: &sqlx::PgPool, indexing: Indexing) -> IndexStep {
    use skywarden::search::index;
    if let Indexing::Off = indexing {
        return IndexStep::None;
    }
    if let Indexing::UnlessScheduled = indexing {
        match index::live_scheduled_indexer(pool).await {
            Ok(Some(by)) => return IndexStep::LeftTo(by),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error, "could not tell whether a scheduled indexer runs; indexing here")
            }
        }
    }
    match index::run(pool).await {
        Ok(run) => IndexStep::Ran(run),
        Err(error) => {
            tracing::warn!(error = %error, "full-text indexing failed; `serve` or a worker will index these events later");
            IndexStep::None
        }
    }
}

pub(crate) fn print_summary(summary: &ImportSummary) {
    println!(
        "Imported {} files in {:.1}s: {} new CloudTrail events, {} new flow records, {} duplicates skipped{}.",
        summary.files,
        summary.elapsed_ms as f64 / 1000.0,
        summary.cloudtrail_events,
        summary.flow_records,
        summary.duplicates,
        if summary.skipped > 0 { format!(", {} non-log records skipped", summary.skipped) } else { String::new() },
    );
    if !summary.errors.is_empty() {
        println!("{} problems:", summary.errors.len());
        for error in &summary.errors {
            println!("  {}: {}", error.file, error.error);
        }
    }
}

pub(crate) fn print_detection(detection: &DetectionSummary) {
    if let Some(holder) = &detection.deferred_to {
        return println!(
            "Detection: deferred after {} minutes waiting for the detection pass of another process ({holder}); \
             it detects these events in its next pass (`skywarden accounts status` shows when one succeeds).",
            DETECTION_LEASE_WAIT.as_secs() / 60
        );
    }
    println!(
        "Detection: {} events and {} console logins evaluated, {} findings, {} new alerts.",
        detection.events_evaluated, detection.logins_evaluated, detection.findings, detection.new_alerts
    );
}

#[derive(Serialize)]
struct FindingsReport<'a> {
    #[serde(flatten)]
    import: &'a skywarden::pollers::findings::FindingsImport,
    incidents: &'a skywarden::alerts::incidents::LinkOutcome,
}

/// `import --findings`: GuardDuty or Security Hub findings saved from `get-findings`, as alerts,
/// linked into incidents before the command returns (as detection links what it raises), so
/// nothing waits for a reader to link them.
async fn import_findings(db_options: &DbOptions, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let paths = args.paths;
    let (summary, linked) = with_db(db_options, async |db| {
        let summary = skywarden::pollers::findings::import_files(&db.pool, &paths).await?;
        let linked = skywarden::alerts::incidents::link_pending(&db.pool).await.context("linking into incidents")?;
        Ok((summary, linked))
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&FindingsReport { import: &summary, incidents: &linked })?);
    } else {
        println!(
            "{} findings from {} files; {} raised or updated an alert",
            summary.findings, summary.files, summary.folded
        );
        println!("{} alerts linked into incidents ({} incidents opened)", linked.linked, linked.opened);
        if summary.stale > 0 || summary.reopened > 0 {
            println!(
                "{} older than the version their alert holds (changed nothing); {} alerts reopened (finding active again)",
                summary.stale, summary.reopened
            );
        }
        for error in &summary.errors {
            eprintln!("error: {error}");
        }
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL) })
}

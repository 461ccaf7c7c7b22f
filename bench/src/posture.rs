//! `skywarden-bench posture`: how fast the Rego checks judge a large account. The account is the
//! sample incident's last snapshot, copied until it holds the asked number of resources (new ids,
//! same shapes). The baseline, measured in the same run, builds every check's input without
//! evaluating it, so the ratio shows what Rego itself costs.

use std::time::Instant;

use chrono::Utc;

use skywarden::inventory::dump::SnapshotDump;
use skywarden::posture::checks::CheckSet;
use skywarden::posture::evaluate::{self, AccountResources, PostureResource};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Dump(#[from] skywarden::inventory::dump::DumpError),
    #[error("the dump holds no snapshot")]
    Empty,
}

/// The account: the dump's last snapshot, its resources copied until there are `resources`.
pub fn account(dump: &SnapshotDump, resources: usize) -> Result<AccountResources, BenchError> {
    let snapshot = dump.snapshots.last().ok_or(BenchError::Empty)?;
    let mut account = AccountResources { account_id: dump.account_id.clone(), ..Default::default() };
    let templates: Vec<(&str, &skywarden::inventory::dump::DumpedResource)> = snapshot
        .regions
        .iter()
        .flat_map(|(region, content)| content.resources.iter().map(move |r| (region.as_str(), r)))
        .collect();
    for content in snapshot.regions.values() {
        for kind in &content.collected {
            account.by_type.entry(kind.clone()).or_default();
        }
    }
    for i in 0..resources {
        let (region, template) = templates[i % templates.len()];
        let copy = i / templates.len();
        let id = if copy == 0 { template.id.clone() } else { format!("{}-{copy}", template.id) };
        account.by_type.entry(template.resource_type.clone()).or_default().push(PostureResource {
            resource_type: template.resource_type.clone(),
            id,
            region: region.to_string(),
            account_id: dump.account_id.clone(),
            arn: template.arn.clone(),
            name: template.name.clone(),
            config: template.config.clone(),
        });
    }
    Ok(account)
}

pub struct Report {
    pub resources: usize,
    pub checks: usize,
    pub evaluations: usize,
    pub failing: usize,
    pub baseline_secs: f64,
    pub evaluation_secs: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.evaluations as f64 / self.evaluation_secs;
        writeln!(
            f,
            "{} resources, {} checks: {} evaluations, {} failing",
            self.resources, self.checks, self.evaluations, self.failing
        )?;
        writeln!(f, "building the inputs only (baseline): {:.3} s", self.baseline_secs)?;
        writeln!(
            f,
            "evaluating (regorus, one core):      {:.3} s = {:.0} evaluations/s, {:.1} µs each",
            self.evaluation_secs,
            rate,
            1e6 / rate
        )?;
        write!(f, "evaluation / baseline: {:.1}x", self.evaluation_secs / self.baseline_secs.max(1e-9))
    }
}

/// Runs the baseline, then the evaluation, over the same account.
pub fn run(checks: &mut CheckSet, account: &AccountResources) -> Report {
    let now = Utc::now();
    let started = Instant::now();
    let inputs = evaluate::build_inputs(checks, account, now);
    let baseline_secs = started.elapsed().as_secs_f64();
    drop(inputs);
    let started = Instant::now();
    let evaluation = evaluate::evaluate_account(checks, account, now);
    let evaluation_secs = started.elapsed().as_secs_f64();
    Report {
        resources: account.by_type.values().map(Vec::len).sum(),
        checks: checks.checks.len(),
        evaluations: evaluation.results.len(),
        failing: evaluation.results.iter().filter(|r| !r.messages.is_empty()).count(),
        baseline_secs,
        evaluation_secs,
    }
}

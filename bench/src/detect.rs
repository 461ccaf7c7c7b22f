//! Detection speed: parse + Sigma rules + detectors, against parsing alone.

use std::path::Path;
use std::time::{Duration, Instant};

use skywarden::ingest::cloudtrail::CloudTrailEvent;

use crate::import::{BenchError, ROUNDS};

/// What `skywarden-bench detect` measured.
#[derive(Debug)]
pub struct DetectBenchReport {
    pub events: usize,
    pub rules: usize,
    pub parse_rate: f64,
    pub detect_rate: f64,
    /// Parse + rules + detectors with the scanner feeding one worker per core.
    pub detect_rate_parallel: f64,
    pub workers: usize,
    pub findings: usize,
}

impl std::fmt::Display for DetectBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events:                        {}", self.events)?;
        writeln!(f, "Sigma rules enabled:           {}", self.rules)?;
        writeln!(f, "parse only (baseline):         {:>10.0} events/s", self.parse_rate)?;
        writeln!(f, "parse + rules + detectors:     {:>10.0} events/s", self.detect_rate)?;
        writeln!(f, "ratio to parse only:           {:>10.2}", self.detect_rate / self.parse_rate)?;
        writeln!(f, "the same on {} workers:         {:>10.0} events/s", self.workers, self.detect_rate_parallel)?;
        write!(f, "findings:                      {}", self.findings)
    }
}

/// Streams `file` through the parser alone, then through parser, Sigma rules and the event and
/// login detectors (one thread each, best of two rounds), and reports both rates.
pub fn detection(policies: &skywarden::detect::PolicySet, file: &Path) -> Result<DetectBenchReport, BenchError> {
    use skywarden::detect::PolicyEvent;
    use skywarden::ingest::json_stream::{self, JsonSink};

    struct Sink<'p> {
        policies: Option<&'p skywarden::detect::PolicySet>,
        events: usize,
        findings: usize,
        logins: Vec<PolicyEvent>,
    }
    impl JsonSink for Sink<'_> {
        fn event(&mut self, raw: &str) {
            let Ok(event) = CloudTrailEvent::parse(raw, None) else { return };
            self.events += 1;
            let Some(policies) = self.policies else { return };
            let event = PolicyEvent::from_parsed(event, None);
            self.findings += policies.sigma.evaluate(&event, None).len();
            self.findings += policies.detectors.evaluate_event(&event, None).len();
            if event.is_console_login() {
                self.logins.push(event);
            }
        }
        fn log_message(&mut self, _: &str, _: Option<i64>, _: Option<&str>) {}
        fn skipped(&mut self, _: &'static str) {}
        fn unrecognised(&mut self, _: String) {}
    }

    let run = |policies: Option<&skywarden::detect::PolicySet>| -> Result<(Duration, usize, usize), BenchError> {
        let started = Instant::now();
        let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(file)?);
        let mut sink = Sink { policies, events: 0, findings: 0, logins: Vec::new() };
        json_stream::walk(reader, &mut sink).map_err(std::io::Error::other)?;
        if let Some(policies) = policies {
            sink.logins.sort_by_key(|e| e.event_time);
            let from = chrono::DateTime::UNIX_EPOCH;
            sink.findings +=
                skywarden::detect::detectors::logins::evaluate(&policies.detectors, &sink.logins, from, None).len();
        }
        Ok((started.elapsed(), sink.events, sink.findings))
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let mut parse_best = Duration::MAX;
    let mut detect_best = Duration::MAX;
    let mut parallel_best = Duration::MAX;
    let (mut events, mut findings) = (0, 0);
    for _ in 0..ROUNDS {
        let (elapsed, n, _) = run(None)?;
        parse_best = parse_best.min(elapsed);
        events = n;
        let (elapsed, _, found) = run(Some(policies))?;
        detect_best = detect_best.min(elapsed);
        findings = found;
        let (elapsed, parallel_findings) = detection_parallel(policies, file, workers)?;
        if parallel_findings != found {
            return Err(BenchError::ImportErrors(format!("parallel run found {parallel_findings}, serial {found}")));
        }
        parallel_best = parallel_best.min(elapsed);
    }
    Ok(DetectBenchReport {
        events,
        rules: policies.sigma.enabled_count(),
        parse_rate: events as f64 / parse_best.as_secs_f64(),
        detect_rate: events as f64 / detect_best.as_secs_f64(),
        detect_rate_parallel: events as f64 / parallel_best.as_secs_f64(),
        workers,
        findings,
    })
}

/// The scanner hands batches of event texts to `workers` threads that parse and evaluate them;
/// login detectors run once at the end over the logins the workers kept, in time order.
fn detection_parallel(
    policies: &skywarden::detect::PolicySet,
    file: &Path,
    workers: usize,
) -> Result<(Duration, usize), BenchError> {
    use skywarden::detect::PolicyEvent;
    use skywarden::ingest::json_stream::{self, JsonSink};
    use std::sync::{Mutex, mpsc};

    const BATCH: usize = 512;
    struct Feeder {
        batch: Vec<String>,
        out: mpsc::SyncSender<Vec<String>>,
    }
    impl JsonSink for Feeder {
        fn event(&mut self, raw: &str) {
            self.batch.push(raw.to_string());
            if self.batch.len() == BATCH {
                let _ = self.out.send(std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH)));
            }
        }
        fn log_message(&mut self, _: &str, _: Option<i64>, _: Option<&str>) {}
        fn skipped(&mut self, _: &'static str) {}
        fn unrecognised(&mut self, _: String) {}
    }

    let started = Instant::now();
    let (sender, receiver) = mpsc::sync_channel::<Vec<String>>(workers * 2);
    let receiver = Mutex::new(receiver);
    let (findings, mut logins) = std::thread::scope(|scope| -> Result<(usize, Vec<PolicyEvent>), BenchError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let (mut findings, mut logins) = (0, Vec::new());
                    loop {
                        let batch = receiver.lock().expect("receiver").recv();
                        let Ok(batch) = batch else { return (findings, logins) };
                        for raw in batch {
                            let Ok(event) = CloudTrailEvent::parse(&raw, None) else { continue };
                            let event = PolicyEvent::from_parsed(event, None);
                            findings += policies.sigma.evaluate(&event, None).len();
                            findings += policies.detectors.evaluate_event(&event, None).len();
                            if event.is_console_login() {
                                logins.push(event);
                            }
                        }
                    }
                })
            })
            .collect();
        let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(file)?);
        let mut feeder = Feeder { batch: Vec::with_capacity(BATCH), out: sender };
        json_stream::walk(reader, &mut feeder).map_err(std::io::Error::other)?;
        let Feeder { batch, out } = feeder;
        let _ = out.send(batch);
        drop(out);
        let mut total = (0, Vec::new());
        for handle in handles {
            let (findings, logins) = handle.join().map_err(|_| std::io::Error::other("worker panicked"))?;
            total.0 += findings;
            total.1.extend(logins);
        }
        Ok(total)
    })?;
    logins.sort_by_key(|e| e.event_time);
    let from = chrono::DateTime::UNIX_EPOCH;
    let findings =
        findings + skywarden::detect::detectors::logins::evaluate(&policies.detectors, &logins, from, None).len();
    Ok((started.elapsed(), findings))
}

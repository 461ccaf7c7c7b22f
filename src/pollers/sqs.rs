//! Near-real-time: log files announced on an SQS queue, by S3 event notifications (directly or
//! through an SNS topic) or by an EventBridge rule, read within seconds of their delivery.
//!
//! - Each announced object is read with the S3 poller's code: the same `ingested_objects`
//!   dedup (an object seen by the queue and by the listing is stored once), the same failure
//!   table and retries. The listing job stays, at its interval, as the safety net.
//! - A message is deleted only after its objects' rows and the checkpoint committed. One that
//!   cannot be understood, or that names an object failing to read, is left on the queue: it
//!   comes back after the visibility timeout and, after the queue's `maxReceiveCount`
//!   receives, its redrive policy moves it to the dead-letter queue.
//! - `s3:TestEvent` messages (sent when a notification is configured) are deleted.
//!
//! How it shares the workers: a run long-polls (up to 20 s), reads what arrived, drains the
//! queue without waiting, and ends when the queue is empty or after a run's worth of objects
//! (then it is due again at once, `more_pending`). The job's interval is a second, so it is
//! nearly always waiting on the queue; but it holds a worker slot only while it waits or
//! reads, and it is claimed like any job, most overdue first: a job overdue longer (snapshots,
//! listings) is claimed before it, so it cannot starve them. A worker needs one slot per queue
//! job on top of the others (`worker --concurrency`).

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::s3_objects::{self, Bucket, Listed, ObjectRead, ObjectState};
use super::{Job, PollContext, PollError, RunOutcome, Source};
use crate::accounts::Account;
use crate::aws::{AccountSession, AwsError};

/// Longest long-poll SQS allows.
const LONG_POLL_SECONDS: i32 = 20;
/// Most messages one receive returns.
const MAX_MESSAGES: i32 = 10;

/// An object named by a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: i64,
    pub time: Option<DateTime<Utc>>,
}

/// What a message says.
#[derive(Debug, PartialEq)]
pub enum Notice {
    /// `s3:TestEvent`, sent when a notification is set up.
    Test,
    /// Objects created (other events, such as deletions, are left out).
    Objects(Vec<Announced>),
}

/// Reads a message body: an S3 event notification (`Records`), an EventBridge event
/// (`detail-type: Object Created`), either wrapped in an SNS notification.
pub fn parse_body(body: &str) -> Result<Notice, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = value.get("Message").and_then(Value::as_str)
    {
        return parse_body(inner);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        return records
            .iter()
            .filter(|r| is_created(r.get("eventName")))
            .map(from_record)
            .collect::<Result<_, _>>()
            .map(Notice::Objects);
    }
    if value.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return match value.get("detail-type").and_then(Value::as_str) {
            Some("Object Created") => from_eventbridge(&value).map(|o| Notice::Objects(vec![o])),
            _ => Ok(Notice::Objects(Vec::new())),
        };
    }
    Err("neither an S3 event notification nor an EventBridge S3 event".into())
}

fn is_created(name: Option<&Value>) -> bool {
    name.and_then(Value::as_str).is_some_and(|n| n.starts_with("ObjectCreated:"))
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    path.iter().try_fold(value, |v, p| v.get(p)).and_then(Value::as_str).ok_or_else(|| format!("no {}", path.join(".")))
}

fn time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value.and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc())
}

/// One record of an S3 event notification; its key is URL-encoded (a space as `+`).
fn from_record(record: &Value) -> Result<Announced, String> {
    let encoded = text(record, &["s3", "object", "key"])?;
    let key = url::form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| if v.is_empty() { k.into_owned() } else { format!("{k}={v}") })
        .next()
        .unwrap_or_default();
    Ok(Announced {
        bucket: text(record, &["s3", "bucket", "name"])?.to_owned(),
        key,
        etag: text(record, &["s3", "object", "eTag"])?.trim_matches('"').to_owned(),
        size: record.pointer("/s3/object/size").and_then(Value::as_i64).unwrap_or(0),
        time: time(record.get("eventTime")),
    })
}

/// An EventBridge `Object Created` event; its key is not encoded.
fn from_eventbridge(event: &Value) -> Result<Announced, String> {
    Ok(Announced {
        bucket: text(event, &["detail", "bucket", "name"])?.to_owned(),
        key: text(event, &["detail", "object", "key"])?.to_owned(),
        etag: text(event, &["detail", "object", "etag"])?.trim_matches('"').to_owned(),
        size: event.pointer("/detail/object/size").and_then(Value::as_i64).unwrap_or(0),
        time: time(event.get("time")),
    })
}

/// The queue a job reads, and what its run needs.
struct Queue<'a> {
    client: aws_sdk_sqs::Client,
    url: String,
    region: String,
    ctx: &'a PollContext,
    session: &'a AccountSession,
    account: &'a Account,
    /// The bucket the account names for this source: objects in others are not read.
    bucket: Option<&'a str>,
    buckets: HashMap<String, Bucket>,
}

pub async fn run(
    ctx: &PollContext,
    session: &AccountSession,
    account: &Account,
    job: &mut Job,
) -> Result<RunOutcome, PollError> {
    let bucket = match job.source {
        Source::FlowLogsSqs => account.sources.flow_bucket.as_deref(),
        _ => account.sources.trail_bucket.as_deref(),
    };
    let mut queue = Queue {
        client: client(session, &job.region, &job.target)?,
        url: job.target.clone(),
        region: job.region.clone(),
        ctx,
        session,
        account,
        bucket,
        buckets: HashMap::new(),
    };
    // Objects that failed and whose messages may be in the dead-letter queue by now.
    let mut outcome = match bucket {
        Some(bucket) => s3_objects::retry_failed(ctx, session, account, job, bucket).await?,
        None => RunOutcome::default(),
    };
    let mut budget = ctx.options.max_pages_per_run.max(1);
    let mut wait = LONG_POLL_SECONDS;
    loop {
        let messages = queue.receive(wait).await?;
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            outcome.stored += queue.handle(job, message).await?;
        }
        budget = budget.saturating_sub(messages.len());
        if budget == 0 {
            outcome.more_pending = true;
            break;
        }
        // Drain what is there without waiting, then let the run end.
        wait = 0;
    }
    Ok(outcome)
}

/// An SQS client with the session's credentials, sent to the endpoint the queue URL names (AWS,
/// a VPC endpoint, an emulator): SQS answers for a queue at its URL's host.
fn client(session: &AccountSession, region: &str, url: &str) -> Result<aws_sdk_sqs::Client, PollError> {
    let parsed = url::Url::parse(url).map_err(|e| PollError::Target(format!("`{url}` is not a queue URL: {e}")))?;
    let endpoint = match (parsed.scheme(), parsed.host_str()) {
        ("https" | "http", Some(_)) => parsed.origin().ascii_serialization(),
        _ => return Err(PollError::Target(format!("`{url}` is not an http(s) queue URL"))),
    };
    Ok(session.sqs(region, &endpoint))
}

impl Queue<'_> {
    /// Receives up to ten messages, hidden from other receivers for as long as the job's lease
    /// lasts: if this worker dies, the message and the job come back together.
    async fn receive(&self, wait: i32) -> Result<Vec<Message>, AwsError> {
        let answer = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(MAX_MESSAGES)
            .wait_time_seconds(wait)
            .visibility_timeout(self.ctx.options.lease.as_secs().clamp(1, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:ReceiveMessage", &self.region, e))?;
        Ok(answer.messages.unwrap_or_default())
    }

    async fn delete(&self, message: &Message) -> Result<(), AwsError> {
        let Some(receipt) = message.receipt_handle() else { return Ok(()) };
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:DeleteMessage", &self.region, e))?;
        Ok(())
    }

    /// Handles one message: reads its objects, and deletes it once they are all stored (or
    /// known). Returns the rows stored.
    async fn handle(&mut self, job: &mut Job, message: &Message) -> Result<u64, PollError> {
        let receives = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(1);
        let id = message.message_id().unwrap_or_default();
        let objects = match parse_body(message.body().unwrap_or_default()) {
            Ok(Notice::Test) => {
                tracing::info!(job_id = job.job_id, message_id = id, "test event deleted");
                self.delete(message).await?;
                return Ok(0);
            }
            Ok(Notice::Objects(objects)) => objects,
            Err(reason) => {
                self.leave(job, id, receives, &reason).await;
                return Ok(0);
            }
        };
        let mut stored = 0;
        let mut complete = true;
        for object in objects {
            match self.read(job, &object).await? {
                Some(rows) => stored += rows,
                None => complete = false,
            }
        }
        if complete {
            self.delete(message).await?;
        } else {
            self.leave(job, id, receives, "an object it names could not be read (see `accounts status`)").await;
        }
        Ok(stored)
    }

    /// Reads one announced object: the rows stored, or none when it failed (or failed before
    /// and was given up).
    async fn read(&mut self, job: &mut Job, object: &Announced) -> Result<Option<u64>, PollError> {
        if self.bucket.is_some_and(|b| b != object.bucket) || !s3_objects::is_log_file(&object.key) {
            tracing::debug!(bucket = %object.bucket, key = %object.key, "announced object not read: not a log file of this source");
            return Ok(Some(0));
        }
        let listed =
            Listed { key: object.key.clone(), etag: object.etag.clone(), size: object.size, modified: object.time };
        match s3_objects::object_state(self.ctx, &job.account_id, &object.bucket, &listed).await? {
            ObjectState::Read => return Ok(Some(0)),
            ObjectState::GivenUp => return Ok(None),
            ObjectState::New | ObjectState::Retrying => {}
        }
        if !self.buckets.contains_key(&object.bucket) {
            let bucket = s3_objects::open_bucket(self.ctx, self.session, self.account, job, &object.bucket).await?;
            self.buckets.insert(object.bucket.clone(), bucket);
        }
        let bucket = &self.buckets[&object.bucket];
        let checkpoint = json!({ "last_object": format!("s3://{}/{}", object.bucket, object.key) });
        Ok(match s3_objects::ingest_object(self.ctx, job, bucket, &listed, checkpoint).await? {
            ObjectRead::Stored(rows) => Some(rows),
            ObjectRead::Gone => Some(0),
            ObjectRead::Failed => None,
        })
    }

    /// Leaves a message on the queue, saying how many times it came and whether a dead-letter
    /// queue will take it.
    async fn leave(&self, job: &Job, message_id: &str, receives: i64, reason: &str) {
        let limit = self.redrive_limit().await;
        match limit {
            Some(limit) => tracing::warn!(
                job_id = job.job_id,
                message_id,
                receives,
                max_receives = limit,
                reason,
                "message left on the queue; its redrive policy moves it to the dead-letter queue after the last receive"
            ),
            None => tracing::warn!(
                job_id = job.job_id,
                message_id,
                receives,
                reason,
                "message left on the queue, which has no redrive policy: it comes back until it expires"
            ),
        }
    }

    /// The queue's `maxReceiveCount`, if it has a redrive policy (and the role may read it).
    async fn redrive_limit(&self) -> Option<i64> {
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:GetQueueAttributes", &self.region, e));
        let policy = match answer {
            Ok(answer) => answer.attributes?.get(&QueueAttributeName::RedrivePolicy)?.clone(),
            Err(error) => {
                tracing::debug!(%error, "cannot read the queue's redrive policy");
                return None;
            }
        };
        let policy: Value = serde_json::from_str(&policy).ok()?;
        let count = policy.get("maxReceiveCount")?;
        count.as_i64().or_else(|| count.as_str()?.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> Value {
        json!({"eventName": "ObjectCreated:Put", "eventTime": "2026-11-30T13:00:00.000Z",
               "s3": {"bucket": {"name": "logs"}, "object": {"key": key, "size": 42, "eTag": "abc"}}})
    }

    #[test]
    fn s3_notifications_name_their_objects_with_decoded_keys() {
        let body = json!({"Records": [record("AWSLogs/1/CloudTrail/a+b%3Dc.json.gz"),
            {"eventName": "ObjectRemoved:Delete", "s3": {}}]})
        .to_string();
        let Ok(Notice::Objects(objects)) = parse_body(&body) else { panic!() };
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].key, "AWSLogs/1/CloudTrail/a b=c.json.gz");
        assert_eq!((objects[0].bucket.as_str(), objects[0].etag.as_str(), objects[0].size), ("logs", "abc", 42));
        assert!(objects[0].time.is_some());
    }

    #[test]
    fn queue_urls_name_their_region() {
        use crate::accounts::queue_region;
        assert_eq!(queue_region("https://sqs.eu-west-1.amazonaws.com/1/q"), Some("eu-west-1"));
        assert_eq!(queue_region("https://vpce-1-a.sqs.ap-east-1.vpce.amazonaws.com/1/q"), Some("ap-east-1"));
        assert_eq!(queue_region("https://us-west-2.queue.amazonaws.com/1/q"), Some("us-west-2"));
        assert_eq!(queue_region("http://127.0.0.1:5000/1/q"), None);
    }

    #[test]
    fn eventbridge_sns_and_test_events_are_understood() {
        let event = json!({"source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-30T13:00:00Z",
            "detail": {"bucket": {"name": "logs"}, "object": {"key": "a b.json.gz", "size": 1, "etag": "e"}}});
        let Ok(Notice::Objects(objects)) = parse_body(&event.to_string()) else { panic!() };
        assert_eq!(objects[0].key, "a b.json.gz");
        let sns = json!({"Type": "Notification", "Message": json!({"Records": [record("k")]}).to_string()});
        assert!(matches!(parse_body(&sns.to_string()), Ok(Notice::Objects(o)) if o.len() == 1));
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "logs"});
        assert_eq!(parse_body(&test.to_string()), Ok(Notice::Test));
        assert!(parse_body("not json").is_err());
        assert!(parse_body("{\"hello\": 1}").is_err());
    }
}

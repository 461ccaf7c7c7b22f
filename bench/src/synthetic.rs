//! Synthetic CloudTrail: realistic events in bulk, for benchmarks and for tests that need more
//! than the samples hold. Self-contained (std and chrono only): tests include this file by path.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

/// What the generated events are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Issue 18's realistic mix: 400 principals (a quarter IAM users with access keys, the rest
    /// role sessions, a few of them far busier than the rest), 1 event in 100 a console login,
    /// 1 in 200 a write; the rest reads (`AssumeRole` among them, read-only as CloudTrail marks
    /// it).
    Realistic,
    /// A detection stress test: 5 users, and half the events writes (`AuthorizeSecurityGroupIngress`,
    /// `AttachRolePolicy`, `AssumeRole` counted as writes), so a third of them raise findings.
    WriteHeavy,
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "realistic" => Ok(Mix::Realistic),
            "write-heavy" => Ok(Mix::WriteHeavy),
            other => Err(format!("unknown mix {other:?} (realistic or write-heavy)")),
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mix::Realistic => "realistic",
            Mix::WriteHeavy => "write-heavy",
        })
    }
}

/// Writes `count` events of the realistic mix (each about 1.7 KB like real CloudTrail records)
/// over two weeks, as an S3 delivery document. Returns its size.
pub fn generate_events(path: &Path, count: usize) -> std::io::Result<usize> {
    generate_mix(path, count, Mix::Realistic)
}

/// Writes `count` events of `mix` over two weeks, as an S3 delivery document. Returns its size.
pub fn generate_mix(path: &Path, count: usize, mix: Mix) -> std::io::Result<usize> {
    match mix {
        Mix::Realistic => write_document(path, count, 14 * 86_400, event),
        Mix::WriteHeavy => write_document(path, count, 14 * 86_400, write_heavy_event),
    }
}

/// The principal a password spray targets, and the address it comes from.
pub const SPRAY_USER: &str = "admin";
pub const SPRAY_SOURCE: &str = "185.220.101.7";

/// The password-spray shape: `count` events over one day, every fifth a failed console login
/// of [`SPRAY_USER`] from [`SPRAY_SOURCE`], the rest the realistic mix. The day stays the same
/// whatever `count`, so more events mean a denser attack (what an attacker controls).
pub fn generate_spray(path: &Path, count: usize) -> std::io::Result<usize> {
    write_document(path, count, 86_400, |i, time| if i % 5 == 0 { failed_login(i, time) } else { event(i, time) })
}

/// Writes `count` events from `make`, evenly over `span_seconds`, as an S3 delivery document.
fn write_document(
    path: &Path,
    count: usize,
    span_seconds: i64,
    make: impl Fn(usize, DateTime<Utc>) -> String,
) -> std::io::Result<usize> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let start = Utc.with_ymd_and_hms(2026, 10, 20, 0, 0, 0).single().expect("valid date");
    let mut written = 0;
    out.write_all(b"{\"Records\":[")?;
    for i in 0..count {
        if i > 0 {
            out.write_all(b",")?;
        }
        let time = start + chrono::Duration::seconds((i as i64 * span_seconds) / count.max(1) as i64);
        let event = make(i, time);
        written += event.len();
        out.write_all(event.as_bytes())?;
    }
    out.write_all(b"]}\n")?;
    out.flush()?;
    Ok(written)
}

/// The `i`th event as a failed console login of the spray's target.
fn failed_login(i: usize, time: DateTime<Utc>) -> String {
    let login = Login {
        principal_id: "AIDA0000000000000SPRAY",
        user: SPRAY_USER,
        ip: SPRAY_SOURCE,
        succeeded: false,
        mfa: false,
    };
    console_login_event(i, time, &login)
}

/// Who signs in to the console, from where, and how it went.
struct Login<'a> {
    principal_id: &'a str,
    user: &'a str,
    ip: &'a str,
    succeeded: bool,
    mfa: bool,
}

/// The `i`th event as `login`'s console sign-in, at `time`.
fn console_login_event(i: usize, time: DateTime<Utc>, login: &Login) -> String {
    let outcome = if login.succeeded {
        r#""requestParameters":null,"responseElements":{"ConsoleLogin":"Success"},"#
    } else {
        r#""errorMessage":"Failed authentication","requestParameters":null,"responseElements":{"ConsoleLogin":"Failure"},"#
    };
    format!(
        concat!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"{principal_id}","#,
            r#""arn":"arn:aws:iam::111122223333:user/{user}","accountId":"111122223333","userName":"{user}"}},"#,
            r#""eventTime":"{time}","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","#,
            r#""sourceIPAddress":"{ip}","userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","#,
            r#"{outcome}"#,
            r#""additionalEventData":{{"LoginTo":"https://console.aws.amazon.com/console/home","MobileVersion":"No","MFAUsed":"{mfa}"}},"#,
            r#""eventID":"{eid:08x}-98f8-4744-bd45-{eid:012x}","readOnly":false,"eventType":"AwsConsoleSignIn","#,
            r#""managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","#,
            r#""tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"signin.aws.amazon.com"}}}}"#
        ),
        principal_id = login.principal_id,
        user = login.user,
        time = time.format("%Y-%m-%dT%H:%M:%SZ"),
        ip = login.ip,
        outcome = outcome,
        mfa = if login.mfa { "Yes" } else { "No" },
        eid = i,
    )
}

/// The `i`th call: event source, event name and request parameters (JSON).
fn call(i: usize) -> (&'static str, &'static str, String) {
    match i % 6 {
        0 => (
            "ec2.amazonaws.com",
            "DescribeInstances",
            format!(r#"{{"instancesSet":{{"items":[{{"instanceId":"i-{:017x}"}}]}},"filterSet":{{}}}}"#, i),
        ),
        1 => (
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            format!(
                r#"{{"groupId":"sg-{:017x}","ipPermissions":{{"items":[{{"ipProtocol":"tcp","fromPort":443,"toPort":443,"groups":{{}},"ipRanges":{{"items":[{{"cidrIp":"10.0.0.0/16"}}]}}}}]}}}}"#,
                i % 97
            ),
        ),
        2 => (
            "iam.amazonaws.com",
            "AttachRolePolicy",
            format!(r#"{{"roleName":"app-role-{}","policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"}}"#, i % 31),
        ),
        3 => (
            "s3.amazonaws.com",
            "GetObject",
            format!(
                r#"{{"bucketName":"logs-{}","key":"2026/10/{}/part-{}.json","Host":"logs.s3.amazonaws.com"}}"#,
                i % 11,
                i % 28,
                i
            ),
        ),
        4 => (
            "sts.amazonaws.com",
            "AssumeRole",
            format!(
                r#"{{"roleArn":"arn:aws:iam::111122223333:role/app-role-{}","roleSessionName":"session-{}","durationSeconds":3600}}"#,
                i % 31,
                i
            ),
        ),
        _ => (
            "ec2.amazonaws.com",
            "DescribeSecurityGroups",
            r#"{"securityGroupSet":{},"ipPermissionsSet":{},"filterSet":{}}"#.to_string(),
        ),
    }
}

/// Principals in the realistic mix.
const PRINCIPALS: usize = 400;

/// The `i`th event of the realistic mix, at `time`.
fn event(i: usize, time: DateTime<Utc>) -> String {
    let principal = busy_principal(i);
    match i % 200 {
        // Console logins are by IAM users: the user nearest the busy principal.
        0 | 100 => console_login(i, time, principal - principal % 4),
        50 => {
            let (source, name, request) = write_call(i / 200, i);
            api_call(i, time, &identity(principal, time), &address(principal, i), (source, name, &request), false)
        }
        _ => {
            let (source, name, request) = read_call(i);
            api_call(i, time, &identity(principal, time), &address(principal, i), (source, name, &request), true)
        }
    }
}

/// Who makes the `i`th event: spread over the principals by a multiplicative hash, then squared,
/// so the low-numbered ones (automation) make most calls and the last few a handful each.
fn busy_principal(i: usize) -> usize {
    let spread = (i as u64).wrapping_mul(2_654_435_761) % 1_000;
    (spread * spread * PRINCIPALS as u64 / 1_000_000) as usize
}

/// Principal `p`'s `userIdentity`: every fourth an IAM user with an access key, the others a
/// session of one of 31 roles.
fn identity(p: usize, time: DateTime<Utc>) -> String {
    let time = time.format("%Y-%m-%dT%H:%M:%SZ");
    if p.is_multiple_of(4) {
        return format!(
            concat!(
                r#"{{"type":"IAMUser","principalId":"AIDA{p:016X}","arn":"arn:aws:iam::111122223333:user/user-{p}","#,
                r#""accountId":"111122223333","accessKeyId":"AKIA{p:016X}","userName":"user-{p}","sessionContext":{{"sessionIssuer":{{}},"#,
                r#""webIdFederationData":{{}},"attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}}"#
            ),
            p = p,
            time = time,
        );
    }
    format!(
        concat!(
            r#"{{"type":"AssumedRole","principalId":"AROA{role:016X}:session-{p}","arn":"arn:aws:sts::111122223333:assumed-role/app-role-{role}/session-{p}","#,
            r#""accountId":"111122223333","accessKeyId":"ASIA{p:016X}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROA{role:016X}","#,
            r#""arn":"arn:aws:iam::111122223333:role/app-role-{role}","accountId":"111122223333","userName":"app-role-{role}"}},"#,
            r#""webIdFederationData":{{}},"attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}}"#
        ),
        p = p,
        role = p % 31,
        time = time,
    )
}

/// Where principal `p` calls from: its own address, and one in ten calls from a second one.
fn address(p: usize, i: usize) -> String {
    let second = usize::from(i % 10 == 9);
    format!("{}.{}.{}.{}", 20 + (p + second) % 180, (p * 7) % 250, (p * 13 + second) % 250, 1 + p % 250)
}

/// The `i`th event as a successful console login of user `p`: from its usual address, one in
/// twenty of them from elsewhere; every tenth user without MFA.
fn console_login(i: usize, time: DateTime<Utc>, p: usize) -> String {
    let ip = if (i / 200) % 20 == 7 {
        format!("{}.{}.{}.{}", 90 + p % 60, 11 + p % 200, 3, 1 + i % 250)
    } else {
        address(p, 0)
    };
    let (principal_id, user) = (format!("AIDA{p:016X}"), format!("user-{p}"));
    let login =
        Login { principal_id: &principal_id, user: &user, ip: &ip, succeeded: true, mfa: !p.is_multiple_of(40) };
    console_login_event(i, time, &login)
}

/// The `i`th read: event source, event name and request parameters (JSON).
fn read_call(i: usize) -> (&'static str, &'static str, String) {
    match i % 8 {
        0 => (
            "ec2.amazonaws.com",
            "DescribeInstances",
            format!(r#"{{"instancesSet":{{"items":[{{"instanceId":"i-{i:017x}"}}]}},"filterSet":{{}}}}"#),
        ),
        1 => (
            "s3.amazonaws.com",
            "GetObject",
            format!(
                r#"{{"bucketName":"logs-{}","key":"2026/10/{}/part-{i}.json","Host":"logs.s3.amazonaws.com"}}"#,
                i % 11,
                i % 28
            ),
        ),
        2 => (
            "sts.amazonaws.com",
            "AssumeRole",
            format!(
                r#"{{"roleArn":"arn:aws:iam::111122223333:role/app-role-{}","roleSessionName":"session-{i}","durationSeconds":3600}}"#,
                i % 31
            ),
        ),
        3 => (
            "ec2.amazonaws.com",
            "DescribeSecurityGroups",
            r#"{"securityGroupSet":{},"ipPermissionsSet":{},"filterSet":{}}"#.to_string(),
        ),
        4 => ("sts.amazonaws.com", "GetCallerIdentity", "null".to_string()),
        5 => ("s3.amazonaws.com", "ListBuckets", r#"{"Host":"s3.eu-west-1.amazonaws.com"}"#.to_string()),
        6 => ("ec2.amazonaws.com", "DescribeVolumes", r#"{"volumeSet":{},"filterSet":{}}"#.to_string()),
        _ => ("iam.amazonaws.com", "GetRole", format!(r#"{{"roleName":"app-role-{}"}}"#, i % 31)),
    }
}

/// The `n`th write (the `i`th event): event source, event name and request parameters (JSON).
fn write_call(n: usize, i: usize) -> (&'static str, &'static str, String) {
    match n % 3 {
        0 => call(6 * (i / 6) + 1),
        1 => call(6 * (i / 6) + 2),
        _ => (
            "ec2.amazonaws.com",
            "CreateTags",
            format!(
                r#"{{"resourcesSet":{{"items":[{{"resourceId":"i-{i:017x}"}}]}},"tagSet":{{"items":[{{"key":"team","value":"data-{}"}}]}}}}"#,
                n % 7
            ),
        ),
    }
}

/// The `i`th event of the write-heavy mix, at `time`.
fn write_heavy_event(i: usize, time: DateTime<Utc>) -> String {
    let user = ["alice", "bob", "carol", "deploy-bot", "dave"][i % 5];
    let identity = format!(
        concat!(
            r#"{{"type":"IAMUser","principalId":"AIDA{id:016X}","arn":"arn:aws:iam::111122223333:user/{user}","#,
            r#""accountId":"111122223333","accessKeyId":"AKIA{key:016X}","userName":"{user}","sessionContext":{{"sessionIssuer":{{}},"webIdFederationData":{{}},"#,
            r#""attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}}"#
        ),
        id = i % 5,
        key = i % 9,
        user = user,
        time = time.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    let ip = format!("{}.{}.{}.{}", 20 + i % 200, (i / 7) % 250, (i / 13) % 250, 1 + i % 250);
    let (source, name, request) = call(i);
    api_call(i, time, &identity, &ip, (source, name, &request), matches!(i % 6, 0 | 3 | 5))
}

/// An API call event: the `i`th (its ids), at `time`, by `identity` (a `userIdentity` object) from
/// `ip`, of `call` (event source, event name, request parameters as JSON).
fn api_call(
    i: usize,
    time: DateTime<Utc>,
    identity: &str,
    ip: &str,
    call: (&str, &str, &str),
    read_only: bool,
) -> String {
    let (source, name, request) = call;
    format!(
        concat!(
            r#"{{"eventVersion":"1.08","userIdentity":{identity},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","#,
            r#""awsRegion":"eu-west-1","sourceIPAddress":"{ip}","userAgent":"aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-1016-aws exe/x86_64.ubuntu.22 prompt/off command/{name}","#,
            r#""requestParameters":{request},"responseElements":null,"requestID":"{rid:08x}-5f4a-4202-b1ea-{rid:012x}","eventID":"{eid:08x}-98f8-4744-bd45-{eid:012x}","#,
            r#""readOnly":{ro},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","#,
            r#""tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"{host}"}},"#,
            r#""additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","x-amz-id-2":"{amz_id}"}},"#,
            r#""resources":[{{"accountId":"111122223333","type":"AWS::EC2::Instance","ARN":"arn:aws:ec2:eu-west-1:111122223333:instance/i-{rid:017x}"}},"#,
            r#"{{"accountId":"111122223333","type":"AWS::IAM::Role","ARN":"arn:aws:iam::111122223333:role/app-role-{role}"}}],"#,
            r#""sessionCredentialFromConsole":"false","vpcEndpointId":"vpce-{rid:017x}","vpcEndpointAccountId":"111122223333"}}"#
        ),
        identity = identity,
        time = time.format("%Y-%m-%dT%H:%M:%SZ"),
        source = source,
        name = name,
        ip = ip,
        request = request,
        rid = i,
        eid = i,
        ro = read_only,
        host = source,
        role = i % 31,
        amz_id = "Xk2pL9qRv7TtYw3Zb8Nc1Md6Fe4Gh0Jj5Kk7Ll9Mm2Nn4Oo6Pp8Qq0Rr2Ss4Tt6Uu8Vv0Ww2Xx4Yy6Zz8=",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts over `count` events of `mix`: (console logins, writes, distinct principals,
    /// AssumeRole calls marked as writes).
    fn shape(mix: Mix, count: usize) -> (usize, usize, usize, usize) {
        let path = std::env::temp_dir().join(format!("skywarden-mix-{mix}-{}.json", std::process::id()));
        generate_mix(&path, count, mix).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let records = document["Records"].as_array().unwrap();
        assert_eq!(records.len(), count);
        let logins = records.iter().filter(|r| r["eventName"] == "ConsoleLogin").count();
        let writes = records.iter().filter(|r| r["eventType"] == "AwsApiCall" && r["readOnly"] == false).count();
        let principals: std::collections::HashSet<_> =
            records.iter().map(|r| r["userIdentity"]["arn"].to_string()).collect();
        let assume_writes = records.iter().filter(|r| r["eventName"] == "AssumeRole" && r["readOnly"] != true).count();
        (logins, writes, principals.len(), assume_writes)
    }

    #[test]
    fn the_realistic_mix_is_issue_18s() {
        let (logins, writes, principals, assume_writes) = shape(Mix::Realistic, 40_000);
        assert_eq!(logins, 400, "1% console logins");
        assert_eq!(writes, 200, "0.5% writes");
        // Console logins are by the users among them, under the same ARNs.
        assert_eq!(principals, PRINCIPALS);
        assert_eq!(assume_writes, 0, "CloudTrail marks AssumeRole read-only");
    }

    #[test]
    fn the_write_heavy_mix_is_half_writes() {
        let (logins, writes, principals, _) = shape(Mix::WriteHeavy, 6_000);
        assert_eq!((logins, writes, principals), (0, 3_000, 5));
    }
}

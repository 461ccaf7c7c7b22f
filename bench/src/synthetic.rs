//! Synthetic CloudTrail: realistic events in bulk, for benchmarks and for tests that need more
//! than the samples hold. Self-contained (std and chrono only): tests include this file by path.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

/// Writes `count` realistic events (console logins, role sessions, EC2 and IAM calls, each
/// about 1.7 KB like real CloudTrail records) as an S3 delivery document. Returns its size.
pub fn generate_events(path: &Path, count: usize) -> std::io::Result<usize> {
    // Spread over two weeks.
    write_document(path, count, 14 * 86_400, event)
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
    format!(
        concat!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"AIDA0000000000000SPRAY","#,
            r#""arn":"arn:aws:iam::111122223333:user/{user}","accountId":"111122223333","userName":"{user}"}},"#,
            r#""eventTime":"{time}","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","#,
            r#""sourceIPAddress":"{ip}","userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","#,
            r#""errorMessage":"Failed authentication","requestParameters":null,"responseElements":{{"ConsoleLogin":"Failure"}},"#,
            r#""additionalEventData":{{"LoginTo":"https://console.aws.amazon.com/console/home","MobileVersion":"No","MFAUsed":"No"}},"#,
            r#""eventID":"{eid:08x}-98f8-4744-bd45-{eid:012x}","readOnly":false,"eventType":"AwsConsoleSignIn","#,
            r#""managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","#,
            r#""tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"signin.aws.amazon.com"}}}}"#
        ),
        user = SPRAY_USER,
        time = time.format("%Y-%m-%dT%H:%M:%SZ"),
        ip = SPRAY_SOURCE,
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

/// The `i`th event, at `time`.
fn event(i: usize, time: DateTime<Utc>) -> String {
    let user = ["alice", "bob", "carol", "deploy-bot", "dave"][i % 5];
    let ip = format!("{}.{}.{}.{}", 20 + i % 200, (i / 7) % 250, (i / 13) % 250, 1 + i % 250);
    let (source, name, request) = call(i);
    format!(
        concat!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDA{id:016X}","arn":"arn:aws:iam::111122223333:user/{user}","#,
            r#""accountId":"111122223333","accessKeyId":"AKIA{key:016X}","userName":"{user}","sessionContext":{{"sessionIssuer":{{}},"webIdFederationData":{{}},"#,
            r#""attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","#,
            r#""awsRegion":"eu-west-1","sourceIPAddress":"{ip}","userAgent":"aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0-1016-aws exe/x86_64.ubuntu.22 prompt/off command/{name}","#,
            r#""requestParameters":{request},"responseElements":null,"requestID":"{rid:08x}-5f4a-4202-b1ea-{rid:012x}","eventID":"{eid:08x}-98f8-4744-bd45-{eid:012x}","#,
            r#""readOnly":{ro},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","#,
            r#""tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"{host}"}},"#,
            r#""additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","x-amz-id-2":"{amz_id}"}},"#,
            r#""resources":[{{"accountId":"111122223333","type":"AWS::EC2::Instance","ARN":"arn:aws:ec2:eu-west-1:111122223333:instance/i-{rid:017x}"}},"#,
            r#"{{"accountId":"111122223333","type":"AWS::IAM::Role","ARN":"arn:aws:iam::111122223333:role/app-role-{role}"}}],"#,
            r#""sessionCredentialFromConsole":"false","vpcEndpointId":"vpce-{rid:017x}","vpcEndpointAccountId":"111122223333"}}"#
        ),
        id = i % 5,
        key = i % 9,
        user = user,
        time = time.format("%Y-%m-%dT%H:%M:%SZ"),
        source = source,
        name = name,
        ip = ip,
        request = request,
        rid = i,
        eid = i,
        ro = matches!(i % 6, 0 | 3 | 5),
        host = source,
        role = i % 31,
        amz_id = "Xk2pL9qRv7TtYw3Zb8Nc1Md6Fe4Gh0Jj5Kk7Ll9Mm2Nn4Oo6Pp8Qq0Rr2Ss4Tt6Uu8Vv0Ww2Xx4Yy6Zz8=",
    )
}

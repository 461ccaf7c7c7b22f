#!/usr/bin/env python3
"""Generates Skywarden's sample incident dataset (synthetic, CC0; standard library only).

Two weeks of CloudTrail and VPC flow logs for account 111122223333 in us-east-1, written as
S3 delivers them, with a console account hijack on 2026-11-12. Every value comes from seeded
random.Random streams and gzip headers carry no time or name, so two runs write identical bytes.

    python3 samples/generate.py
"""
import gzip
import json
import random
import shutil
import string
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "incident"
SEED = "skywarden-sample-incident-1"

ACCOUNT, REGION = "111122223333", "us-east-1"
START, DAYS = datetime(2026, 11, 1, tzinfo=timezone.utc), 14
ATTACKER_IP = "176.36.10.20"
ATTACK_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/130.0.0.0 Safari/537.36")
VPC = "vpc-0a1b2c3d4e5f67890"
VICTIM_INSTANCE, VICTIM_SG = "i-0a1b2c3d4e5f67890", "sg-0a1b2c3d4e5f67890"
VICTIM_ENI, VICTIM_IP = "eni-0a1b2c3d4e5f67890", "10.0.1.25"
DB_ENI, DB_IP, BACKUP_IP = "eni-0b1c2d3e4f5a67891", "10.0.2.10", "10.0.2.30"
FLOW_LOG_ID = "fl-0a1b2c3d4e5f67890"
TRAIL_ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/management-trail"
SSM_ROLE = "AmazonSSMRoleForInstancesQuickSetup"
BUCKET = "acme-deploy-artifacts-111122223333"
# CloudTrail records nothing between the attacker's StopLogging and bob's StartLogging.
STOPPED = (datetime(2026, 11, 12, 5, 40, 17, tzinfo=timezone.utc),
           datetime(2026, 11, 12, 14, 10, 0, tzinfo=timezone.utc))

CLI_LINUX = ("aws-cli/2.18.4 md/awscrt#0.22.0 ua/2.0 os/linux#5.10.227-219.884.amzn2.x86_64 "
             "md/arch#x86_64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard "
             "md/installer#exe md/distrib#amzn.2 md/prompt#off")
BOTO3 = ("Boto3/1.35.54 md/Botocore#1.35.54 ua/2.0 os/linux#5.10.227-219.884.amzn2.x86_64 "
         "md/arch#x86_64 lang/python#3.12.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.35.54")
USERS = {
    "alice": {"ip": "73.202.18.40", "mfa": False, "logins": (14, 17, 1, 2), "weekend": 0.0,
              "browser": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                         "(KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
              "cli": "aws-cli/2.18.4 md/awscrt#0.22.0 ua/2.0 os/macos#24.1.0 md/arch#arm64 "
                     "lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe "
                     "md/prompt#off",
              "calls": ["DescribeInstances", "DescribeInstanceStatus", "DescribeSecurityGroups",
                        "ListBuckets", "DescribeInstanceInformation", "GetCallerIdentity"]},
    "bob": {"ip": "24.5.122.8", "mfa": True, "logins": (13, 22, 1, 3), "weekend": 0.4,
            "browser": "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
            "cli": CLI_LINUX.replace("amzn2.x86_64", "generic").replace(" md/distrib#amzn.2", ""),
            "calls": ["DescribeInstances", "DescribeVpcs", "DescribeSubnets", "DescribeSecurityGroups",
                      "DescribeVolumes", "DescribeDBInstances", "DescribeTrails", "ListRoles"]},
    "carol": {"ip": "81.2.69.142", "mfa": True, "logins": (8, 17, 1, 2), "weekend": 0.0,
              "browser": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                         "Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
              "cli": None,
              "calls": ["ListUsers", "ListRoles", "GetAccountSummary", "ListPolicies", "DescribeTrails",
                        "LookupEvents", "ListBuckets"]},
    "deploy-bot": {"ip": "52.94.236.248", "mfa": False},
}
# name -> (eventSource, requestParameters) for read-only calls.
READ_CALLS = {
    "DescribeInstances": ("ec2.amazonaws.com", {"instancesSet": {}, "filterSet": {}}),
    "DescribeInstanceStatus": ("ec2.amazonaws.com", {"instancesSet": {}, "includeAllInstances": True}),
    "DescribeSecurityGroups": ("ec2.amazonaws.com", {"securityGroupSet": {}, "filterSet": {}}),
    "DescribeVpcs": ("ec2.amazonaws.com", {"vpcSet": {}, "filterSet": {}}),
    "DescribeSubnets": ("ec2.amazonaws.com", {"subnetSet": {}, "filterSet": {}}),
    "DescribeVolumes": ("ec2.amazonaws.com", {"volumeSet": {}, "filterSet": {}}),
    "DescribeImages": ("ec2.amazonaws.com", {"imagesSet": {}, "ownersSet": {"items": [{"owner": "self"}]}}),
    "DescribeIamInstanceProfileAssociations": ("ec2.amazonaws.com",
                                               {"DescribeIamInstanceProfileAssociationsRequest": {}}),
    "DescribeDBInstances": ("rds.amazonaws.com", None),
    "ListRoles": ("iam.amazonaws.com", None),
    "ListUsers": ("iam.amazonaws.com", None),
    "ListInstanceProfiles": ("iam.amazonaws.com", None),
    "GetAccountSummary": ("iam.amazonaws.com", None),
    "ListPolicies": ("iam.amazonaws.com", {"scope": "Local", "onlyAttached": False}),
    "ListBuckets": ("s3.amazonaws.com", {"Host": "s3.amazonaws.com"}),
    "DescribeTrails": ("cloudtrail.amazonaws.com", {"includeShadowTrails": True}),
    "GetTrailStatus": ("cloudtrail.amazonaws.com", {"name": TRAIL_ARN}),
    "LookupEvents": ("cloudtrail.amazonaws.com", {"maxResults": 50}),
    "DescribeInstanceInformation": ("ssm.amazonaws.com", {"maxResults": 50}),
    "GetCallerIdentity": ("sts.amazonaws.com", None),
}
HOSTS = {"iam.amazonaws.com": "iam.amazonaws.com", "s3.amazonaws.com": "s3.amazonaws.com",
         "signin.amazonaws.com": "signin.aws.amazon.com"}
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
KEY_CHARS, ALNUM, HEX = string.ascii_uppercase + "234567", string.ascii_letters + string.digits, "0123456789abcdef"


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def java_date(t):
    """The date format IAM and STS use in responseElements ("Nov 12, 2026 4:12:09 AM")."""
    return (f"{MONTHS[t.month - 1]} {t.day}, {t.year} {(t.hour % 12) or 12}:{t.minute:02d}:"
            f"{t.second:02d} {'AM' if t.hour < 12 else 'PM'}")


def at(day, h, m=0, s=0):
    return START + timedelta(days=day - 1, hours=h, minutes=m, seconds=s)


def rand_str(rng, n, chars=KEY_CHARS):
    return "".join(rng.choice(chars) for _ in range(n))


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def write_gz(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


_ids = random.Random(SEED + "/identities")
for _name, _user in USERS.items():
    _user["principal"], _user["key"] = "AIDA" + rand_str(_ids, 16), "AKIA" + rand_str(_ids, 16)
DEPLOY_ROLE_ID = "AROA" + rand_str(_ids, 16)


@dataclass
class Session:
    user: str
    key: str
    ip: str
    ua: str
    created: datetime = None  # set for console sessions (temporary ASIA keys)
    mfa: bool = False


# ---------------------------------------------------------------- CloudTrail events


class Trail:
    def __init__(self):
        self.rng = random.Random(SEED + "/cloudtrail")
        self.events = []
        self.resources = {}  # eventID -> LookupEvents "Resources"

    def uuid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def user_identity(self, user, session=None):
        ident = {"type": "IAMUser", "principalId": USERS[user]["principal"],
                 "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}", "accountId": ACCOUNT}
        if session:
            ident["accessKeyId"] = session.key
        ident["userName"] = user
        if session and session.created:
            attributes = {"creationDate": iso(session.created), "mfaAuthenticated": str(session.mfa).lower()}
            ident["sessionContext"] = {"sessionIssuer": {}, "webIdFederationData": {}, "attributes": attributes}
        return ident

    def login(self, user, t, ip=None, ua=None, success=True):
        """A ConsoleLogin event; returns the console session it opens (or None on failure)."""
        u = USERS[user]
        ip, ua = ip or u["ip"], ua or u["browser"]
        mfa = u["mfa"] and success
        ev = {"eventVersion": "1.09", "userIdentity": self.user_identity(user), "eventTime": iso(t),
              "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": REGION,
              "sourceIPAddress": ip, "userAgent": ua}
        if not success:
            ev["errorMessage"] = "Failed authentication"
        ev["requestParameters"] = None
        ev["responseElements"] = {"ConsoleLogin": "Success" if success else "Failure"}
        extra = {"LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true",
                 "MobileVersion": "No", "MFAUsed": "Yes" if mfa else "No"}
        if mfa:
            extra["MFAIdentifier"] = f"arn:aws:iam::{ACCOUNT}:mfa/{user}"
        ev["additionalEventData"] = extra
        ev.update({"eventID": self.uuid(), "readOnly": False, "eventType": "AwsConsoleSignIn",
                   "managementEvent": True, "recipientAccountId": ACCOUNT, "eventCategory": "Management",
                   "tlsDetails": self.tls("signin.amazonaws.com")})
        self.add(ev)
        return Session(user, "ASIA" + rand_str(self.rng, 16), ip, ua, t, mfa) if success else None

    def tls(self, source, host=None):
        service = source.split(".")[0]
        return {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": host or HOSTS.get(source, f"{service}.{REGION}.amazonaws.com")}

    def call(self, s, t, source, name, req=None, resp=None, read_only=False, error=None,
             request_id=None, extra=None, resources=None, data=False, host=None, lookup=()):
        ev = {"eventVersion": "1.09", "userIdentity": self.user_identity(s.user, s), "eventTime": iso(t),
              "eventSource": source, "eventName": name, "awsRegion": REGION, "sourceIPAddress": s.ip,
              "userAgent": f"[{s.ua}]" if source == "s3.amazonaws.com" and not s.created else s.ua}
        if error:
            ev["errorCode"], ev["errorMessage"] = error
        ev["requestParameters"], ev["responseElements"] = req, resp
        if extra:
            ev["additionalEventData"] = extra
        ev["requestID"] = request_id or self.uuid()
        ev["eventID"] = self.uuid()
        ev["readOnly"] = read_only
        if resources:
            ev["resources"] = resources
        ev.update({"eventType": "AwsApiCall", "managementEvent": not data, "recipientAccountId": ACCOUNT,
                   "eventCategory": "Data" if data else "Management", "tlsDetails": self.tls(source, host)})
        if s.created:
            ev["sessionCredentialFromConsole"] = "true"
        self.add(ev, lookup)
        return ev

    def read(self, s, t, name, req=None, error=None):
        source, default = READ_CALLS[name]
        return self.call(s, t, source, name, req if req is not None else default, None, True, error)

    def add(self, ev, lookup=()):
        self.events.append(ev)
        self.resources[ev["eventID"]] = [{"ResourceType": k, "ResourceName": v} for k, v in lookup]


def browse(trail, s, t, count):
    """Read-only console calls during the minutes after a login."""
    rng = trail.rng
    for _ in range(count):
        t += timedelta(seconds=rng.randint(20, 400))
        name = rng.choice(USERS[s.user]["calls"])
        error = None
        if s.user == "carol" and name == "ListRoles" and rng.random() < 0.3:
            error = ("AccessDenied", f"User: arn:aws:iam::{ACCOUNT}:user/carol is not authorized to perform: "
                     f"iam:ListRoles on resource: arn:aws:iam::{ACCOUNT}:role/ because no identity-based "
                     "policy allows the iam:ListRoles action")
        trail.read(s, t, name, error=error)
    return t


def login_times(rng, user, day):
    workday = at(day, 0).weekday() < 5
    h0, h1, lo, hi = USERS[user]["logins"]
    if user == "alice" and day == 11:  # her last login before the hijack: late evening from home,
        # 4.5 hours before the Ukrainian login: ~2,000 km/h, impossible travel at any threshold
        return [at(day, 14, rng.randint(10, 40), rng.randint(0, 59)), at(day, 22, 48, rng.randint(0, 59))]
    if not workday:
        n = 1 if rng.random() < USERS[user]["weekend"] else 0
    else:
        n = rng.randint(lo, hi)
    slots = sorted(rng.sample(range(h0 * 4, h1 * 4), n))  # quarter-hours, never two in the same one
    return [at(day, q // 4, (q % 4) * 15 + rng.randint(0, 11), rng.randint(0, 59)) for q in slots]


def user_day(trail, day):
    """Console logins (with the odd typo first), console browsing and CLI use by the humans."""
    rng, typos = trail.rng, 2
    for user in ("alice", "bob", "carol"):
        for t in login_times(rng, user, day):
            if typos and rng.random() < 0.12:
                typos -= 1
                trail.login(user, t - timedelta(seconds=rng.randint(15, 90)), success=False)
            browse(trail, trail.login(user, t), t, rng.randint(2, 8))
        u = USERS[user]
        if u["cli"] and at(day, 0).weekday() < 5:
            cli = Session(user, u["key"], u["ip"], u["cli"])
            for _ in range(rng.randint(2, 6)):
                t = at(day, rng.randint(u["logins"][0], u["logins"][1]), rng.randint(0, 59), rng.randint(0, 59))
                trail.read(cli, t, rng.choice(u["calls"]))


def s3_object(trail, s, t, name, key, size):
    rng = trail.rng
    put = name == "PutObject"
    req = {"bucketName": BUCKET, "Host": f"{BUCKET}.s3.{REGION}.amazonaws.com", "key": key}
    if put:
        req["x-amz-server-side-encryption"] = "AES256"
    extra = {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
             "bytesTransferredIn": size if put else 0, "AuthenticationMethod": "AuthHeader",
             "x-amz-id-2": rand_str(rng, 56, ALNUM + "+/"),
             "bytesTransferredOut": 0 if put else size}
    resources = [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{BUCKET}/{key}"},
                 {"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{BUCKET}"}]
    trail.call(s, t, "s3.amazonaws.com", name, req, {"x-amz-server-side-encryption": "AES256"} if put else None,
               read_only=not put, request_id=rand_str(rng, 16, HEX.upper()), extra=extra,
               resources=resources, data=True, host=req["Host"])


def assume_role(trail, s, t):
    rng, name = trail.rng, f"deploy-bot-{int(t.timestamp())}"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/deploy-role"
    resp = {"credentials": {"accessKeyId": "ASIA" + rand_str(rng, 16),
                            "sessionToken": "IQoJb3JpZ2luX2VjE" + rand_str(rng, 60, ALNUM),
                            "expiration": java_date(t + timedelta(hours=1))},
            "assumedRoleUser": {"assumedRoleId": f"{DEPLOY_ROLE_ID}:{name}",
                                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy-role/{name}"}}
    trail.call(s, t, "sts.amazonaws.com", "AssumeRole",
               {"roleArn": role_arn, "roleSessionName": name, "durationSeconds": 3600}, resp, read_only=True,
               resources=[{"accountId": ACCOUNT, "type": "AWS::IAM::Role", "ARN": role_arn}])


def deploy_bot_day(trail, day):
    """The CI user: an hourly job that assumes its role, fetches and uploads artifacts, looks around."""
    rng, u = trail.rng, USERS["deploy-bot"]
    for hour in range(24):
        s = Session("deploy-bot", u["key"], u["ip"], rng.choice([CLI_LINUX, BOTO3]))
        t = at(day, hour, rng.randint(0, 14), rng.randint(0, 59))
        build = f"{day:02d}{hour:02d}-{rng.randint(1000, 9999)}"
        if rng.random() < 0.6:
            assume_role(trail, s, t)
        for _ in range(rng.randint(1, 3)):
            t += timedelta(seconds=rng.randint(2, 90))
            key = rng.choice(["releases/web/latest.tar.gz", "config/web.env", "config/db-migrations.tar.gz"])
            s3_object(trail, s, t, "GetObject", key, rng.randint(2_000, 9_000_000))
        for _ in range(rng.randint(0, 2)):
            t += timedelta(seconds=rng.randint(5, 300))
            key = rng.choice([f"releases/web/build-{build}.tar.gz", f"logs/deploy-{build}.json"])
            s3_object(trail, s, t, "PutObject", key, rng.randint(800, 4_000_000))
        for _ in range(rng.randint(1, 2)):
            t += timedelta(seconds=rng.randint(1, 60))
            trail.read(s, t, rng.choice(["DescribeInstances", "DescribeImages", "GetCallerIdentity", "ListBuckets"]))


def sg_rule_response(rng, request_id, group, port, cidr):
    rule = "sgr-" + rand_str(rng, 17, HEX)
    return {"requestId": request_id, "_return": True, "securityGroupRuleSet": {"items": [{
        "groupOwnerId": ACCOUNT, "groupId": group, "securityGroupRuleId": rule,
        "securityGroupRuleArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group-rule/{rule}",
        "isEgress": False, "ipProtocol": "tcp", "fromPort": port, "toPort": port, "cidrIpv4": cidr}]}}


def authorize_ingress(trail, s, t, group, port, cidr):
    req = {"groupId": group, "ipPermissions": {"items": [{
        "ipProtocol": "tcp", "fromPort": port, "toPort": port, "groups": {},
        "ipRanges": {"items": [{"cidrIp": cidr}]}, "ipv6Ranges": {}, "prefixListIds": {}}]}}
    rid = trail.uuid()
    return trail.call(s, t, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", req,
                      sg_rule_response(trail.rng, rid, group, port, cidr), request_id=rid,
                      lookup=[("AWS::EC2::SecurityGroup", group)])


def bob_changes(trail):
    """The benign changes: a private Postgres rule on 11-05, restarting the trail on 11-12."""
    rng = trail.rng
    s = trail.login("bob", at(5, 15, 10, 31))
    trail.read(s, at(5, 15, 18, 4), "DescribeSecurityGroups")
    authorize_ingress(trail, s, at(5, 15, 22, 47), "sg-0f1e2d3c4b5a69788", 5432, "10.0.0.0/16")
    s = trail.login("bob", at(12, 14, 4, 12))  # not recorded: the trail is still stopped
    trail.call(s, STOPPED[1], "cloudtrail.amazonaws.com", "StartLogging", {"name": TRAIL_ARN}, None,
               lookup=[("AWS::CloudTrail::Trail", TRAIL_ARN)])
    trail.read(s, at(12, 14, 10, 41), "GetTrailStatus")
    trail.read(s, at(12, 14, 12, 5), "LookupEvents")


def attack(trail):
    """2026-11-12: alice's password guessed from Ukraine, SSM role on the web host, SSH opened,
    a backdoor admin user, and the trail stopped. Returns the eventIDs the detections key on."""
    rng, ids = trail.rng, {}
    for i in range(11):  # 03:05 - 03:12
        trail.login("alice", at(12, 3, 5, 0) + timedelta(seconds=i * 40 + rng.randint(0, 25)),
                    ATTACKER_IP, ATTACK_UA, success=False)
    s = trail.login("alice", at(12, 3, 17, 42), ATTACKER_IP, ATTACK_UA)
    ids["hijack_login"] = trail.events[-1]["eventID"]
    t = at(12, 3, 18, 5)
    for name in ["DescribeInstances", "DescribeInstanceStatus", "DescribeSecurityGroups", "DescribeVpcs",
                 "DescribeSubnets", "GetAccountSummary", "ListUsers", "ListRoles", "DescribeInstances",
                 "ListInstanceProfiles", "DescribeIamInstanceProfileAssociations", "DescribeSecurityGroups"]:
        trail.read(s, t, name)
        t += timedelta(seconds=rng.randint(30, 65))

    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{SSM_ROLE}"
    profile_arn = f"arn:aws:iam::{ACCOUNT}:instance-profile/{SSM_ROLE}"
    profile_id, t = "AIPA" + rand_str(rng, 16), at(12, 3, 32, 10)
    trail.call(s, t, "iam.amazonaws.com", "CreateRole",
               {"roleName": SSM_ROLE, "description": "EC2 role for SSM for Quick-Setup",
                "assumeRolePolicyDocument": trust},
               {"role": {"path": "/", "roleName": SSM_ROLE, "roleId": "AROA" + rand_str(rng, 16), "arn": role_arn,
                         "createDate": java_date(t), "assumeRolePolicyDocument": urllib.parse.quote(trust, safe="")}},
               lookup=[("AWS::IAM::Role", SSM_ROLE)])
    policy = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    trail.call(s, at(12, 3, 33, 2), "iam.amazonaws.com", "AttachRolePolicy",
               {"roleName": SSM_ROLE, "policyArn": policy},
               lookup=[("AWS::IAM::Policy", policy), ("AWS::IAM::Role", SSM_ROLE)])
    t = at(12, 3, 35, 26)
    trail.call(s, t, "iam.amazonaws.com", "CreateInstanceProfile", {"instanceProfileName": SSM_ROLE},
               {"instanceProfile": {"path": "/", "instanceProfileName": SSM_ROLE, "instanceProfileId": profile_id,
                                    "arn": profile_arn, "createDate": java_date(t), "roles": []}},
               lookup=[("AWS::IAM::InstanceProfile", SSM_ROLE)])
    trail.call(s, at(12, 3, 36, 3), "iam.amazonaws.com", "AddRoleToInstanceProfile",
               {"instanceProfileName": SSM_ROLE, "roleName": SSM_ROLE},
               lookup=[("AWS::IAM::InstanceProfile", SSM_ROLE), ("AWS::IAM::Role", SSM_ROLE)])
    rid = trail.uuid()
    ev = trail.call(s, at(12, 3, 39, 51), "ec2.amazonaws.com", "AssociateIamInstanceProfile",
                    {"AssociateIamInstanceProfileRequest": {
                        "InstanceId": VICTIM_INSTANCE, "IamInstanceProfile": {"Name": SSM_ROLE}}},
                    {"AssociateIamInstanceProfileResponse": {
                        "xmlns": "http://ec2.amazonaws.com/doc/2016-11-15/", "requestId": rid,
                        "iamInstanceProfileAssociation": {
                            "associationId": "iip-assoc-0123456789abcdef0", "instanceId": VICTIM_INSTANCE,
                            "iamInstanceProfile": {"arn": profile_arn, "id": profile_id}, "state": "associating"}}},
                    request_id=rid, lookup=[("AWS::EC2::Instance", VICTIM_INSTANCE)])
    ids["associate_instance_profile"] = ev["eventID"]

    trail.read(s, at(12, 3, 43, 20), "DescribeInstanceInformation")
    session_id = "alice-" + rand_str(rng, 26, string.ascii_lowercase + string.digits)
    trail.call(s, at(12, 3, 45, 8), "ssm.amazonaws.com", "StartSession", {"target": VICTIM_INSTANCE},
               {"sessionId": session_id, "tokenValue": "Value hidden due to security reasons.",
                "streamUrl": f"wss://ssmmessages.{REGION}.amazonaws.com/v1/data-channel/{session_id}"
                             "?role=publish_subscribe&cell-number=AAEAAfJx0d2A"},
               lookup=[("AWS::EC2::Instance", VICTIM_INSTANCE)])

    trail.read(s, at(12, 4, 3, 36), "DescribeSecurityGroups",
               {"securityGroupSet": {}, "securityGroupIdSet": {"items": [{"groupId": VICTIM_SG}]}, "filterSet": {}})
    ev = authorize_ingress(trail, s, at(12, 4, 5, 12), VICTIM_SG, 22, f"{ATTACKER_IP}/32")
    ids["security_group_ingress"] = ev["eventID"]

    new_user, t = "backup-admin", at(12, 4, 12, 9)
    trail.read(s, at(12, 4, 11, 30), "ListUsers")
    ev = trail.call(s, t, "iam.amazonaws.com", "CreateUser", {"userName": new_user},
                    {"user": {"path": "/", "userName": new_user, "userId": "AIDA" + rand_str(rng, 16),
                              "arn": f"arn:aws:iam::{ACCOUNT}:user/{new_user}", "createDate": java_date(t)}},
                    lookup=[("AWS::IAM::User", new_user)])
    ids["create_user"] = ev["eventID"]
    key, t = "AKIA" + rand_str(rng, 16), at(12, 4, 13, 5)
    trail.call(s, t, "iam.amazonaws.com", "CreateAccessKey", {"userName": new_user},
               {"accessKey": {"userName": new_user, "accessKeyId": key, "status": "Active",
                              "createDate": java_date(t)}},
               lookup=[("AWS::IAM::AccessKey", key), ("AWS::IAM::User", new_user)])
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    trail.call(s, at(12, 4, 14, 22), "iam.amazonaws.com", "AttachUserPolicy",
               {"userName": new_user, "policyArn": admin},
               lookup=[("AWS::IAM::Policy", admin), ("AWS::IAM::User", new_user)])

    trail.read(s, at(12, 5, 36, 40), "DescribeTrails")
    trail.read(s, at(12, 5, 38, 2), "GetTrailStatus")
    ids["stop_logging"] = trail.call(s, STOPPED[0], "cloudtrail.amazonaws.com", "StopLogging", {"name": TRAIL_ARN},
                                     lookup=[("AWS::CloudTrail::Trail", TRAIL_ARN)])["eventID"]
    return ids


def write_trail(trail):
    """S3 delivery: one gzip object per 6-hour window, records slightly out of order."""
    rng = random.Random(SEED + "/delivery")
    kept = [e for e in trail.events if not STOPPED[0] < datetime.strptime(
        e["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) < STOPPED[1]]
    windows = {}
    for ev in sorted(kept, key=lambda e: e["eventTime"]):
        windows.setdefault(ev["eventTime"][:11] + f"{int(ev['eventTime'][11:13]) // 6 * 6:02d}", []).append(ev)
    texts = {}
    for window, events in sorted(windows.items()):
        last = datetime.strptime(events[-1]["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
        end = datetime.strptime(window, "%Y-%m-%dT%H") + timedelta(hours=6)
        # Objects are named for their delivery time, a few minutes after their last event.
        named = min(last.replace(second=0, minute=last.minute // 5 * 5), end - timedelta(minutes=10))
        named += timedelta(minutes=5)
        for i in range(len(events) - 1):
            if rng.random() < 0.2:
                j = min(len(events) - 1, i + rng.randint(1, 3))
                events[i], events[j] = events[j], events[i]
        strings = [compact(e) for e in events]
        texts.update((e["eventID"], s) for e, s in zip(events, strings))
        name = (f"{ACCOUNT}_CloudTrail_{REGION}_{named:%Y%m%dT%H%MZ}_"
                f"{rand_str(rng, 16, ALNUM)}.json.gz")
        path = OUT / "cloudtrail/AWSLogs" / ACCOUNT / "CloudTrail" / REGION / f"{named:%Y/%m/%d}" / name
        write_gz(path, ('{"Records":[' + ",".join(strings) + "]}").encode())
    return texts


def write_lookup(trail, texts):
    """A LookupEvents export of alice's night: the same events as the trail, newest first."""
    lo, hi = iso(at(12, 3)), iso(at(12, 6))
    mine = [e for e in trail.events if e["userIdentity"].get("userName") == "alice" and lo <= e["eventTime"] < hi]
    out = []
    for ev in sorted(mine, key=lambda e: e["eventTime"], reverse=True):
        entry = {"EventId": ev["eventID"], "EventName": ev["eventName"], "ReadOnly": str(ev["readOnly"]).lower()}
        if ev["userIdentity"].get("accessKeyId"):
            entry["AccessKeyId"] = ev["userIdentity"]["accessKeyId"]
        t = datetime.strptime(ev["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        entry.update({"EventTime": float(int(t.timestamp())), "EventSource": ev["eventSource"], "Username": "alice",
                      "Resources": trail.resources[ev["eventID"]], "CloudTrailEvent": texts[ev["eventID"]]})
        out.append(entry)
    path = OUT / "lookup-events/alice-2026-11-12.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"Events": out}, indent=4) + "\n")


# ---------------------------------------------------------------- VPC flow logs

ENIS = {VICTIM_ENI: {"ip": VICTIM_IP, "subnet": "subnet-0a1b2c3d4e5f67890", "instance": VICTIM_INSTANCE,
                     "az": "use1-az1"},
        DB_ENI: {"ip": DB_IP, "subnet": "subnet-0b1c2d3e4f5a67891", "instance": "i-0b1c2d3e4f5a67891",
                 "az": "use1-az2"}}
V2 = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
      "log-status")
V5 = V2 + (" vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id flow-direction "
           "traffic-path")


class Flows:
    def __init__(self):
        self.rng = random.Random(SEED + "/flows")
        self.records, self.seen = [], set()
        r = self.rng
        self.clients = [f"{r.choice([73, 24, 98, 71, 76, 108, 174, 99, 67, 68])}.{r.randint(1, 254)}."
                        f"{r.randint(0, 255)}.{r.randint(1, 254)}" for _ in range(60)]
        self.scanners = [f"{p}.{r.randint(1, 254)}" for p in ["45.148.10", "185.224.128", "193.163.125", "89.248.165",
                         "162.142.125", "167.94.138", "80.82.77", "205.210.31", "198.235.24", "147.185.132",
                         "71.6.199", "92.63.197"]]
        self.aws = ([f"52.94.{r.randint(0, 255)}.{r.randint(1, 254)}" for _ in range(6)],
                    [f"3.5.{r.randint(0, 31)}.{r.randint(1, 254)}" for _ in range(6)])

    def packets(self, nbytes):
        return max(1, min(nbytes // 40, nbytes // self.rng.randint(500, 1400)))

    def record(self, eni, src, dst, sport, dport, nbytes, start, dur, direction, flags, path="-",
               action="ACCEPT", packets=None):
        start = int(start.timestamp())
        while (eni, src, dst, sport, dport, start) in self.seen:
            start += 1
        self.seen.add((eni, src, dst, sport, dport, start))
        self.records.append({"eni": eni, "src": src, "dst": dst, "sport": sport, "dport": dport, "proto": 6,
                             "packets": packets or self.packets(nbytes), "bytes": nbytes, "start": start,
                             "end": start + dur, "action": action, "status": "OK", "flags": flags,
                             "direction": direction, "path": path})

    def conversation(self, eni, remote, lport, rport, start, dur, out_bytes, in_bytes, outbound, path, flags=None):
        """One TCP flow seen on an ENI: its egress and its ingress record."""
        out_flags, in_flags = flags or ((3, 19) if outbound else (19, 3))
        local = ENIS[eni]["ip"]
        self.record(eni, local, remote, lport, rport, out_bytes, start, dur, "egress", out_flags, path)
        self.record(eni, remote, local, rport, lport, in_bytes, start, dur, "ingress", in_flags)

    def nodata(self, eni, start):
        s = int(start.timestamp())
        self.records.append({"eni": eni, "status": "NODATA", "start": s, "end": s + 60})


def benign_hour(flows, t, db_quiet):
    rng = flows.rng
    ephemeral = lambda: rng.randint(32768, 60999)  # noqa: E731
    minute = lambda: t + timedelta(seconds=rng.randint(0, 3540))  # noqa: E731
    busy = 13 <= t.hour <= 23
    for _ in range(rng.randint(1, 3) + busy):  # web clients
        flows.conversation(VICTIM_ENI, rng.choice(flows.clients), 443, ephemeral(), minute(), rng.randint(1, 45),
                           rng.randint(1_500, 60_000), rng.randint(400, 3_000), False, "-")
    for _ in range(rng.randint(1, 2)):  # AWS APIs over the internet gateway, S3 over the gateway endpoint
        s3 = rng.random() < 0.5
        dst = rng.choice(flows.aws[1] if s3 else flows.aws[0])
        flows.conversation(VICTIM_ENI, dst, ephemeral(), 443, minute(), rng.randint(1, 50),
                           rng.randint(1_000, 200_000), rng.randint(2_000, 2_000_000 if s3 else 40_000), True,
                           "7" if s3 else "8")
    if rng.random() < 0.6:  # internet scanners against the closed ports
        n = rng.randint(1, 3)
        flows.record(VICTIM_ENI, rng.choice(flows.scanners), VICTIM_IP, ephemeral(), rng.choice([22, 22, 3389]),
                     44 * n, minute(), rng.randint(0, 20), "ingress", 2, action="REJECT", packets=n)
    if db_quiet:
        flows.nodata(DB_ENI, t + timedelta(minutes=rng.randint(0, 50)))
        return
    start, port, q, r = minute(), ephemeral(), rng.randint(2_000, 40_000), rng.randint(5_000, 400_000)
    flows.conversation(VICTIM_ENI, DB_IP, port, 5432, start, 30, q, r, True, "1")
    flows.conversation(DB_ENI, VICTIM_IP, 5432, port, start, 30, r, q, False, "1")
    if t.hour == 2:  # nightly pg_dump by the backup host
        flows.conversation(DB_ENI, BACKUP_IP, 5432, ephemeral(), t + timedelta(minutes=rng.randint(0, 5)), 600,
                           rng.randint(50_000_000, 150_000_000), rng.randint(200_000, 900_000), False, "1")


def attack_flows(flows):
    """The attacker's SSH into the web host (refused before 04:05, then accepted) and the exfiltration."""
    rng = flows.rng
    for m in (1, 2):
        flows.record(VICTIM_ENI, ATTACKER_IP, VICTIM_IP, rng.randint(50000, 60000), 22, 120,
                     at(12, 4, m, rng.randint(0, 50)), 3, "ingress", 2, action="REJECT", packets=2)
    flows.conversation(VICTIM_ENI, ATTACKER_IP, 22, rng.randint(50000, 60000), at(12, 4, 7, 3), 38,
                       4_180, 3_560, False, "8")
    port = rng.randint(50000, 60000)
    for i, flags in enumerate([(18, 2), (0, 0), (1, 1)]):
        flows.conversation(VICTIM_ENI, ATTACKER_IP, 22, port, at(12, 4, 9 + 10 * i, 14), 590,
                           rng.randint(40_000, 900_000), rng.randint(6_000, 40_000), False, "8", flags)
    ports = [rng.randint(40000, 60000) for _ in range(2)]
    weights = [rng.uniform(0.85, 1.15) for _ in range(12)]
    for w in range(6):  # 04:30 - 05:30, two parallel uploads, ten-minute aggregation windows
        for c, lport in enumerate(ports):
            out_bytes = int(3_200_000_000 * weights[2 * w + c] / sum(weights))
            out_packets = out_bytes // 1448 + 1
            flags = (2, 18) if w == 0 else (1, 1) if w == 5 else (0, 0)
            start = at(12, 4, 30 + 10 * w, 2 + c)
            flows.record(VICTIM_ENI, VICTIM_IP, ATTACKER_IP, lport, 443, out_bytes, start, 595, "egress",
                         flags[0], "8", packets=out_packets)
            flows.record(VICTIM_ENI, ATTACKER_IP, VICTIM_IP, 443, lport, out_packets // 2 * 52, start, 595, "ingress",
                         flags[1], packets=out_packets // 2)


def render(r, v5):
    eni = ENIS[r["eni"]]
    if r["status"] == "NODATA":
        fields = [r["eni"]] + ["-"] * 7 + [r["start"], r["end"], "-", "NODATA"]
        extra = [VPC, eni["subnet"], eni["instance"], "-", "-", "-", "-", REGION, eni["az"], "-", "-"]
    else:
        fields = [r["eni"], r["src"], r["dst"], r["sport"], r["dport"], r["proto"], r["packets"], r["bytes"],
                  r["start"], r["end"], r["action"], r["status"]]
        extra = [VPC, eni["subnet"], eni["instance"], r["flags"], "IPv4", r["src"], r["dst"], REGION, eni["az"],
                 r["direction"], r["path"] if r["direction"] == "egress" else "-"]
    return " ".join(str(f) for f in ["5" if v5 else "2", ACCOUNT] + fields + (extra if v5 else []))


def write_flows(flows):
    rng = random.Random(SEED + "/flow-delivery")
    for day in range(1, DAYS + 1):
        v5 = day >= 8
        lo, hi = int(at(day, 0).timestamp()), int(at(day + 1, 0).timestamp())
        lines = sorted(((r["start"], r["eni"], render(r, v5)) for r in flows.records if lo <= r["start"] < hi))
        texts = [line for _, _, line in lines]
        assert len(set(texts)) == len(texts), f"duplicate flow records on day {day}"
        name = f"{ACCOUNT}_vpcflowlogs_{REGION}_{FLOW_LOG_ID}_{at(day, 0):%Y%m%dT%H%MZ}_{rng.getrandbits(32):08x}"
        name += ".log.gz"
        path = OUT / "vpcflowlogs/AWSLogs" / ACCOUNT / "vpcflowlogs" / REGION / f"{at(day, 0):%Y/%m/%d}" / name
        write_gz(path, ("\n".join([V5 if v5 else V2] + texts) + "\n").encode())


# ---------------------------------------------------------------- expectations, read back from disk


def expected(attack_ids):
    events = {}
    files = sorted((OUT / "cloudtrail").rglob("*.json.gz"))
    for f in files:
        for ev in json.loads(gzip.decompress(f.read_bytes()))["Records"]:
            events[ev["eventID"]] = ev
    lookup = json.loads((OUT / "lookup-events/alice-2026-11-12.json").read_text())["Events"]
    for entry in lookup:  # re-importing the export must add nothing
        assert json.loads(entry["CloudTrailEvent"]) == events[entry["EventId"]]
    counts, logins = {}, {}
    for ev in events.values():
        counts[ev["eventName"]] = counts.get(ev["eventName"], 0) + 1
        if ev["eventName"] == "ConsoleLogin":
            who = logins.setdefault(ev["userIdentity"]["userName"], {"success": 0, "failure": 0})
            who[ev["responseElements"]["ConsoleLogin"].lower()] += 1
    assert all(i in events for i in attack_ids.values())
    flow_files, records, exfil = sorted((OUT / "vpcflowlogs").rglob("*.log.gz")), 0, 0
    for f in flow_files:
        header, *lines = gzip.decompress(f.read_bytes()).decode().splitlines()
        names = header.split()
        for line in lines:
            rec = dict(zip(names, line.split()))
            records += 1
            if rec["srcaddr"] == VICTIM_IP and rec["dstaddr"] == ATTACKER_IP:
                exfil += int(rec["bytes"])
    return {"cloudtrail_files": len(files), "cloudtrail_events": len(events), "lookup_events": len(lookup),
            "flow_files": len(flow_files), "flow_records": records, "attacker_ip": ATTACKER_IP,
            "attack_event_ids": attack_ids, "event_counts_by_name": dict(sorted(counts.items())),
            "exfil_bytes_to_attacker": exfil, "console_logins": dict(sorted(logins.items()))}


README = """# Sample incident

A synthetic, deterministic dataset for trying Skywarden end to end: two weeks
(2026-11-01 to 2026-11-14, UTC) of CloudTrail and VPC flow logs for AWS account
111122223333 in us-east-1, with a console account hijack on 2026-11-12 modelled on the
scenario in Optiv's "The Evolution of Cloud Forensics and Incident Response". Written for
Skywarden by `generate.py` (which also writes this file); released under CC0. No real
account, person or log is in it.

    python3 samples/generate.py    # rewrites samples/incident/ byte for byte

## Layout

- `incident/cloudtrail/AWSLogs/...`: {cloudtrail_files} gzip objects as S3 delivers them, one per
  six hours, {cloudtrail_events} events (management events plus S3 object data events). There is no
  object for 06:00-12:00 on 11-12: the trail was stopped.
- `incident/lookup-events/alice-2026-11-12.json`: a LookupEvents export of alice's events
  03:00-06:00 on 11-12 ({lookup_events} events, all also in the trail; importing both must not
  double them).
- `incident/vpcflowlogs/AWSLogs/...`: {flow_files} daily gzip objects of flow log
  {flow_log}, {flow_records} records; default v2 format for 11-01..11-07, custom v5 (with
  flow-direction and traffic-path) for 11-08..11-14. ENIs: {victim_eni} (web host
  {victim_ip}, {victim}) and {db_eni} (database {db_ip}, internal only).
- `incident.expected.json`: counts and ids a correct import and detection run must find,
  computed from the written files.

## The cast

alice (developer, 73.202.18.40, console without MFA and CLI, workdays ~14:00-17:00Z),
bob (ops, 24.5.122.8), carol (London, 81.2.69.142), deploy-bot (CI access key from
52.94.236.248, aws-cli/boto3). Benign noise: logins with the odd single typo, Describe/List/Get
calls, hourly S3 GetObject/PutObject and AssumeRole by deploy-bot, and one benign security-group
rule by bob on 11-05 (sg-0f1e2d3c4b5a69788, tcp 5432 from 10.0.0.0/16).

## The attack, 2026-11-12 (UTC), all from {attacker} (Ukraine)

| time | event | eventID |
|---|---|---|
| 03:05-03:12 | 11 failed ConsoleLogin for alice | |
| 03:17:42 | ConsoleLogin success for alice, MFAUsed No (her last login: 11-11 22:48 from 73.202.18.40, 4.5 h earlier: impossible travel) | `{hijack_login}` |
| 03:18-03:30 | console browsing (DescribeInstances, ListRoles, GetAccountSummary, ...) | |
| 03:32-03:36 | CreateRole, AttachRolePolicy AmazonSSMManagedInstanceCore, CreateInstanceProfile, AddRoleToInstanceProfile ({ssm_role}) | |
| 03:39:51 | AssociateIamInstanceProfile on {victim} (iip-assoc-0123456789abcdef0) | `{associate_instance_profile}` |
| 03:45:08 | ssm StartSession on {victim} | |
| 04:01-04:02 | flow logs: SSH from {attacker} to {victim_ip}:22 REJECTed | |
| 04:05:12 | AuthorizeSecurityGroupIngress {victim_sg} tcp 22 from {attacker}/32 | `{security_group_ingress}` |
| 04:07-04:39 | flow logs: SSH sessions accepted | |
| 04:12:09 | CreateUser backup-admin, then CreateAccessKey (04:13) and AttachUserPolicy AdministratorAccess (04:14) | `{create_user}` |
| 04:30-05:30 | flow logs: {exfil_gb:.2f} GB from {victim_ip} to {attacker}:443 | |
| 05:40:17 | StopLogging on management-trail (the attacker's last event) | `{stop_logging}` |
| 14:10:00 | StartLogging by bob from 24.5.122.8 (recovery) | |
"""


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    trail = Trail()
    for day in range(1, DAYS + 1):
        user_day(trail, day)
        deploy_bot_day(trail, day)
    bob_changes(trail)
    attack_ids = attack(trail)
    texts = write_trail(trail)
    write_lookup(trail, texts)

    flows = Flows()
    for day in range(1, DAYS + 1):
        quiet = flows.rng.randrange(24)
        for hour in range(24):
            benign_hour(flows, at(day, hour), hour == quiet)
    attack_flows(flows)
    write_flows(flows)

    exp = expected(attack_ids)
    (OUT.parent / "incident.expected.json").write_text(json.dumps(exp, indent=2) + "\n")
    (HERE / "README.md").write_text(README.format(
        **exp, **exp["attack_event_ids"], attacker=ATTACKER_IP, flow_log=FLOW_LOG_ID, victim_eni=VICTIM_ENI,
        victim_ip=VICTIM_IP, victim=VICTIM_INSTANCE, victim_sg=VICTIM_SG, db_eni=DB_ENI, db_ip=DB_IP,
        ssm_role=SSM_ROLE, exfil_gb=exp["exfil_bytes_to_attacker"] / 1e9))
    print(json.dumps({k: v for k, v in exp.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes samples/incident.config.json: two configuration snapshots of the sample incident's
account 111122223333 (skywarden.snapshot/v1), one before the attack (2026-11-12 00:00 UTC) and one
after it (06:00, the trail stopped at 05:40). Deterministic; released under CC0 like the rest of
the sample. The shapes are those Skywarden's collectors store (src/ingest/snapshots/collect.rs).

    python3 samples/config_snapshot.py
"""

import copy
import json
import os

ACCOUNT = "111122223333"
REGION = "us-east-1"
VPC = "vpc-0a1b2c3d4e5f67890"


def arn(kind, rid):
    return "arn:aws:ec2:%s:%s:%s/%s" % (REGION, ACCOUNT, kind, rid)


def rule(protocol, port, **source):
    entry = {"protocol": protocol, "from_port": port, "to_port": port, "description": source.pop("description", None)}
    entry.update(source)
    return entry


def group(gid, name, description, ingress, egress=None):
    return {
        "type": "ec2:security-group", "id": gid, "arn": arn("security-group", gid), "name": name,
        "config": {
            "group_id": gid, "group_name": name, "description": description, "vpc_id": VPC, "owner_id": ACCOUNT,
            "tags": {}, "ingress": ingress,
            "egress": egress if egress is not None else [{"protocol": "all", "from_port": None, "to_port": None, "cidr_ipv4": "0.0.0.0/0", "description": None}],
        },
    }


def instance(profile):
    return {
        "type": "ec2:instance", "id": "i-0a1b2c3d4e5f67890", "arn": arn("instance", "i-0a1b2c3d4e5f67890"), "name": "web-1",
        "config": {
            "instance_id": "i-0a1b2c3d4e5f67890", "instance_type": "t3.small", "image_id": "ami-0c55b159cbfafe1f0",
            "vpc_id": VPC, "subnet_id": "subnet-0a1b2c3d4e5f67890", "private_ip": "10.0.1.25", "public_ip": "54.210.33.17",
            "iam_instance_profile_arn": profile, "security_group_ids": ["sg-0a1b2c3d4e5f67890"], "key_name": "web",
            "platform": None, "platform_details": "Linux/UNIX",
            "metadata_options": {"http_tokens": "optional", "http_endpoint": "enabled", "http_put_response_hop_limit": 1,
                                 "http_protocol_ipv6": "disabled", "instance_metadata_tags": "disabled"},
            "tags": {"Name": "web-1"}, "network_interface_ids": ["eni-0a1b2c3d4e5f67890"],
            "observed": {"state": "running", "launch_time": "2026-10-20T09:12:44Z", "metadata_options_state": "applied"},
        },
    }


def trail(logging):
    return {
        "type": "cloudtrail:trail", "id": "arn:aws:cloudtrail:us-east-1:%s:trail/management-trail" % ACCOUNT,
        "arn": "arn:aws:cloudtrail:us-east-1:%s:trail/management-trail" % ACCOUNT, "name": "management-trail",
        "config": {
            "name": "management-trail", "home_region": REGION, "s3_bucket_name": "aws-cloudtrail-logs-%s" % ACCOUNT,
            "s3_key_prefix": None, "sns_topic_arn": None, "is_multi_region": True, "is_organization_trail": False,
            "log_file_validation": False, "kms_key_id": None, "cloud_watch_logs_log_group_arn": None,
            "cloud_watch_logs_role_arn": None, "include_global_service_events": True, "has_custom_event_selectors": False,
            "has_insight_selectors": False,
            "event_selectors": {"event_selectors": [{"read_write_type": "All", "include_management_events": True,
                                                     "data_resources": [], "exclude_management_event_sources": []}],
                                "advanced_event_selectors": []},
            "is_logging": logging, "start_logging_time": "2026-10-01T08:00:00Z",
            "stop_logging_time": None if logging else "2026-11-12T05:40:17Z",
            "observed": {"latest_delivery_time": "2026-11-12T05:35:00Z", "latest_delivery_error": None,
                         "latest_notification_time": None, "latest_notification_error": None,
                         "latest_cloud_watch_logs_delivery_time": None, "latest_cloud_watch_logs_delivery_error": None,
                         "latest_digest_delivery_time": None, "latest_digest_delivery_error": None},
        },
    }


def user(name, console, mfa, keys, attached=(), groups=(), last_used=None, created="2026-03-02T10:00:00Z"):
    return {
        "type": "iam:user", "id": name, "arn": "arn:aws:iam::%s:user/%s" % (ACCOUNT, name), "name": name,
        "config": {
            "user_name": name, "user_id": "AIDA" + (name.upper().replace("-", "") + "X" * 17)[:17],
            "arn": "arn:aws:iam::%s:user/%s" % (ACCOUNT, name), "path": "/", "create_date": created,
            "attached_policies": sorted(attached), "inline_policies": {}, "groups": sorted(groups),
            "permissions_boundary": None, "tags": {},
            "mfa_devices": ["arn:aws:iam::%s:mfa/%s" % (ACCOUNT, name)] if mfa else [], "mfa_active": mfa,
            "password_enabled": console,
            "access_keys": [{"access_key_id": key, "status": "Active", "create_date": date} for key, date in keys],
            "observed": {"credential_report_generated_at": "2026-11-11T23:30:00Z", "password_last_used": last_used,
                         "password_last_changed": None,
                         "access_key_1_last_used_date": "2026-11-11T22:00:00Z" if keys else None,
                         "access_key_1_last_used_region": REGION if keys else None,
                         "access_key_1_last_used_service": "s3" if keys else None,
                         "access_key_2_last_used_date": None, "access_key_2_last_used_region": None,
                         "access_key_2_last_used_service": None},
        },
    }


def snapshot(after):
    web_ingress = [rule("tcp", 443, cidr_ipv4="0.0.0.0/0"), rule("tcp", 80, cidr_ipv4="0.0.0.0/0")]
    if after:
        web_ingress.append(rule("tcp", 22, cidr_ipv4="176.36.10.20/32"))
    profile_arn = "arn:aws:iam::%s:instance-profile/AmazonSSMRoleForInstancesQuickSetup" % ACCOUNT
    regional = [
        {"type": "ec2:vpc", "id": VPC, "arn": arn("vpc", VPC), "name": "prod",
         "config": {"vpc_id": VPC, "cidr_block": "10.0.0.0/16", "cidr_blocks": ["10.0.0.0/16"], "ipv6_cidr_blocks": [],
                    "is_default": False, "state": "available", "dhcp_options_id": "dopt-0a1b2c3d", "instance_tenancy": "default",
                    "tags": {"Name": "prod"}, "owner_id": ACCOUNT}},
        # The flow log is on the web host's interface only, not on the VPC.
        {"type": "ec2:flow-log", "id": "fl-0a1b2c3d4e5f67890", "arn": None, "name": None,
         "config": {"flow_log_id": "fl-0a1b2c3d4e5f67890", "resource_id": "eni-0a1b2c3d4e5f67890", "traffic_type": "ALL",
                    "log_destination_type": "s3", "log_destination": "arn:aws:s3:::vpc-flow-logs-%s" % ACCOUNT,
                    "log_group_name": None, "log_format": None, "flow_log_status": "ACTIVE", "deliver_logs_status": "SUCCESS",
                    "deliver_logs_permission_arn": None, "deliver_cross_account_role": None, "max_aggregation_interval": 600,
                    "destination_options": {"file_format": "plain-text", "hive_compatible_partitions": False, "per_hour_partition": False},
                    "creation_time": "2026-10-31T12:00:00Z", "tags": {}, "observed": {"deliver_logs_error_message": None}}},
        group("sg-0a1b2c3d4e5f67890", "web", "web servers", web_ingress),
        group("sg-0f1e2d3c4b5a69788", "database", "postgres", [rule("tcp", 5432, cidr_ipv4="10.0.0.0/16", description="app subnets")]),
        group("sg-0c1d2e3f4a5b6c7d8", "default", "default VPC security group",
              [{"protocol": "all", "from_port": None, "to_port": None, "source_group_id": "sg-0c1d2e3f4a5b6c7d8",
                "source_group_owner_id": ACCOUNT, "vpc_peering_connection_id": None, "description": None}]),
        instance(profile_arn if after else None),
        trail(not after),
    ]
    users = [
        user("alice", True, False, [], groups=["developers"], last_used="2026-11-11T22:48:03Z"),
        user("bob", True, True, [], groups=["ops"], last_used="2026-11-11T16:02:11Z"),
        user("carol", True, True, [], groups=["developers"], last_used="2026-11-10T09:15:40Z"),
        user("deploy-bot", False, False, [("AKIAQX3DEPLOYBOT0001", "2025-06-01T08:00:00Z")], attached=["arn:aws:iam::%s:policy/deploy" % ACCOUNT]),
    ]
    roles, profiles = [], []
    if after:
        users.append(user("backup-admin", False, False, [("AKIAQX3BACKUPADMIN01", "2026-11-12T04:13:30Z")],
                          attached=["arn:aws:iam::aws:policy/AdministratorAccess"], created="2026-11-12T04:12:09Z"))
        roles.append({"type": "iam:role", "id": "AmazonSSMRoleForInstancesQuickSetup",
                      "arn": "arn:aws:iam::%s:role/AmazonSSMRoleForInstancesQuickSetup" % ACCOUNT, "name": "AmazonSSMRoleForInstancesQuickSetup",
                      "config": {"role_name": "AmazonSSMRoleForInstancesQuickSetup", "role_id": "AROAQX3SSMQUICKSETUP1",
                                 "arn": "arn:aws:iam::%s:role/AmazonSSMRoleForInstancesQuickSetup" % ACCOUNT, "path": "/",
                                 "create_date": "2026-11-12T03:32:10Z", "description": None,
                                 "assume_role_policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
                                 "attached_policies": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"], "inline_policies": {},
                                 "instance_profiles": [profile_arn], "max_session_duration": 3600, "permissions_boundary": None,
                                 "tags": {}, "observed": {"role_last_used": None}}})
        profiles.append({"type": "iam:instance-profile", "id": "AmazonSSMRoleForInstancesQuickSetup", "arn": profile_arn,
                         "name": "AmazonSSMRoleForInstancesQuickSetup",
                         "config": {"name": "AmazonSSMRoleForInstancesQuickSetup", "instance_profile_id": "AIPAQX3SSMQUICKSETUP1", "arn": profile_arn,
                                    "path": "/", "create_date": "2026-11-12T03:34:02Z",
                                    "roles": ["AmazonSSMRoleForInstancesQuickSetup"], "tags": {}}})
    root = {"type": "iam:root-account", "id": ACCOUNT, "arn": "arn:aws:iam::%s:root" % ACCOUNT, "name": "<root_account>",
            "config": {"arn": "arn:aws:iam::%s:root" % ACCOUNT, "user_creation_time": "2024-01-15T09:00:00Z", "mfa_active": True,
                       "access_key_1_active": False, "access_key_1_last_rotated": None, "access_key_2_active": False,
                       "access_key_2_last_rotated": None, "cert_1_active": False, "cert_2_active": False,
                       "observed": {"credential_report_generated_at": "2026-11-11T23:30:00Z", "password_last_used": "2026-02-01T10:00:00Z",
                                    "access_key_1_last_used_date": None, "access_key_1_last_used_region": None,
                                    "access_key_1_last_used_service": None, "access_key_2_last_used_date": None,
                                    "access_key_2_last_used_region": None, "access_key_2_last_used_service": None}}}
    policy = {"type": "iam:password-policy", "id": ACCOUNT, "arn": None, "name": None,
              "config": {"minimum_password_length": 8, "require_symbols": False, "require_numbers": True,
                         "require_uppercase_characters": True, "require_lowercase_characters": True,
                         "allow_users_to_change_password": True, "expire_passwords": False, "max_password_age": None,
                         "password_reuse_prevention": None, "hard_expiry": None}}
    return {
        "captured_at": "2026-11-12T06:00:00Z" if after else "2026-11-12T00:00:00Z",
        "regions": {
            REGION: {"collected": ["ec2:security-group", "ec2:instance", "ec2:vpc", "ec2:flow-log", "cloudtrail:trail"],
                     "resources": regional},
            "global": {"collected": ["iam:user", "iam:group", "iam:role", "iam:instance-profile", "iam:policy",
                                     "iam:root-account", "iam:password-policy"],
                       "resources": users + roles + profiles + [root, policy]},
        },
    }


def main():
    dump = {"format": "skywarden.snapshot/v1", "account_id": ACCOUNT, "snapshots": [snapshot(False), snapshot(True)]}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "incident.config.json")
    with open(path, "w") as handle:
        json.dump(dump, handle, indent=1, sort_keys=False)
        handle.write("\n")


if __name__ == "__main__":
    main()

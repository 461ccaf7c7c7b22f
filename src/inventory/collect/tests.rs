//! SDK shapes to configuration JSON, on hand-built SDK values.

use aws_sdk_ec2::types::{
    GroupIdentifier, Instance, InstanceState, InstanceStateName, IpPermission, IpRange, Ipv6Range, PrefixListId,
    Reservation, SecurityGroup, UserIdGroupPair,
};
use aws_sdk_iam::types::{AttachedPolicy, ManagedPolicyDetail, PolicyDetail, PolicyVersion, UserDetail};

use super::*;

const ENCODED_POLICY: &str = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AGetObject%22%2C%22Resource%22%3A%22arn%3Aaws%3As3%3A%3A%3Amy%20bucket%2F%2A%22%7D%5D%7D";

fn ssh_and_all_permissions() -> Vec<IpPermission> {
    vec![
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").description("ssh").build())
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build(),
        IpPermission::builder()
            .ip_protocol("-1")
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").user_id("111122223333").build())
            .prefix_list_ids(PrefixListId::builder().prefix_list_id("pl-1").build())
            .build(),
    ]
}

#[test]
fn rules_are_flattened_one_per_source() {
    let rules = flatten_rules(&ssh_and_all_permissions());
    assert_eq!(rules.len(), 5, "{rules:#?}");
    assert!(rules.contains(&json!({
        "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "0.0.0.0/0", "description": "ssh"
    })));
    assert!(rules.contains(&json!({
        "protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv6": "::/0", "description": null
    })));
    assert!(rules.contains(&json!({
        "protocol": "all", "from_port": null, "to_port": null, "source_group_id": "sg-2",
        "source_group_owner_id": "111122223333", "vpc_peering_connection_id": null, "description": null
    })));
    assert!(rules.contains(&json!({
        "protocol": "all", "from_port": null, "to_port": null, "prefix_list_id": "pl-1", "description": null
    })));
}

#[test]
fn rule_order_does_not_change_the_value() {
    let mut reversed = ssh_and_all_permissions();
    reversed.reverse();
    assert_eq!(flatten_rules(&ssh_and_all_permissions()), flatten_rules(&reversed));
}

#[test]
fn a_permission_without_sources_is_kept() {
    let permission = IpPermission::builder().ip_protocol("udp").from_port(53).to_port(53).build();
    assert_eq!(
        flatten_rules(&[permission]),
        vec![json!({"protocol": "udp", "from_port": 53, "to_port": 53, "description": null})]
    );
}

#[test]
fn security_group_config_builds_its_arn_and_tags() {
    let group = SecurityGroup::builder()
        .group_id("sg-1")
        .group_name("web")
        .owner_id("111122223333")
        .tags(aws_sdk_ec2::types::Tag::builder().key("env").value("prod").build())
        .set_ip_permissions(Some(ssh_and_all_permissions()))
        .build();
    let resource = security_group_config(&group, "eu-west-1").expect("a group with an id");
    assert_eq!(resource.resource_id, "sg-1");
    assert_eq!(resource.arn.as_deref(), Some("arn:aws:ec2:eu-west-1:111122223333:security-group/sg-1"));
    assert_eq!(resource.config["tags"], json!({"env": "prod"}));
    assert_eq!(resource.config["vpc_id"], Value::Null);
    assert_eq!(resource.config["egress"], json!([]));
    assert_eq!(resource.config["ingress"].as_array().map(Vec::len), Some(5));
}

#[test]
fn instance_config_sorts_groups_and_puts_state_under_observed() {
    let instance = Instance::builder()
        .instance_id("i-1")
        .security_groups(GroupIdentifier::builder().group_id("sg-b").build())
        .security_groups(GroupIdentifier::builder().group_id("sg-a").build())
        .state(InstanceState::builder().name(InstanceStateName::Running).build())
        .launch_time(DateTime::from_secs(1_700_000_000))
        .build();
    let reservation = Reservation::builder().owner_id("111122223333").instances(instance).build();
    let resource =
        instance_config(&reservation.instances()[0], reservation.owner_id(), "cn-north-1").expect("a running instance");
    assert_eq!(resource.config["security_group_ids"], json!(["sg-a", "sg-b"]));
    assert_eq!(resource.config["observed"]["state"], json!("running"));
    assert_eq!(resource.config["observed"]["launch_time"], json!("2023-11-14T22:13:20Z"));
    assert_eq!(resource.config["metadata_options"], Value::Null);
    assert_eq!(resource.arn.as_deref(), Some("arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-1"));

    let terminated = Instance::builder()
        .instance_id("i-2")
        .state(InstanceState::builder().name(InstanceStateName::Terminated).build())
        .build();
    assert!(instance_config(&terminated, None, "us-east-1").is_none());
}

#[test]
fn percent_decoding_handles_utf8_plus_and_stray_percent_signs() {
    assert_eq!(percent_decode("a%20b+c"), "a b+c");
    assert_eq!(percent_decode("caf%C3%A9"), "café");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%7b%7D"), "{}");
}

#[test]
fn policy_documents_are_decoded_to_json() {
    let document = policy_document(Some(ENCODED_POLICY));
    assert_eq!(document["Statement"][0]["Resource"], json!("arn:aws:s3:::my bucket/*"));
    assert_eq!(policy_document(Some(r#"{"Version":"2012-10-17"}"#)), json!({"Version": "2012-10-17"}));
    assert_eq!(policy_document(Some("not%20json")), json!("not json"));
    assert_eq!(policy_document(None), Value::Null);
}

const REPORT: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\r\n\
<root_account>,arn:aws:iam::111122223333:root,2020-01-01T00:00:00+00:00,not_supported,2024-05-01T10:00:00+00:00,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\r\n\
alice,arn:aws:iam::111122223333:user/alice,2021-02-03T04:05:06+00:00,true,no_information,2021-02-03T04:06:00+00:00,N/A,false,true,2021-02-03T04:05:30+00:00,2024-06-01T12:00:00+00:00,eu-west-1,s3,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\r\n";

#[test]
fn credential_report_rows_are_keyed_by_user_and_column() {
    let rows = parse_credential_report(REPORT);
    assert_eq!(rows.len(), 2);
    let alice = rows.get("alice");
    assert_eq!(report_bool(alice, "password_enabled"), Some(true));
    assert_eq!(report_text(alice, "access_key_1_last_used_service"), json!("s3"));
    assert_eq!(report_text(alice, "cert_2_last_rotated"), Value::Null);
    assert_eq!(report_date(alice, "access_key_1_last_used_date"), json!("2024-06-01T12:00:00Z"));
    assert_eq!(report_date(alice, "password_last_used"), Value::Null);
    assert_eq!(report_bool(rows.get("<root_account>"), "password_enabled"), None);
    assert_eq!(report_text(rows.get("bob"), "user"), Value::Null);
    assert!(parse_credential_report("").is_empty());
}

#[test]
fn user_config_merges_details_report_and_credentials() {
    let user = UserDetail::builder()
        .user_name("alice")
        .arn("arn:aws:iam::111122223333:user/alice")
        .group_list("ops")
        .group_list("dev")
        .attached_managed_policies(AttachedPolicy::builder().policy_arn("arn:aws:iam::aws:policy/b").build())
        .attached_managed_policies(AttachedPolicy::builder().policy_arn("arn:aws:iam::aws:policy/a").build())
        .user_policy_list(PolicyDetail::builder().policy_name("read").policy_document(ENCODED_POLICY).build())
        .build();
    let credentials = UserCredentials {
        mfa_devices: vec!["arn:aws:iam::111122223333:mfa/alice".into()],
        access_keys: vec![json!({"access_key_id": "AKIA1", "status": "Active", "create_date": null})],
        login_profile: None,
    };
    let rows = parse_credential_report(REPORT);
    let resource =
        user_config(&user, &credentials, rows.get("alice"), &json!("2024-06-02T00:00:00Z")).expect("a named user");
    let config = &resource.config;
    assert_eq!(resource.resource_id, "alice");
    assert_eq!(config["groups"], json!(["dev", "ops"]));
    assert_eq!(config["attached_policies"], json!(["arn:aws:iam::aws:policy/a", "arn:aws:iam::aws:policy/b"]));
    assert_eq!(config["inline_policies"]["read"]["Version"], json!("2012-10-17"));
    assert_eq!(config["mfa_active"], json!(true));
    assert_eq!(config["password_enabled"], json!(true));
    assert_eq!(config["permissions_boundary"], Value::Null);
    assert_eq!(config["observed"]["access_key_1_last_used_region"], json!("eu-west-1"));

    // A user newer than the report takes its password flag from GetLoginProfile.
    let fresh = UserCredentials { login_profile: Some(false), ..Default::default() };
    let resource = user_config(&user, &fresh, None, &Value::Null).expect("a named user");
    assert_eq!(resource.config["password_enabled"], json!(false));
    assert_eq!(resource.config["mfa_active"], json!(false));
    assert_eq!(resource.config["observed"]["password_last_used"], Value::Null);
}

#[test]
fn policy_config_takes_the_default_version_document() {
    let policy = ManagedPolicyDetail::builder()
        .policy_name("deploy")
        .arn("arn:aws:iam::111122223333:policy/deploy")
        .default_version_id("v2")
        .attachment_count(1)
        .is_attachable(true)
        .policy_version_list(PolicyVersion::builder().version_id("v1").document("%7B%7D").build())
        .policy_version_list(
            PolicyVersion::builder().version_id("v2").is_default_version(true).document(ENCODED_POLICY).build(),
        )
        .build();
    let resource = policy_config(&policy).expect("a policy with an ARN");
    assert_eq!(resource.resource_id, "arn:aws:iam::111122223333:policy/deploy");
    assert_eq!(resource.name.as_deref(), Some("deploy"));
    assert_eq!(resource.config["document"]["Statement"][0]["Action"], json!("s3:GetObject"));
    assert_eq!(resource.config["observed"]["update_date"], Value::Null);
}

#[test]
fn trail_config_splits_status_into_config_and_observed() {
    use aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput;
    use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
    use aws_sdk_cloudtrail::types::{AdvancedEventSelector, AdvancedFieldSelector, Trail};

    let trail = Trail::builder()
        .name("main")
        .trail_arn("arn:aws:cloudtrail:us-east-1:111122223333:trail/main")
        .home_region("us-east-1")
        .is_multi_region_trail(true)
        .build();
    let status = GetTrailStatusOutput::builder()
        .is_logging(true)
        .latest_delivery_time(DateTime::from_secs(1_700_000_000))
        .build();
    let selector = AdvancedEventSelector::builder()
        .name("management")
        .field_selectors(
            AdvancedFieldSelector::builder().field("eventCategory").equals("Management").build().expect("field is set"),
        )
        .build()
        .expect("field selectors are set");
    let selectors = event_selectors(&GetEventSelectorsOutput::builder().advanced_event_selectors(selector).build());
    let resource = trail_config(&trail, &status, selectors, "us-east-1").expect("a trail with an ARN");
    assert_eq!(resource.resource_id, "arn:aws:cloudtrail:us-east-1:111122223333:trail/main");
    assert_eq!(resource.config["is_logging"], json!(true));
    assert_eq!(resource.config["kms_key_id"], Value::Null);
    assert_eq!(resource.config["observed"]["latest_delivery_time"], json!("2023-11-14T22:13:20Z"));
    assert_eq!(
        resource.config["event_selectors"]["advanced_event_selectors"][0]["field_selectors"][0]["equals"],
        json!(["Management"])
    );
}

#[test]
fn tags_become_an_object() {
    let tags = [
        aws_sdk_ec2::types::Tag::builder().key("b").value("2").build(),
        aws_sdk_ec2::types::Tag::builder().key("a").build(),
        aws_sdk_ec2::types::Tag::builder().value("no key").build(),
    ];
    assert_eq!(ec2_tags(&tags), json!({"a": "", "b": "2"}));
    let iam = [aws_sdk_iam::types::Tag::builder().key("team").value("sec").build().expect("key and value")];
    assert_eq!(iam_tags(&iam), json!({"team": "sec"}));
}

#[test]
fn arns_use_the_region_partition() {
    assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    assert_eq!(partition("us-isob-east-1"), "aws-iso-b");
    assert_eq!(partition("eu-central-1"), "aws");
    assert_eq!(ec2_arn("us-east-1", None, "vpc", "vpc-1"), None);
}

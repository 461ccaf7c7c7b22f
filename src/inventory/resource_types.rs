//! The resource types a snapshot holds, named `service:kind`. Apart from the collectors so that
//! readers of stored or dumped snapshots need no AWS client (and build without the SDK).

pub const SECURITY_GROUP: &str = "ec2:security-group";
pub const INSTANCE: &str = "ec2:instance";
pub const VPC: &str = "ec2:vpc";
pub const FLOW_LOG: &str = "ec2:flow-log";
pub const TRAIL: &str = "cloudtrail:trail";
pub const IAM_USER: &str = "iam:user";
pub const IAM_GROUP: &str = "iam:group";
pub const IAM_ROLE: &str = "iam:role";
pub const IAM_INSTANCE_PROFILE: &str = "iam:instance-profile";
pub const IAM_POLICY: &str = "iam:policy";
/// The root user, from the credential report's `<root_account>` row; its id is the account id.
pub const IAM_ROOT_ACCOUNT: &str = "iam:root-account";
/// The account password policy (absent when none is set); its id is the account id.
pub const IAM_PASSWORD_POLICY: &str = "iam:password-policy";

/// Every resource type a snapshot collects.
pub const RESOURCE_TYPES: [&str; 12] = [
    SECURITY_GROUP,
    INSTANCE,
    VPC,
    FLOW_LOG,
    TRAIL,
    IAM_USER,
    IAM_GROUP,
    IAM_ROLE,
    IAM_INSTANCE_PROFILE,
    IAM_POLICY,
    IAM_ROOT_ACCOUNT,
    IAM_PASSWORD_POLICY,
];

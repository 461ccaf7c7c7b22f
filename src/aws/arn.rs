//! Role ARNs and account ids, parsed once: holding a `RoleArn` means it is well formed.

use std::fmt;
use std::str::FromStr;

/// A 12-digit AWS account id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArnError {
    #[error("`{0}` is not an AWS account id: expected 12 digits")]
    AccountId(String),
    #[error("`{value}` is not an IAM role ARN: {reason} (expected arn:aws:iam::123456789012:role/NAME)")]
    RoleArn { value: String, reason: &'static str },
}

impl AccountId {
    pub fn parse(value: &str) -> Result<Self, ArnError> {
        if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ArnError::AccountId(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn {
    arn: String,
    partition: String,
    account: AccountId,
    name: String,
}

const PARTITIONS: &[&str] =
    &["aws", "aws-us-gov", "aws-cn", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc"];
/// Characters IAM allows in role names and paths.
fn is_role_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

impl RoleArn {
    pub fn parse(value: &str) -> Result<Self, ArnError> {
        let fail = |reason| ArnError::RoleArn { value: value.to_owned(), reason };
        let value = value.trim();
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(fail("it does not have the six `:`-separated parts of an ARN"));
        }
        if !PARTITIONS.contains(&parts[1]) {
            return Err(fail("unknown partition"));
        }
        if parts[2] != "iam" {
            return Err(fail("the service is not iam"));
        }
        if !parts[3].is_empty() {
            return Err(fail("IAM ARNs have no region"));
        }
        let account = AccountId::parse(parts[4]).map_err(|_| fail("the account is not 12 digits"))?;
        let Some(path_and_name) = parts[5].strip_prefix("role/") else {
            return Err(fail("the resource is not a role (`role/NAME`)"));
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if name.is_empty() || name.len() > 64 {
            return Err(fail("the role name must be 1 to 64 characters"));
        }
        if !path_and_name.chars().all(|c| c == '/' || is_role_name_char(c)) {
            return Err(fail("the role name or path has a character IAM does not allow"));
        }
        Ok(Self { arn: value.to_owned(), partition: parts[1].to_owned(), account, name: name.to_owned() })
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl FromStr for RoleArn {
    type Err = ArnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_parsed() {
        let arn = RoleArn::parse("arn:aws:iam::111122223333:role/security/SkywardenReadOnly").unwrap();
        assert_eq!(arn.account().as_str(), "111122223333");
        assert_eq!(arn.name(), "SkywardenReadOnly");
        assert_eq!(arn.partition(), "aws");
        assert!(RoleArn::parse("arn:aws-us-gov:iam::111122223333:role/x").is_ok());
    }

    #[test]
    fn bad_role_arns_say_what_is_wrong() {
        let cases = [
            ("arn:aws:iam::1111:role/x", "12 digits"),
            ("arn:aws:iam::111122223333:user/x", "not a role"),
            ("arn:aws:s3:::bucket", "not iam"),
            ("arn:aws:iam:us-east-1:111122223333:role/x", "no region"),
            ("role/x", "six"),
            ("arn:aws:iam::111122223333:role/", "1 to 64"),
            ("arn:aws:iam::111122223333:role/a b", "does not allow"),
            ("arn:nope:iam::111122223333:role/x", "partition"),
        ];
        for (value, reason) in cases {
            let error = RoleArn::parse(value).unwrap_err().to_string();
            assert!(error.contains(reason) && error.contains(value), "{value}: {error}");
        }
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("111122223333").is_ok());
        assert!(AccountId::parse("11112222333a").is_err());
        assert!(AccountId::parse("1111222233334").is_err());
    }
}

//! Where Skywarden may send notifications: public addresses, and the private networks an admin
//! lists in `SKYWARDEN_NOTIFY_ALLOW_NETWORKS`. A channel URL is someone's input; without this a
//! webhook could read the instance metadata service or poke at internal hosts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::types::ipnetwork::IpNetwork;

use crate::net::{canonical, non_public_reason};

/// Which non-public networks notification targets may reach, and the directory of CA
/// certificates channels may trust.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkPolicy {
    allowed: Vec<IpNetwork>,
    ca_dir: Option<PathBuf>,
}

/// The environment variable naming the directory of CA files email channels may name.
pub const CA_DIR_VARIABLE: &str = "SKYWARDEN_NOTIFY_CA_DIR";

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} is {reason}; notification targets must be public unless an admin allows the network in SKYWARDEN_NOTIFY_ALLOW_NETWORKS"
)]
pub struct Refused {
    pub address: IpAddr,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("SKYWARDEN_NOTIFY_ALLOW_NETWORKS: {0:?} is not a network (e.g. 10.0.0.0/8, 127.0.0.1/32, fd00::/8)")]
pub struct BadNetwork(String);

impl NetworkPolicy {
    /// Public addresses only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list of networks (`10.0.0.0/8,127.0.0.1`).
    pub fn allowing(list: &str) -> Result<Self, BadNetwork> {
        let allowed = list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| IpNetwork::from_str(item).map_err(|_| BadNetwork(item.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allowed, ca_dir: None })
    }

    /// The directory whose files email channels may name as their relay's CA (`ca_file`).
    pub fn with_ca_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.ca_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The CA directory: as set with [`Self::with_ca_dir`], else `SKYWARDEN_NOTIFY_CA_DIR`.
    /// Only an admin of the server sets it; API users name files in it, never a path.
    pub fn ca_dir(&self) -> Option<PathBuf> {
        self.ca_dir
            .clone()
            .or_else(|| std::env::var_os(CA_DIR_VARIABLE).filter(|dir| !dir.is_empty()).map(PathBuf::from))
    }

    /// Reads `SKYWARDEN_NOTIFY_ALLOW_NETWORKS`.
    pub fn from_env() -> Result<Self, BadNetwork> {
        Self::allowing(&std::env::var("SKYWARDEN_NOTIFY_ALLOW_NETWORKS").unwrap_or_default())
    }

    pub fn allowed_networks(&self) -> &[IpNetwork] {
        &self.allowed
    }

    /// Whether an admin allowed `address` explicitly.
    pub fn is_allowed(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.allowed.iter().any(|network| network.contains(address))
    }

    /// Accepts a public address, or one in an allowed network. Cloud credential endpoints
    /// are refused even inside an allowed network: allowing `169.254.0.0/16` or `fd00::/8` for an
    /// internal service must not open the instance's credentials.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let address = canonical(address);
        if let Some(reason) = credential_endpoint(address) {
            return Err(Refused { address, reason });
        }
        match non_public_reason(address) {
            Some(reason) if !self.is_allowed(address) => Err(Refused { address, reason }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed.is_empty() {
            return f.write_str("public addresses only");
        }
        let list: Vec<String> = self.allowed.iter().map(ToString::to_string).collect();
        write!(f, "public addresses and {}", list.join(", "))
    }
}

/// Metadata and credential services of cloud platforms: never a notification target.
fn credential_endpoint(address: IpAddr) -> Option<&'static str> {
    const ENDPOINTS: [IpAddr; 5] = [
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), // EC2, GCE, Azure instance metadata
        IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),   // ECS task credentials
        IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),  // EKS pod identity
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), // Alibaba Cloud metadata
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)), // EC2 over IPv6
    ];
    ENDPOINTS.contains(&address).then_some("the cloud instance metadata service")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused() {
        let policy = NetworkPolicy::public_only();
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2002:7f00:1::1",
            "64:ff9b::a00:1",
            // Deprecated site-local, Teredo, and the other IANA special-purpose IPv6 ranges.
            "fec0::1",
            "fec0::a9fe:a9fe",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "3fff::1",
            "5f00::1",
            "64:ff9b:1::7f00:1",
        ] {
            assert!(policy.check(ip(address)).is_err(), "{address} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = NetworkPolicy::public_only();
        for address in ["52.94.76.1", "172.32.0.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address} should pass");
        }
    }

    #[test]
    fn the_metadata_service_is_named_as_such() {
        let refused = NetworkPolicy::public_only().check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(refused.reason, "the cloud instance metadata service");
        assert!(refused.to_string().contains("SKYWARDEN_NOTIFY_ALLOW_NETWORKS"));
    }

    #[test]
    fn an_admin_can_allow_a_network() {
        let policy = NetworkPolicy::allowing("127.0.0.1/32, 10.0.0.0/8").unwrap();
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("10.9.9.9")), Ok(()));
        assert!(policy.check(ip("127.0.0.2")).is_err());
        assert!(policy.check(ip("169.254.169.254")).is_err());
        // Allowing a whole link-local or unique-local range never opens a credential endpoint.
        let wide = NetworkPolicy::allowing("169.254.0.0/16,fd00::/8,100.64.0.0/10").unwrap();
        assert_eq!(wide.check(ip("169.254.10.10")), Ok(()));
        for endpoint in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "100.100.100.200",
        ] {
            assert!(wide.check(ip(endpoint)).is_err(), "{endpoint}");
        }
        assert!(NetworkPolicy::allowing("10.0.0.0/33").is_err());
        assert!(NetworkPolicy::allowing("localhost").is_err());
        assert_eq!(NetworkPolicy::allowing(" ").unwrap(), NetworkPolicy::public_only());
    }
}

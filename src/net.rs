//! Address ranges: which addresses are on the public internet, and why the others are not.
//!
//! One table for every stage: enrichment geolocates public addresses only, exfiltration counts
//! bytes that leave for public ones, and notification targets must be public unless an admin
//! allows a network. This module imports nothing from the crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sqlx::types::ipnetwork::IpNetwork;

/// An address range, `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| format!("bad prefix in {text:?}"))?),
            None => (text.trim(), if text.contains(':') { 128 } else { 32 }),
        };
        let address: IpAddr = address.parse().map_err(|_| format!("bad address in {text:?}"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix longer than {max} in {text:?}"));
        }
        Ok(Self { address, prefix })
    }
}

impl Cidr {
    pub fn is_world(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether the whole range lies inside `other`.
    pub fn within(&self, other: &Cidr) -> bool {
        self.prefix >= other.prefix && other.contains(self.address)
    }
}

/// A non-public range and why it is not public. The first matching range names the reason.
struct Range {
    cidr: Cidr,
    reason: &'static str,
}

const fn range(address: IpAddr, prefix: u8, reason: &'static str) -> Range {
    Range { cidr: Cidr { address, prefix }, reason }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, reason: &'static str) -> Range {
    range(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix, reason)
}

const fn v6(first: u16, second: u16, prefix: u8, reason: &'static str) -> Range {
    v6_long([first, second, 0, 0], prefix, reason)
}

/// An IPv6 range whose prefix reaches past the second group.
const fn v6_long(groups: [u16; 4], prefix: u8, reason: &'static str) -> Range {
    let [a, b, c, d] = groups;
    range(IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)), prefix, reason)
}

const METADATA: &str = "the cloud instance metadata service";
const PRIVATE: &str = "a private address";
const CGNAT: &str = "a carrier-grade NAT address";
const UNIQUE_LOCAL: &str = "a private (unique-local) address";
const DOCUMENTATION: &str = "a documentation address";
const ORCHID: &str = "an ORCHID identifier";
const OUTSIDE_GLOBAL_UNICAST: &str = "outside the global unicast range (2000::/3)";

/// Every range that is not the public internet (IANA special-purpose registries), metadata
/// services first so they are named as such.
const NON_PUBLIC: &[Range] = &[
    v4(169, 254, 169, 254, 32, METADATA),
    v4(0, 0, 0, 0, 8, "an unspecified address"),
    v4(10, 0, 0, 0, 8, PRIVATE),
    v4(100, 64, 0, 0, 10, CGNAT),
    v4(127, 0, 0, 0, 8, "a loopback address"),
    v4(169, 254, 0, 0, 16, "a link-local address"),
    v4(172, 16, 0, 0, 12, PRIVATE),
    v4(192, 0, 0, 0, 24, "a reserved address"),
    v4(192, 0, 2, 0, 24, DOCUMENTATION),
    v4(192, 168, 0, 0, 16, PRIVATE),
    v4(198, 18, 0, 0, 15, "a benchmarking address"),
    v4(198, 51, 100, 0, 24, DOCUMENTATION),
    v4(203, 0, 113, 0, 24, DOCUMENTATION),
    v4(224, 0, 0, 0, 3, "a multicast or reserved address"),
    range(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128, "an unspecified address"),
    range(IpAddr::V6(Ipv6Addr::LOCALHOST), 128, "a loopback address"),
    // fd00:ec2::254 is EC2's IPv6 metadata service, inside the unique-local range.
    range(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)), 128, METADATA),
    v6(0, 0, 16, "a reserved address"),
    // 64:ff9b::/96 is judged by the IPv4 address it carries; this one is for local use only.
    v6_long([0x0064, 0xff9b, 0x0001, 0], 48, "a local-use IPv4/IPv6 translation address"),
    v6_long([0x0100, 0, 0, 0], 64, "a discard-only address"),
    v6_long([0x0100, 0, 0, 1], 64, "a dummy address"),
    // Teredo reaches an IPv4 host through a tunnel: its address cannot be judged from here.
    v6(0x2001, 0x0000, 32, "a Teredo tunnel address"),
    v6_long([0x2001, 0x0002, 0, 0], 48, "a benchmarking address"),
    v6(0x2001, 0x0010, 28, ORCHID),
    v6(0x2001, 0x0020, 28, ORCHID),
    v6(0x2001, 0x0030, 28, "a drone remote ID tag"),
    v6(0x2001, 0x0db8, 32, DOCUMENTATION),
    v6(0x3fff, 0, 20, DOCUMENTATION),
    v6(0x5f00, 0, 16, "an SRv6 segment identifier"),
    v6(0xfc00, 0, 7, UNIQUE_LOCAL),
    v6(0xfe80, 0, 10, "a link-local address"),
    v6(0xfec0, 0, 10, "a site-local address (deprecated)"),
    v6(0xff00, 0, 8, "a multicast address"),
    // Last, so the ranges above name their reason: everything outside 2000::/3.
    v6(0, 0, 3, OUTSIDE_GLOBAL_UNICAST),
    v6(0x4000, 0, 2, OUTSIDE_GLOBAL_UNICAST),
    v6(0x8000, 0, 1, OUTSIDE_GLOBAL_UNICAST),
];

/// The ranges a VPC numbers its interfaces from: traffic from these is "ours".
const INTERNAL: &[Range] = &[
    v4(10, 0, 0, 0, 8, PRIVATE),
    v4(172, 16, 0, 0, 12, PRIVATE),
    v4(192, 168, 0, 0, 16, PRIVATE),
    v4(100, 64, 0, 0, 10, CGNAT),
    v6(0xfc00, 0, 7, UNIQUE_LOCAL),
];

impl Range {
    fn contains(&self, address: IpAddr) -> bool {
        self.cidr.contains(address)
    }

    fn to_network(&self) -> IpNetwork {
        IpNetwork::new(self.cidr.address, self.cidr.prefix).expect("the tables hold valid prefixes")
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address it is.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is not a public internet address, if it is not. 6to4 (`2002::/16`) and
/// NAT64 (`64:ff9b::/96`) addresses are judged by the IPv4 address they carry.
pub fn non_public_reason(address: IpAddr) -> Option<&'static str> {
    let address = canonical(address);
    if let Some(embedded) = embedded_v4(address) {
        return non_public_reason(IpAddr::V4(embedded));
    }
    NON_PUBLIC.iter().find(|range| range.contains(address)).map(|range| range.reason)
}

/// Why a whole range is not on the public internet: only when it lies entirely within one
/// non-public range. A range judged by its first address alone would call `0.0.0.0/1` (half the
/// internet) unspecified. IPv4 written as IPv6 (mapped, 6to4, NAT64) is judged as the IPv4
/// range it carries; a range wider than such a prefix holds public addresses.
pub fn range_non_public_reason(range: Cidr) -> Option<&'static str> {
    if let IpAddr::V6(v6) = range.address {
        // (prefix of the embedding, where the IPv4 address starts in bits)
        let embeddings = [
            (Cidr { address: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)), prefix: 96 }, 96),
            (Cidr { address: IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)), prefix: 96 }, 96),
            (Cidr { address: IpAddr::V6(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0)), prefix: 16 }, 16),
        ];
        for (embedding, start) in embeddings {
            if range.within(&embedding) {
                let bits = u128::from(v6);
                let v4 = Ipv4Addr::from(((bits >> (96 - start)) & u128::from(u32::MAX)) as u32);
                let prefix = range.prefix.saturating_sub(start).min(32);
                return range_non_public_reason(Cidr { address: IpAddr::V4(v4), prefix });
            }
            if embedding.within(&range) {
                return None;
            }
        }
    }
    NON_PUBLIC.iter().find(|non_public| range.within(&non_public.cidr)).map(|non_public| non_public.reason)
}

/// Whether an address is routable on the internet.
pub fn is_public(address: IpAddr) -> bool {
    non_public_reason(address).is_none()
}

/// Whether an address is in the private ranges a VPC uses (RFC 1918, shared, unique-local).
pub fn is_internal(address: IpAddr) -> bool {
    let address = canonical(address);
    INTERNAL.iter().any(|range| range.contains(address))
}

/// The non-public ranges, for queries that classify addresses in PostgreSQL (`<<= ANY(...)`).
pub fn non_public_networks() -> Vec<IpNetwork> {
    NON_PUBLIC.iter().map(Range::to_network).collect()
}

/// The internal ranges of [`is_internal`], for PostgreSQL.
pub fn internal_networks() -> Vec<IpNetwork> {
    INTERNAL.iter().map(Range::to_network).collect()
}

fn embedded_v4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = address else { return None };
    let s = v6.segments();
    let join = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match s {
        [0x2002, high, low, ..] => Some(join(high, low)),
        [0x0064, 0xff9b, 0, 0, 0, 0, high, low] => Some(join(high, low)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_named() {
        for (address, reason) in [
            ("127.0.0.1", "a loopback address"),
            ("10.1.2.3", PRIVATE),
            ("172.16.0.1", PRIVATE),
            ("172.31.255.255", PRIVATE),
            ("192.168.1.1", PRIVATE),
            ("169.254.169.254", METADATA),
            ("169.254.1.1", "a link-local address"),
            ("100.64.0.1", CGNAT),
            ("0.0.0.0", "an unspecified address"),
            ("198.18.0.1", "a benchmarking address"),
            ("198.19.255.255", "a benchmarking address"),
            ("192.0.2.10", DOCUMENTATION),
            ("224.0.0.1", "a multicast or reserved address"),
            ("255.255.255.255", "a multicast or reserved address"),
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("fe80::1", "a link-local address"),
            ("fd00:ec2::254", METADATA),
            ("fc00::1", UNIQUE_LOCAL),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", DOCUMENTATION),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("2002:7f00:1::1", "a loopback address"),
            ("64:ff9b::a00:1", PRIVATE),
        ] {
            assert_eq!(non_public_reason(ip(address)), Some(reason), "{address}");
            assert!(!is_public(ip(address)), "{address}");
        }
    }

    #[test]
    fn every_special_purpose_ipv6_range_is_not_public() {
        for (address, reason) in [
            ("fec0::1", "a site-local address (deprecated)"),
            ("feff:ffff::1", "a site-local address (deprecated)"),
            ("2001::1", "a Teredo tunnel address"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo tunnel address"),
            ("100::1", "a discard-only address"),
            ("100::ffff:ffff:ffff:ffff", "a discard-only address"),
            ("100:0:0:1::1", "a dummy address"),
            ("2001:2::1", "a benchmarking address"),
            ("2001:10::1", ORCHID),
            ("2001:1f::1", ORCHID),
            ("2001:20::1", ORCHID),
            ("2001:2f:ffff::1", ORCHID),
            ("2001:30::1", "a drone remote ID tag"),
            ("3fff::1", DOCUMENTATION),
            ("3fff:fff::1", DOCUMENTATION),
            ("5f00::1", "an SRv6 segment identifier"),
            ("64:ff9b:1::a00:1", "a local-use IPv4/IPv6 translation address"),
            ("64:ff9b:1::808:808", "a local-use IPv4/IPv6 translation address"),
            // Outside 2000::/3 nothing is assigned for global unicast.
            ("4000::1", OUTSIDE_GLOBAL_UNICAST),
            ("8000::1", OUTSIDE_GLOBAL_UNICAST),
            ("1::1", OUTSIDE_GLOBAL_UNICAST),
            ("fb00::1", OUTSIDE_GLOBAL_UNICAST),
        ] {
            assert_eq!(non_public_reason(ip(address)), Some(reason), "{address}");
        }
        // Neighbours of those ranges stay public.
        for address in ["2001:1::1", "2001:3::1", "2001:4:112::1", "2001:40::1", "2001:200::1", "2400::1"] {
            assert!(is_public(ip(address)), "{address}");
        }
        assert!(non_public_networks().iter().any(|n| n.contains(ip("fec0::1"))));
        assert!(non_public_networks().iter().any(|n| n.contains(ip("2001::1"))));
    }

    #[test]
    fn public_addresses_are_public() {
        for address in [
            "52.94.76.1",
            "172.32.0.1",
            "8.8.8.8",
            "198.20.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(address)), "{address}");
        }
    }

    #[test]
    fn a_range_is_non_public_only_when_it_lies_within_one_non_public_range() {
        let range = |text: &str| range_non_public_reason(text.parse().unwrap());
        // Their first addresses are unspecified or reserved; the ranges hold half the internet.
        for public in ["0.0.0.0/1", "192.0.0.0/2", "0.0.0.0/7", "10.0.0.0/7", "192.0.0.0/16", "::/0", "2000::/3"] {
            assert_eq!(range(public), None, "{public}");
        }
        assert_eq!(range("10.1.0.0/16"), Some(PRIVATE));
        assert_eq!(range("10.0.0.0/8"), Some(PRIVATE));
        assert_eq!(range("192.168.1.7/32"), Some(PRIVATE));
        assert_eq!(range("0.0.0.0/8"), Some("an unspecified address"));
        assert_eq!(range("fd00::/8"), Some(UNIQUE_LOCAL));
        assert_eq!(range("::ffff:10.0.0.0/104"), Some(PRIVATE), "mapped IPv4 is judged as IPv4");
        assert_eq!(range("::ffff:0.0.0.0/97"), None);
        assert_eq!(range("2002:0a00::/24"), Some(PRIVATE), "6to4 of 10/8");
        assert_eq!(range("2002::/16"), None);
        assert_eq!(range("64:ff9b::/64"), None, "wider than NAT64: it carries public addresses");
        assert_eq!(range("8.8.8.0/24"), None);
    }

    #[test]
    fn internal_is_what_a_vpc_uses() {
        assert!(is_internal(ip("10.0.1.5")) && is_internal(ip("100.64.3.2")) && is_internal(ip("fd12::1")));
        assert!(!is_internal(ip("127.0.0.1")) && !is_internal(ip("8.8.8.8")) && !is_internal(ip("169.254.1.1")));
    }

    #[test]
    fn the_query_tables_match_the_rust_tables() {
        let networks = non_public_networks();
        for address in ["10.1.2.3", "198.18.0.1", "fc00::1", "224.0.0.1"] {
            assert!(networks.iter().any(|n| n.contains(ip(address))), "{address}");
        }
        assert!(!networks.iter().any(|n| n.contains(ip("8.8.8.8"))));
        assert_eq!(internal_networks().len(), INTERNAL.len());
    }
}

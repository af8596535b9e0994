//! The routes file: which hosts serve which track, and how requests are split.
//!
//! ```yaml
//! salt: checkout-v3          # fixed for one release
//! canary_share: 10%          # or basis points: 1000
//! key: { header: x-rollwave-key, cookie: rollwave_key }
//! hosts:
//!   - { address: 127.0.0.1:9001, version: v2, track: stable }
//!   - { address: 127.0.0.1:9002, version: v3, track: canary, draining: true }
//! ```
//!
//! [`parse_routes`] reads it into [`Routes`], reporting every mistake as
//! `file:line:col: message`. Once parsed, nothing is checked again.

use crate::track::Track;
use http::HeaderName;
use http::uri::Authority;
use rollwave_core::share::BasisPoints;
use rollwave_manifest::yaml::{self, Decoder, Located, Node};
use rollwave_manifest::{Location, ManifestErrors};
use std::collections::HashMap;

const ROOT: &[&str] = &["salt", "canary_share", "key", "hosts"];
const KEY: &[&str] = &["header", "cookie", "set_cookie"];
const HOST: &[&str] = &["address", "version", "track", "draining"];

/// A parsed routes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    /// Mixed into every key's hash; change it to reshuffle who gets the canary.
    pub salt: String,
    pub canary_share: BasisPoints,
    pub key: KeySource,
    pub hosts: Vec<HostSpec>,
}

/// Where a request's sticky key comes from, in this order: the header, the cookie,
/// a new random key (set as the cookie) when `set_cookie` is on, else the client's
/// IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySource {
    pub header: HeaderName,
    pub cookie: String,
    pub set_cookie: bool,
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource {
            header: HeaderName::from_static("x-rollwave-key"),
            cookie: "rollwave_key".to_owned(),
            set_cookie: true,
        }
    }
}

/// One upstream host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// `host:port`, the port required.
    pub address: Authority,
    pub version: String,
    pub track: Track,
    /// A draining host gets no new requests; those in flight finish.
    pub draining: bool,
}

/// Reads a routes file; `file` names it in errors.
pub fn parse_routes(file: &str, text: &str) -> Result<Routes, ManifestErrors> {
    let mut d = Decoder::new(file);
    let routes = d.parse_document(text).and_then(|root| routes(&mut d, &root));
    d.finish(routes)
}

fn routes(d: &mut Decoder, root: &Node) -> Option<Routes> {
    let map = d.mapping(root, ROOT)?;
    let salt = d.required(&map, "salt", Decoder::string);
    let canary_share = d.required(&map, "canary_share", share);
    let key = d.optional(&map, "key", key_source);
    let hosts = d.required(&map, "hosts", |d, node| d.list(node, host));
    let hosts = hosts.and_then(|hosts| unique_addresses(d, hosts));
    Some(Routes { salt: salt?, canary_share: canary_share?, key: key.unwrap_or_default(), hosts: hosts? })
}

/// `10%`, `12.5%` or a whole number of basis points from 0 to 10000.
fn share(d: &mut Decoder, node: &Node) -> Option<BasisPoints> {
    d.parsed(node, "a share such as 10% or 1000 (basis points)", |s| {
        if s.trim().ends_with('%') {
            return yaml::parse_share(s);
        }
        match s.trim().parse::<u32>().ok().and_then(BasisPoints::new) {
            Some(bp) => Ok(bp),
            None => Err(format!(
                "invalid canary share {s:?}: write a percentage such as 10% or basis points from 0 to 10000"
            )),
        }
    })
}

fn key_source(d: &mut Decoder, node: &Node) -> Option<KeySource> {
    let map = d.mapping(node, KEY)?;
    let default = KeySource::default();
    let header = d.optional(&map, "header", |d, n| {
        d.parsed(n, "a header name", |s| {
            HeaderName::from_bytes(s.trim().as_bytes())
                .map_err(|_| format!("invalid header name {s:?}: use letters, digits and '-', e.g. x-rollwave-key"))
        })
    });
    let cookie = d.optional(&map, "cookie", |d, n| {
        d.parsed(n, "a cookie name", |s| {
            let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if ok {
                Ok(s.to_owned())
            } else {
                Err(format!("invalid cookie name {s:?}: use letters, digits, '-' and '_'"))
            }
        })
    });
    let set_cookie = d.optional(&map, "set_cookie", Decoder::bool);
    Some(KeySource {
        header: header.unwrap_or(default.header),
        cookie: cookie.unwrap_or(default.cookie),
        set_cookie: set_cookie.unwrap_or(default.set_cookie),
    })
}

fn host<'n>(d: &mut Decoder, node: &'n Node) -> Option<(HostSpec, &'n Node)> {
    let map = d.mapping(node, HOST)?;
    let address = d.required(&map, "address", |d, n| d.parsed(n, "an address such as 10.0.0.7:8080", parse_address));
    let version = d.required(&map, "version", Decoder::name);
    let track = d.required(&map, "track", |d, n| d.one_of(n, "track", &Track::ALL.map(|t| (t.as_str(), t))));
    let draining = d.optional(&map, "draining", Decoder::bool).unwrap_or(false);
    let address_node = map.get("address")?;
    Some((HostSpec { address: address?, version: version?, track: track?, draining }, address_node))
}

fn parse_address(s: &str) -> Result<Authority, String> {
    let forms = "write host:port, e.g. 10.0.0.7:8080";
    let authority: Authority = s.trim().parse().map_err(|_| format!("invalid address {s:?}: {forms}"))?;
    if authority.port_u16().is_none() || authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("invalid address {s:?}: {forms}"));
    }
    Ok(authority)
}

fn unique_addresses(d: &mut Decoder, hosts: Vec<(HostSpec, &Node)>) -> Option<Vec<HostSpec>> {
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut ok = true;
    for (host, node) in &hosts {
        let address = host.address.as_str().to_ascii_lowercase();
        if let Some(first) = seen.get(&address) {
            d.error(*node, format!("address {address} is listed twice; it is already listed at {first}"));
            ok = false;
        } else {
            seen.insert(address, node.location());
        }
    }
    ok.then(|| hosts.into_iter().map(|(host, _)| host).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
salt: checkout-v3          # fixed for one release
canary_share: 10%          # or basis points: 1000
key: { header: x-rollwave-key, cookie: rollwave_key }
hosts:
  - { address: 127.0.0.1:9001, version: v2, track: stable }
  - { address: 127.0.0.1:9002, version: v3, track: canary, draining: true }
";

    #[test]
    fn the_documented_example_parses() {
        let routes = parse_routes("routes.yaml", EXAMPLE).unwrap();
        assert_eq!(routes.salt, "checkout-v3");
        assert_eq!(routes.canary_share.get(), 1000);
        assert_eq!(routes.key, KeySource::default());
        assert_eq!(routes.hosts.len(), 2);
        assert_eq!(routes.hosts[1].address.as_str(), "127.0.0.1:9002");
        assert_eq!(routes.hosts[1].track, Track::Canary);
        assert!(routes.hosts[1].draining && !routes.hosts[0].draining);
    }

    #[test]
    fn shares_are_percentages_or_basis_points() {
        let with = |share: &str| parse_routes("r.yaml", &format!("salt: s\ncanary_share: {share}\nhosts: []\n"));
        assert_eq!(with("1000").unwrap().canary_share.get(), 1000);
        assert_eq!(with("12.5%").unwrap().canary_share.get(), 1250);
        assert_eq!(with("0").unwrap().canary_share.get(), 0);
        assert!(with("10001").unwrap_err().to_string().starts_with("r.yaml:2:15: invalid canary share"));
        assert!(with("-1").is_err());
        assert!(with("ten").is_err());
    }

    #[test]
    fn every_mistake_is_reported_where_it_is() {
        let text = "\
salt: s
canary_share: 10%
key: { header: \"bad header\", cookie: rollwave_key, set_cookie: maybe }
hosts:
  - { address: 127.0.0.1:9001, version: v2, track: stable }
  - { address: 127.0.0.1, version: v2, track: stabel }
  - { address: 127.0.0.1:9001, version: v2, track: canary, drainig: true }
";
        let err = parse_routes("routes.yaml", text).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 6, "{err}");
        assert!(lines[0].starts_with("routes.yaml:3:16: invalid header name"), "{err}");
        assert!(lines[1].starts_with("routes.yaml:3:64: expected true or false"), "{err}");
        assert!(lines[2].starts_with("routes.yaml:6:16: invalid address \"127.0.0.1\""), "{err}");
        assert_eq!(lines[3], "routes.yaml:6:47: unknown track \"stabel\"; did you mean \"stable\"?");
        assert!(lines[4].starts_with("routes.yaml:7:16: address 127.0.0.1:9001 is listed twice"), "{err}");
        assert!(lines[5].starts_with("routes.yaml:7:60: unknown key \"drainig\""), "{err}");
    }

    #[test]
    fn required_keys_are_named() {
        let err = parse_routes("routes.yaml", "hosts: []\n").unwrap_err().to_string();
        assert!(err.contains("salt") && err.contains("canary_share"), "{err}");
    }
}

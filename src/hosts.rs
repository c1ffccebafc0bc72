//! The hosts file (`/etc/hosts`): address → name, for naming SMTP clients.
//!
//! In: hosts(5) text. Out: the first name given for an address. Used to name a client
//! (`connect from localhost [IPv6:0:0:0:0:0:0:0:1]`) before DNS PTR lookups land; an address
//! with no entry is shown as a bare literal, as sendmail shows an unresolved client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// Address → canonical (first) name.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    names: HashMap<IpAddr, String>,
}

impl Hosts {
    /// Reads a hosts file; a missing or unreadable file gives an empty table.
    pub fn load(path: &Path) -> Hosts {
        std::fs::read_to_string(path)
            .map(|t| Hosts::parse(&t))
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Hosts {
        let mut names = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(addr), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            // An address with a zone (fe80::1%eth0) is skipped.
            if let Ok(ip) = addr.parse::<IpAddr>() {
                names.entry(ip).or_insert_with(|| name.to_string());
            }
        }
        Hosts { names }
    }

    /// The name of `ip` (an IPv4-mapped IPv6 address is looked up as IPv4).
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.names.get(&ip.to_canonical()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_name_wins_and_comments_are_ignored() {
        let h = Hosts::parse(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost # both\n# 10.0.0.1 x\n\
             127.0.0.1 other\nfe80::1%lo0 ll\n",
        );
        assert_eq!(h.name_of("127.0.0.1".parse().unwrap()), Some("localhost"));
        assert_eq!(h.name_of("::1".parse().unwrap()), Some("localhost"));
        assert_eq!(
            h.name_of("::ffff:127.0.0.1".parse().unwrap()),
            Some("localhost")
        );
        assert_eq!(h.name_of("10.0.0.1".parse().unwrap()), None);
    }
}

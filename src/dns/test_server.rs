//! Test support: an authoritative DNS server on a loopback UDP port, answering from a
//! table, so the resolver's real path (wire format, NXDOMAIN/NODATA, SERVFAIL, timeouts)
//! is exercised. Names are absolute and lower case; one zone apex `test.` holds the SOA
//! returned with negative answers.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::proto::op::{Message, Metadata, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// What the server knows.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: Vec<(String, RData)>,
    servfail: Vec<String>,
    silent: Vec<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(n: &str) -> Name {
    Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).expect("test name")
}

impl Zone {
    pub fn mx(mut self, owner: &str, pref: u16, exchange: &str) -> Zone {
        let target = if exchange == "." {
            Name::root()
        } else {
            name(exchange)
        };
        self.records
            .push((key(owner), RData::MX(MX::new(pref, target))));
        self
    }
    pub fn a(mut self, owner: &str, ip: &str) -> Zone {
        let ip: Ipv4Addr = ip.parse().expect("test IPv4");
        self.records.push((key(owner), RData::A(A(ip))));
        self
    }
    pub fn aaaa(mut self, owner: &str, ip: &str) -> Zone {
        let ip: Ipv6Addr = ip.parse().expect("test IPv6");
        self.records.push((key(owner), RData::AAAA(AAAA(ip))));
        self
    }
    /// Every query for `owner` gets SERVFAIL.
    pub fn servfail(mut self, owner: &str) -> Zone {
        self.servfail.push(key(owner));
        self
    }
    /// Queries for `owner` are never answered.
    pub fn silent(mut self, owner: &str) -> Zone {
        self.silent.push(key(owner));
        self
    }

    /// The response to `query`, or `None` to stay silent.
    fn respond(&self, query: &Message) -> Option<Message> {
        let mut resp = Message::new(
            query.metadata.id,
            query.metadata.message_type,
            query.metadata.op_code,
        );
        resp.metadata = Metadata::response_from_request(&query.metadata);
        resp.metadata.authoritative = true;
        let q = query.queries.first()?.clone();
        let owner = key(&q.name().to_ascii());
        resp.add_query(q.clone());
        if self.silent.contains(&owner) {
            return None;
        }
        if self.servfail.contains(&owner) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Some(resp);
        }
        let same_name: Vec<&RData> = self
            .records
            .iter()
            .filter(|(o, _)| *o == owner)
            .map(|(_, r)| r)
            .collect();
        let answers: Vec<Record> = same_name
            .iter()
            .filter(|r| r.record_type() == q.query_type() || q.query_type() == RecordType::ANY)
            .map(|r| Record::from_rdata(q.name().clone(), 60, (*r).clone()))
            .collect();
        if answers.is_empty() {
            if same_name.is_empty() {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = SOA::new(
                name("ns.test"),
                name("hostmaster.test"),
                1,
                3600,
                600,
                86400,
                60,
            );
            resp.add_authority(Record::from_rdata(name("test"), 60, RData::SOA(soa)));
        } else {
            resp.add_answers(answers);
        }
        Some(resp)
    }
}

/// A running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    pub async fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS test server");
        let addr = socket.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(resp) = zone.respond(&query)
                    && let Ok(bytes) = resp.to_vec()
                {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer { addr, task }
    }
}

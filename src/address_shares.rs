//! Each source address's share of the TLS handshakes in progress: one address (an IPv6 /64
//! counts as one) may have at most its share in progress at once; more connections from it
//! wait their turn, within the handshake timeout, so that idle connections from one address
//! cannot take the whole pool, while an honest reconnect storm from one address (SNAT, a
//! node-local proxy) is slowed, not refused. Operators raise or lift the share for ranges
//! they trust.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
};

use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shares, and the addresses with connections in progress or waiting now.
#[derive(Debug)]
pub struct AddressShares {
    /// The share of an address in no listed range (0: no per-address limit).
    default: u32,
    /// Shares by range, most specific first.
    ranges: Vec<(IpNet, u32)>,
    /// How many connections of one address may wait beyond its share, and how many may
    /// wait in all; more are closed.
    max_waiting: usize,
    active: Mutex<Active>,
}

#[derive(Debug, Default)]
struct Active {
    by_address: HashMap<IpAddr, Entry>,
    /// Connections beyond their address's share, across addresses.
    waiting: usize,
}

#[derive(Debug)]
struct Entry {
    turns: Arc<Semaphore>,
    /// The address's share: how many `turns` holds in all.
    turns_total: usize,
    /// Connections in progress or waiting.
    users: usize,
}

/// An address already has its share in progress and `max_waiting` more waiting.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl AddressShares {
    /// `default` in progress per address (0: no limit), `ranges` in its place for the
    /// addresses they hold (the most specific range that holds an address wins), and up to
    /// `max_waiting` more waiting per address and in all.
    pub fn new(default: u32, ranges: &[(IpNet, u32)], max_waiting: usize) -> Arc<Self> {
        let mut ranges = ranges.to_vec();
        ranges.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Arc::new(Self {
            default,
            ranges,
            max_waiting,
            active: Mutex::default(),
        })
    }

    /// The share of `ip` (`None`: no per-address limit).
    pub fn share_of(&self, ip: IpAddr) -> Option<u32> {
        self.share_and_key(ip).0
    }

    /// The share of `ip`, and the address it is counted by: IPv4 as it is; IPv6 by its /64,
    /// unless a range narrower than a /64 sets its share (then by itself, so that the /64's
    /// other addresses keep theirs).
    fn share_and_key(&self, ip: IpAddr) -> (Option<u32>, IpAddr) {
        let ip = ip.to_canonical();
        let range = self.ranges.iter().find(|(net, _)| net.contains(&ip));
        let share = range.map_or(self.default, |(_, share)| *share);
        let key = match range {
            Some((IpNet::V6(net), _)) if net.prefix_len() > 64 => ip,
            _ => address_key(ip),
        };
        ((share > 0).then_some(share), key)
    }

    /// Takes a place for a connection from `ip`: its turn may still have to be waited for.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Place, QueueFull> {
        let (Some(share), key) = self.share_and_key(ip) else {
            return Ok(Place { entry: None });
        };
        let share = share as usize;
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let Active {
            by_address,
            waiting,
        } = &mut *active;
        let entry = by_address.entry(key).or_insert_with(|| Entry {
            turns: Arc::new(Semaphore::new(share)),
            turns_total: share,
            users: 0,
        });
        if entry.users >= share {
            if entry.users >= share + self.max_waiting || *waiting >= self.max_waiting {
                return Err(QueueFull);
            }
            *waiting += 1;
        }
        entry.users += 1;
        Ok(Place {
            entry: Some((self.clone(), key, entry.turns.clone())),
        })
    }

    fn leave(&self, key: IpAddr) {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let Active {
            by_address,
            waiting,
        } = &mut *active;
        if let Some(entry) = by_address.get_mut(&key) {
            if entry.users > entry.turns_total {
                *waiting = waiting.saturating_sub(1);
            }
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                by_address.remove(&key);
            }
        }
    }

    /// Addresses with connections in progress or waiting now.
    pub fn addresses(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_address
            .len()
    }
}

/// The address a share is counted by: IPv4 as it is, IPv6 by its /64 (one host's usual
/// allotment).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

/// A connection's place in its address's share, given back when dropped.
#[derive(Debug)]
pub struct Place {
    entry: Option<(Arc<AddressShares>, IpAddr, Arc<Semaphore>)>,
}

impl Place {
    /// Waits for this connection's turn (at once when its address is under its share or has
    /// none). The turn is held until the returned permit is dropped.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        let (_, _, turns) = self.entry.as_ref()?;
        turns.clone().acquire_owned().await.ok()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some((shares, key, _)) = self.entry.take() {
            shares.leave(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_range_sets_the_share_and_zero_lifts_it() {
        let ranges = [
            ("10.0.0.0/8".parse().unwrap(), 512),
            ("10.1.2.0/24".parse().unwrap(), 0),
            ("2001:db8::/32".parse().unwrap(), 128),
        ];
        let shares = AddressShares::new(64, &ranges, 10);
        assert_eq!(shares.share_of(ip("192.0.2.1")), Some(64));
        assert_eq!(shares.share_of(ip("10.9.9.9")), Some(512));
        assert_eq!(shares.share_of(ip("10.1.2.3")), None);
        assert_eq!(shares.share_of(ip("2001:db8::1")), Some(128));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert_eq!(shares.share_of(ip("::ffff:10.1.2.3")), None);
        assert_eq!(
            AddressShares::new(0, &[], 10).share_of(ip("192.0.2.1")),
            None
        );
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[tokio::test]
    async fn past_its_share_an_address_waits_then_past_the_queue_it_is_refused() {
        let shares = AddressShares::new(2, &[], 1);
        let a = ip("192.0.2.1");
        let places: Vec<Place> = (0..3).map(|_| shares.enter(a).unwrap()).collect();
        assert_eq!(shares.enter(a).unwrap_err(), QueueFull);
        // Another address is not affected.
        let other = shares.enter(ip("192.0.2.2")).unwrap();
        assert!(other.turn().await.is_some());

        let first = places[0].turn().await.unwrap();
        let _second = places[1].turn().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), places[2].turn()).await;
        assert!(third.is_err(), "the third connection must wait for a turn");
        drop(first);
        assert!(places[2].turn().await.is_some());

        drop(places);
        drop(other);
        assert_eq!(shares.addresses(), 0, "no address is remembered once idle");
    }

    #[test]
    fn connections_waiting_are_bounded_across_addresses_too() {
        let shares = AddressShares::new(1, &[], 2);
        let held: Vec<Place> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .flat_map(|a| [shares.enter(ip(a)).unwrap()])
            .collect();
        // Each address has its one turn; two more may wait, whichever address they are from.
        let waiting_a = shares.enter(ip("192.0.2.1")).unwrap();
        let _waiting_b = shares.enter(ip("192.0.2.2")).unwrap();
        assert_eq!(shares.enter(ip("192.0.2.3")).unwrap_err(), QueueFull);
        drop(waiting_a);
        let _waiting_c = shares.enter(ip("192.0.2.3")).unwrap();
        drop(held);
    }

    #[test]
    fn a_range_narrower_than_a_64_has_its_own_count() {
        let ranges = [("2001:db8::7/128".parse().unwrap(), 3)];
        let shares = AddressShares::new(1, &ranges, 0);
        let proxy: Vec<Place> = (0..3)
            .map(|_| shares.enter(ip("2001:db8::7")).unwrap())
            .collect();
        // The proxy's share does not lend itself to, or take from, its /64's other addresses.
        let neighbour = shares.enter(ip("2001:db8::8")).unwrap();
        assert_eq!(shares.enter(ip("2001:db8::9")).unwrap_err(), QueueFull);
        assert_eq!(shares.enter(ip("2001:db8::7")).unwrap_err(), QueueFull);
        drop((proxy, neighbour));
    }
}

//! The names this sandbox resolved, by address.
//!
//! Domain rules match a destination only through this map, which the stack's DNS fills from the
//! answers it gives the guest. It is bounded in addresses and in names per address, and entries
//! expire with the answer's TTL, clamped to [`MIN_TTL`, `MAX_TTL`]: the lower bound keeps a
//! zero-TTL answer usable for the connection that immediately follows it; the upper bound keeps an
//! address from being trusted for a name long after it may have moved.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::policy::{canonical, normalize_name};

pub(crate) const MIN_TTL: Duration = Duration::from_secs(60);
pub(crate) const MAX_TTL: Duration = Duration::from_secs(3600);
/// A name beyond this many per address evicts the one expiring first.
const NAMES_PER_ADDRESS: usize = 8;

#[derive(Debug)]
struct Entry {
    /// (normalized name, expiry)
    names: Vec<(String, Instant)>,
}

/// A bounded map from address to the names it was resolved from.
#[derive(Debug)]
pub(crate) struct ResolvedNames {
    entries: HashMap<IpAddr, Entry>,
    /// Insertion order of addresses, for eviction when full. May hold addresses already removed.
    order: VecDeque<IpAddr>,
    capacity: usize,
}

impl ResolvedNames {
    pub(crate) fn new(capacity: usize) -> ResolvedNames {
        ResolvedNames {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records that `name` resolved to `ip` with `ttl`.
    pub(crate) fn insert(&mut self, ip: IpAddr, name: &str, ttl: Duration, now: Instant) {
        let ip = canonical(ip);
        let expiry = now + ttl.clamp(MIN_TTL, MAX_TTL);
        let name = normalize_name(name);
        if !self.entries.contains_key(&ip) {
            while self.entries.len() >= self.capacity {
                self.evict_one(now);
            }
            self.order.push_back(ip);
        }
        let entry = self
            .entries
            .entry(ip)
            .or_insert_with(|| Entry { names: Vec::new() });
        if let Some(existing) = entry.names.iter_mut().find(|(n, _)| *n == name) {
            existing.1 = existing.1.max(expiry);
            return;
        }
        if entry.names.len() >= NAMES_PER_ADDRESS {
            let oldest = entry
                .names
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(i, _)| i)
                .unwrap_or(0);
            entry.names.swap_remove(oldest);
        }
        entry.names.push((name, expiry));
        // The order queue can hold stale addresses; compact it before it grows without bound.
        if self.order.len() > self.capacity * 2 {
            let entries = &self.entries;
            self.order.retain(|ip| entries.contains_key(ip));
        }
    }

    /// The unexpired names `ip` was resolved from.
    pub(crate) fn lookup(&self, ip: IpAddr, now: Instant) -> Vec<String> {
        self.entries
            .get(&canonical(ip))
            .map(|entry| {
                entry
                    .names
                    .iter()
                    .filter(|(_, expiry)| *expiry > now)
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops expired names and addresses left without names.
    pub(crate) fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, entry| {
            entry.names.retain(|(_, expiry)| *expiry > now);
            !entry.names.is_empty()
        });
        let entries = &self.entries;
        self.order.retain(|ip| entries.contains_key(ip));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn evict_one(&mut self, now: Instant) {
        self.purge(now);
        if self.entries.len() < self.capacity {
            return;
        }
        while let Some(ip) = self.order.pop_front() {
            if self.entries.remove(&ip).is_some() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_expiry() {
        let now = Instant::now();
        let mut names = ResolvedNames::new(4);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        names.insert(ip, "A.Example.", Duration::from_secs(0), now);
        assert_eq!(names.lookup(ip, now), vec!["a.example".to_string()]);
        // IPv4-mapped lookups find the IPv4 entry.
        assert_eq!(
            names.lookup("::ffff:10.0.0.1".parse().unwrap(), now).len(),
            1
        );
        // Clamped to MIN_TTL, then expired.
        assert_eq!(
            names
                .lookup(ip, now + MIN_TTL - Duration::from_secs(1))
                .len(),
            1
        );
        assert!(names.lookup(ip, now + MIN_TTL).is_empty());
        names.purge(now + MAX_TTL);
        assert_eq!(names.len(), 0);
    }

    #[test]
    fn bounded() {
        let now = Instant::now();
        let mut names = ResolvedNames::new(3);
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            names.insert(ip, "x.example", Duration::from_secs(600), now);
            assert!(names.len() <= 3);
        }
        // The most recent addresses survive.
        assert_eq!(names.lookup(IpAddr::from([10, 0, 0, 99]), now).len(), 1);
        assert!(names.lookup(IpAddr::from([10, 0, 0, 0]), now).is_empty());
        let ip = IpAddr::from([1, 1, 1, 1]);
        for i in 0..50 {
            names.insert(ip, &format!("n{i}.example"), Duration::from_secs(600), now);
        }
        assert_eq!(names.lookup(ip, now).len(), NAMES_PER_ADDRESS);
        assert!(names.order.len() <= 6 + 1);
    }
}

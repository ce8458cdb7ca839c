//! In-memory copies of directory rows: sites, organizations, plans and users.
//!
//! They change rarely (the Dashboard edits them through the API) and are
//! read on every message, so they are kept here. Every change empties the
//! whole copy, on this instance at once and on the other instances sharing a
//! PostgreSQL database through `NOTIFY mailgate_directory` (see
//! `Store::directory_changed`). A read that raced with a change is not kept:
//! [`Directory::generation`] moves on every emptying, and a row read under
//! an older generation is returned but not remembered. Only rows that exist
//! are kept: a user created after a miss is found on the next look-up.

use super::{Organization, Plan, Site, User};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many entries each map holds before it is emptied and refilled: a
/// bound on memory, high enough that a busy desk's working set stays warm.
const CAPACITY: usize = 50_000;

/// A bounded map shared by every task; poisoning is ignored (the values are
/// plain copies, never half-written).
#[derive(Debug)]
struct Bounded<K, V>(RwLock<HashMap<K, V>>);

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::new()))
    }

    fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn put(&self, key: K, value: V) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, value);
    }
}

/// The immutable rows the per-message and per-notification paths read:
/// sites, organizations and plans by id, what each site's plans include,
/// and users by email and by id.
#[derive(Debug)]
pub(super) struct Directory {
    sites: Bounded<i64, Site>,
    organizations: Bounded<i64, Organization>,
    plans: Bounded<String, Plan>,
    features: Bounded<i64, (bool, bool)>,
    users: Bounded<String, User>,
    users_by_id: Bounded<i64, User>,
    generation: AtomicU64,
}

impl Directory {
    pub(super) fn new() -> Self {
        Self {
            sites: Bounded::new(),
            organizations: Bounded::new(),
            plans: Bounded::new(),
            features: Bounded::new(),
            users: Bounded::new(),
            users_by_id: Bounded::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// Moves on every [`Directory::clear`]: a row read before and kept after
    /// a change would be stale.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every row (a directory row changed, here or elsewhere).
    pub(super) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.sites.clear();
        self.organizations.clear();
        self.plans.clear();
        self.features.clear();
        self.users.clear();
        self.users_by_id.clear();
    }

    pub(super) fn organization(&self, id: i64) -> Option<Organization> {
        self.organizations.get(&id)
    }

    pub(super) fn keep_organization(&self, organization: &Organization) {
        self.organizations.put(organization.id, organization.clone());
    }

    pub(super) fn plan(&self, id: &str) -> Option<Plan> {
        self.plans.get(id)
    }

    pub(super) fn keep_plan(&self, plan: &Plan) {
        self.plans.put(plan.id.clone(), plan.clone());
    }

    pub(super) fn user_by_id(&self, id: i64) -> Option<User> {
        self.users_by_id.get(&id)
    }

    pub(super) fn site(&self, id: i64) -> Option<Site> {
        self.sites.get(&id)
    }

    pub(super) fn keep_site(&self, site: &Site) {
        self.sites.put(site.id, site.clone());
    }

    pub(super) fn features(&self, site_id: i64) -> Option<(bool, bool)> {
        self.features.get(&site_id)
    }

    pub(super) fn keep_features(&self, site_id: i64, features: (bool, bool)) {
        self.features.put(site_id, features);
    }

    pub(super) fn user(&self, email: &str) -> Option<User> {
        self.users.get(email)
    }

    pub(super) fn keep_user(&self, email: &str, user: &User) {
        self.users.put(email.to_owned(), user.clone());
        self.users_by_id.put(user.id, user.clone());
    }
}

/// A value read a moment ago, for reads whose answer may lag the database by
/// up to `ttl`: which agents to notify (a new agent is told from the next
/// second on; an opt-out is checked again when the mail is sent).
#[derive(Debug)]
pub(super) struct Recent<V> {
    ttl: std::time::Duration,
    entries: RwLock<HashMap<String, (std::time::Instant, V)>>,
}

impl<V: Clone> Recent<V> {
    pub(super) fn new(ttl: std::time::Duration) -> Self {
        Self { ttl, entries: RwLock::new(HashMap::new()) }
    }

    /// The value kept for `key`, if it is younger than the time to live.
    pub(super) fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, value)| value.clone())
    }

    pub(super) fn put(&self, key: &str, value: V) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(key.to_owned(), (std::time::Instant::now(), value));
    }

    /// Forgets everything (after a change this instance made itself).
    pub(super) fn clear(&self) {
        self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

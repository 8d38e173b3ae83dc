//! A hash map that grows in small steps, for the state's two maps that grow with the
//! scheme (`passes`, `requests`: about 13 million entries each at national scale).
//!
//! A `HashMap` doubles in one go: it moves every entry while the writer holds the state's
//! lock, so at millions of entries one insert stalls every redemption for hundreds of
//! milliseconds (measured in `benches/growth.rs`). Split over `SHARDS` maps, each doubling
//! moves one shard's entries, and the shards, filled evenly by the hash, double at
//! different inserts.

use std::borrow::Borrow;
use std::collections::hash_map::{HashMap, RandomState};
use std::hash::{BuildHasher, Hash};

/// Shards per map: a doubling then moves 1/256 of the entries (about 50 000 at national
/// scale, a few milliseconds), at the cost of one more hash per operation.
pub const SHARDS: usize = 256;

#[derive(Clone)]
pub struct ShardedMap<K, V> {
    /// Empty until the first insert: a map that stays empty (a scratch state) costs nothing.
    shards: Vec<HashMap<K, V>>,
    /// Picks the shard; each shard hashes again with its own keys.
    router: RandomState,
    len: usize,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    pub fn new() -> Self {
        ShardedMap {
            shards: Vec::new(),
            router: RandomState::new(),
            len: 0,
        }
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The high bits: the shard's own table uses the low bits of its (other) hash.
        (self.router.hash_one(key) >> 56) as usize % SHARDS
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards.get(self.shard_of(key))?.get(key)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        self.shards.get_mut(shard)?.get_mut(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| HashMap::new()).collect();
        }
        let shard = self.shard_of(&key);
        let old = self.shards[shard].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        let old = self.shards.get_mut(shard)?.remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Keeps the entries `keep` says to. A shard left under a quarter full gives back
    /// half its room: forgetting most of a map frees memory, forgetting a little moves
    /// nothing.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &mut self.shards {
            let before = shard.len();
            shard.retain(|k, v| keep(k, v));
            self.len -= before - shard.len();
            if shard.len() < shard.capacity() / 4 {
                shard.shrink_to(shard.capacity() / 2);
            }
        }
    }

    /// Every entry, in no particular order (as a `HashMap`).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, Q, V> std::ops::Index<&Q> for ShardedMap<K, V>
where
    K: Hash + Eq + Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("key in the map")
    }
}

/// Equal when they hold the same entries, wherever each map's router put them.
impl<K: Hash + Eq, V: PartialEq> PartialEq for ShardedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq, V: Eq> Eq for ShardedMap<K, V> {}

impl<K: Hash + Eq + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for ShardedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of inserts and removes leaves the same entries as a `HashMap`.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec((0u8..9, 0u16..300, any::<u32>()), 0..600)) {
            let (mut model, mut map) = (HashMap::new(), ShardedMap::new());
            for (op, k, v) in ops {
                match op {
                    0..=4 => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                    5..=7 => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    _ => {
                        // Keeps the keys on one side of k, so some retains empty the map.
                        map.retain(|key, _| *key < k);
                        model.retain(|key, _| *key < k);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(map.get(k), Some(v));
                prop_assert_eq!(map[k], *v);
            }
            let mut entries: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
            entries.sort_unstable();
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(entries, expected);
        }
    }

    #[test]
    fn equal_maps_compare_equal_whatever_their_shards() {
        let a: ShardedMap<String, u32> = (0..1000).map(|i| (format!("r{i}"), i)).collect();
        let b: ShardedMap<String, u32> = (0..1000).rev().map(|i| (format!("r{i}"), i)).collect();
        assert_eq!(a, b);
        let mut c = b.clone();
        *c.get_mut("r7").unwrap() = 8;
        assert_ne!(a, c);
        c.remove("r7");
        assert_ne!(a, c, "a missing entry makes them differ");
        assert!(a.contains_key("r999") && !a.contains_key("r1000"));
    }

    #[test]
    fn a_map_mostly_forgotten_gives_its_room_back() {
        let mut map: ShardedMap<u64, u64> = (0..(SHARDS as u64 * 64)).map(|i| (i, i)).collect();
        let room = |m: &ShardedMap<u64, u64>| m.shards.iter().map(HashMap::capacity).sum::<usize>();
        let full = room(&map);
        map.retain(|k, _| k % 4 != 0);
        // (`capacity` counts a slot left as a tombstone as taken, so it may drop a little.)
        assert!(
            room(&map) > full * 3 / 4,
            "three quarters kept: no shard shrinks"
        );
        map.retain(|k, _| k % 64 == 1);
        assert_eq!(map.len(), SHARDS);
        assert!(room(&map) <= full / 2, "{} of {full}", room(&map));
        assert!((1..SHARDS as u64 * 64).step_by(64).all(|k| map[&k] == k));
    }

    #[test]
    fn entries_spread_over_the_shards() {
        let map: ShardedMap<u64, ()> = (0..(SHARDS as u64 * 100)).map(|i| (i, ())).collect();
        let fullest = map.shards.iter().map(HashMap::len).max().unwrap();
        assert!(fullest < 200, "a shard holds {fullest} of 100 expected");
    }
}

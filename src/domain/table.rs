//! Records in one dense vector, found by their keys through tables of positions (4 bytes and a
//! control byte an entry). A million devices then cost their records and little more, where a
//! `HashMap<String, Device>` stores each id twice and, just past a power of two, reserves room
//! for twice the records.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// What a [`Table`] finds a record by: key 0 is its unique id; keys 1.. may be shared by
/// several records (a serial number registered twice, a user's Macs).
pub(crate) trait Record {
    const KEYS: usize;
    fn key(&self, k: usize) -> &str;
}

impl Record for Box<str> {
    const KEYS: usize = 1;
    fn key(&self, _: usize) -> &str {
        self
    }
}

/// Ids numbered densely in the order first seen, each id's text stored once. Numbers are never
/// reused (an id removed keeps its number for when it returns), so the set grows only with
/// ids ever seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ids(Table<Box<str>>);

impl Ids {
    pub(crate) fn get(&self, id: &str) -> Option<u32> {
        self.0.position(id)
    }
    pub(crate) fn intern(&mut self, id: &str) -> u32 {
        self.0.position_or_insert(id, || id.into())
    }
    pub(crate) fn name(&self, n: u32) -> &str {
        self.0.at(n)
    }
    /// Room for `n` more ids.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.reserve(n)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    records: Vec<T>,
    /// Per key, the positions of the records, hashed by that key.
    positions: Vec<HashTable<u32>>,
    /// Seeded: keys are attacker-influenced. Clones keep the seed, so their hashes agree.
    hasher: RandomState,
}

impl<T: Record> Default for Table<T> {
    fn default() -> Self {
        Table {
            records: Vec::new(),
            positions: (0..T::KEYS).map(|_| HashTable::new()).collect(),
            hasher: RandomState::default(),
        }
    }
}

impl<T: Record> Table<T> {
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.records.iter()
    }
    /// Room for `n` more records.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
        let (records, hasher) = (&self.records, &self.hasher);
        for (k, positions) in self.positions.iter_mut().enumerate() {
            positions.reserve(n, |&q| hasher.hash_one(records[q as usize].key(k)));
        }
    }
    /// The record at a position, as [`Table::position`] or [`Table::insert`] gave it.
    pub(crate) fn at(&self, position: u32) -> &T {
        &self.records[position as usize]
    }
    pub(crate) fn position(&self, id: &str) -> Option<u32> {
        let records = &self.records;
        self.positions[0].find(self.hasher.hash_one(id), |&p| records[p as usize].key(0) == id).copied()
    }
    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.position(id).map(|p| self.at(p))
    }
    /// Every record whose key `k` is `value`.
    pub(crate) fn find<'a>(&'a self, k: usize, value: &'a str) -> impl Iterator<Item = &'a T> + Clone + use<'a, T> {
        let records = &self.records;
        self.positions[k]
            .iter_hash(self.hasher.hash_one(value))
            .map(move |&p| &records[p as usize])
            .filter(move |r| r.key(k) == value)
    }

    /// Inserts `record`, or replaces the one with its id (returned) where it stands, relinking
    /// only the keys that changed. A position stays valid until a record is removed.
    pub(crate) fn insert(&mut self, record: T) -> (u32, Option<T>) {
        if let Some(p) = self.position(record.key(0)) {
            let old = std::mem::replace(&mut self.records[p as usize], record);
            for k in 1..T::KEYS {
                if old.key(k) != self.records[p as usize].key(k) {
                    self.unlink(k, self.hasher.hash_one(old.key(k)), p);
                    let (records, hasher) = (&self.records, &self.hasher);
                    let rehash = |&q: &u32| hasher.hash_one(records[q as usize].key(k));
                    self.positions[k].insert_unique(rehash(&p), p, rehash);
                }
            }
            return (p, Some(old));
        }
        let p = u32::try_from(self.records.len()).expect("fewer than 2^32 records");
        self.records.push(record);
        let (records, hasher) = (&self.records, &self.hasher);
        for (k, positions) in self.positions.iter_mut().enumerate() {
            let rehash = |&q: &u32| hasher.hash_one(records[q as usize].key(k));
            positions.insert_unique(rehash(&p), p, rehash);
        }
        (p, None)
    }

    /// Changes the record with this id in place, if there is one; `change` must leave its keys
    /// as they were (nothing is relinked).
    pub(crate) fn modify(&mut self, id: &str, change: impl FnOnce(&mut T)) {
        let Some(p) = self.position(id) else { return };
        let record = &mut self.records[p as usize];
        #[cfg(debug_assertions)]
        let keys: Vec<String> = (0..T::KEYS).map(|k| record.key(k).to_string()).collect();
        change(record);
        #[cfg(debug_assertions)]
        debug_assert!((0..T::KEYS).all(|k| record.key(k) == keys[k]), "a modification changed a key");
    }

    /// Changes every record in place; `change` must leave their keys as they were.
    pub(crate) fn modify_all(&mut self, mut change: impl FnMut(&mut T)) {
        for record in &mut self.records {
            change(record);
        }
    }

    /// The position of the record with this id, `make` inserting it when there is none: one
    /// probe either way (the interners' path, millions of times at start-up).
    pub(crate) fn position_or_insert(&mut self, id: &str, make: impl FnOnce() -> T) -> u32 {
        debug_assert_eq!(T::KEYS, 1, "a record with shared keys is inserted through `insert`");
        let (records, hasher) = (&self.records, &self.hasher);
        let rehash = |&q: &u32| hasher.hash_one(records[q as usize].key(0));
        match self.positions[0].entry(hasher.hash_one(id), |&q| records[q as usize].key(0) == id, rehash) {
            hashbrown::hash_table::Entry::Occupied(entry) => *entry.get(),
            hashbrown::hash_table::Entry::Vacant(entry) => {
                let p = u32::try_from(records.len()).expect("fewer than 2^32 records");
                entry.insert(p);
                self.records.push(make());
                p
            }
        }
    }

    /// Removes the record with this id; the last record takes its position.
    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let p = self.position(id)?;
        for k in 0..T::KEYS {
            let key = self.records[p as usize].key(k);
            self.unlink(k, self.hasher.hash_one(key), p);
        }
        let last = (self.records.len() - 1) as u32;
        if p != last {
            for k in 0..T::KEYS {
                let hash = self.hasher.hash_one(self.records[last as usize].key(k));
                if let Some(slot) = self.positions[k].find_mut(hash, |&q| q == last) {
                    *slot = p;
                }
            }
        }
        Some(self.records.swap_remove(p as usize))
    }

    fn unlink(&mut self, k: usize, hash: u64, p: u32) {
        if let Ok(entry) = self.positions[k].find_entry(hash, |&q| q == p) {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Mac(&'static str, &'static str);
    impl Record for Mac {
        const KEYS: usize = 2;
        fn key(&self, k: usize) -> &str {
            if k == 0 { self.0 } else { self.1 }
        }
    }

    fn serials<'a>(t: &'a Table<Mac>, s: &'a str) -> Vec<&'static str> {
        let mut ids: Vec<_> = t.find(1, s).map(|m| m.0).collect();
        ids.sort();
        ids
    }

    #[test]
    fn finds_by_each_key_through_inserts_replacements_and_removals() {
        let mut t = Table::default();
        for (id, serial) in [("a", "s1"), ("b", "s1"), ("c", "s2"), ("d", "s3")] {
            assert_eq!(t.insert(Mac(id, serial)).1, None);
        }
        assert_eq!(serials(&t, "s1"), ["a", "b"]);
        assert_eq!(t.insert(Mac("b", "s2")).1, Some(Mac("b", "s1")));
        assert_eq!((serials(&t, "s1"), serials(&t, "s2")), (vec!["a"], vec!["b", "c"]));
        // Removing the first moves the last into its place: both stay found.
        assert_eq!(t.remove("a"), Some(Mac("a", "s1")));
        assert_eq!(t.remove("a"), None);
        assert_eq!(t.len(), 3);
        for (id, serial) in [("b", "s2"), ("c", "s2"), ("d", "s3")] {
            assert_eq!(t.get(id), Some(&Mac(id, serial)));
        }
        assert!(serials(&t, "s1").is_empty());
        assert_eq!(serials(&t, "s3"), ["d"]);
        let clone = t.clone();
        assert_eq!(clone.get("d"), Some(&Mac("d", "s3")));
    }

    proptest::proptest! {
        /// Any sequence of inserts and removals finds what a map of the same operations holds.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((0..12usize, 0..4usize, proptest::bool::ANY), 0..200)) {
            const IDS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
            const SERIALS: [&str; 4] = ["s0", "s1", "s2", "s3"];
            let mut t = Table::default();
            let mut model = std::collections::BTreeMap::new();
            for (id, serial, put) in ops {
                if put {
                    let old = t.insert(Mac(IDS[id], SERIALS[serial])).1;
                    proptest::prop_assert_eq!(old.map(|m| m.1), model.insert(IDS[id], SERIALS[serial]));
                } else {
                    proptest::prop_assert_eq!(t.remove(IDS[id]).map(|m| m.1), model.remove(IDS[id]));
                }
                proptest::prop_assert_eq!(t.len(), model.len());
                for id in IDS {
                    proptest::prop_assert_eq!(t.get(id).map(|m| m.1), model.get(id).copied());
                }
                for s in SERIALS {
                    let want: Vec<_> = model.iter().filter(|(_, v)| **v == s).map(|(k, _)| *k).collect();
                    proptest::prop_assert_eq!(serials(&t, s), want);
                }
            }
        }
    }
}

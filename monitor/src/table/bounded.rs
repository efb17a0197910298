//! A hash map that remembers insertion order, so the oldest entries can be
//! dropped first when it is full or when they age out.
//!
//! The order is a queue of (sequence number, key); removing a key leaves
//! its queue slot behind, recognised later as stale because the map holds
//! another sequence number (or nothing) for that key. The queue is
//! compacted when stale slots outnumber live ones, so memory stays within
//! a constant factor of the live entries whatever the churn.

use std::{collections::VecDeque, hash::Hash};

use foldhash::HashMap;

#[derive(Debug, Clone)]
pub struct BoundedMap<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(u64, K)>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedMap {
            map: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Inserts or replaces `key` (a replaced key becomes the newest) and
    /// returns the entries pushed out to stay within capacity, oldest first.
    pub fn insert(&mut self, key: K, value: V) -> Vec<(K, V)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(key.clone(), (value, seq));
        self.order.push_back((seq, key));
        let mut evicted = Vec::new();
        while self.map.len() > self.capacity {
            match self.pop_oldest() {
                Some(kv) => evicted.push(kv),
                None => break,
            }
        }
        self.compact_if_sparse();
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = self.map.remove(key).map(|(v, _)| v);
        self.compact_if_sparse();
        removed
    }

    /// The oldest live entry.
    pub fn oldest(&mut self) -> Option<(&K, &V)> {
        self.skip_stale();
        let (_, key) = self.order.front()?;
        self.map.get_key_value(key).map(|(k, (v, _))| (k, v))
    }

    /// Removes and returns the oldest live entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        self.skip_stale();
        let (_, key) = self.order.pop_front()?;
        self.map.remove(&key).map(|(v, _)| (key, v))
    }

    fn skip_stale(&mut self) {
        while let Some((seq, key)) = self.order.front() {
            if self.map.get(key).is_some_and(|(_, s)| s == seq) {
                return;
            }
            self.order.pop_front();
        }
    }

    fn compact_if_sparse(&mut self) {
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(seq, key)| map.get(key).is_some_and(|(_, s)| s == seq));
        }
    }

    /// Slots in the order queue, live or stale (for the memory bound).
    #[cfg(test)]
    pub fn order_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first() {
        let mut m = BoundedMap::new(3);
        assert!(m.insert(1, "a").is_empty());
        assert!(m.insert(2, "b").is_empty());
        assert!(m.insert(3, "c").is_empty());
        // Replacing 1 makes it the newest, so 2 goes first.
        assert!(m.insert(1, "a2").is_empty());
        assert_eq!(m.insert(4, "d"), vec![(2, "b")]);
        assert_eq!(m.insert(5, "e"), vec![(3, "c")]);
        assert_eq!(m.get(&1), Some(&"a2"));
        assert_eq!(m.len(), 3);
        assert_eq!(m.pop_oldest(), Some((1, "a2")));
    }

    #[test]
    fn removed_keys_do_not_come_back_as_oldest() {
        let mut m = BoundedMap::new(10);
        m.insert("x", 1);
        m.insert("y", 2);
        assert_eq!(m.remove(&"x"), Some(1));
        assert_eq!(m.oldest(), Some((&"y", &2)));
        assert_eq!(m.remove(&"x"), None);
    }

    #[test]
    fn churn_does_not_grow_the_order_queue() {
        let mut m = BoundedMap::new(100);
        for i in 0..100_000u32 {
            m.insert(i, ());
            if i >= 10 {
                m.remove(&(i - 10));
            }
        }
        assert_eq!(m.len(), 10);
        assert!(m.order_len() <= 2 * 10 + 1024 + 1, "{}", m.order_len());
    }
}

//! A bounded open-addressing flow table owned by one worker.
//!
//! Entries live in an arena reserved once at full capacity and filled as
//! flows appear (so a large table costs memory only for the flows it holds);
//! an index of (hash tag, entry) pairs with linear probing and backward-shift
//! deletion finds them. Each entry sits on one of several expiry lists, each kept in
//! deadline order, so expiring idle flows looks only at list heads. When the
//! table is full, the entry with the earliest deadline is evicted.

use super::key::FlowKey;

const NIL: u32 = u32::MAX;

/// Expiry classes: each list is ordered by deadline because every entry on it
/// shares one timeout and is appended when its deadline is (re)set.
pub const LISTS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    list: u8,
    deadline: u64,
}

/// An index slot: high 32 bits of the hash (never 0) and entry + 1, packed
/// into a u64; 0 is empty, so the index starts as zeroed (untouched) memory.
#[derive(Clone, Copy)]
struct Slot(u64);

impl Slot {
    const EMPTY: Slot = Slot(0);
    #[inline]
    fn new(tag: u32, entry: u32) -> Slot {
        Slot(((tag as u64) << 32) | (entry as u64 + 1))
    }
    #[inline]
    fn is_empty(self) -> bool {
        self.0 == 0
    }
    #[inline]
    fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }
    #[inline]
    fn entry(self) -> u32 {
        (self.0 as u32).wrapping_sub(1)
    }
}

/// A bounded flow table mapping [`FlowKey`] to `V`.
pub struct FlowTable<V> {
    slots: Vec<u64>,
    mask: usize,
    /// The index grows (doubling, up to this many slots) as flows arrive, so
    /// a table sized for a million flows holding a thousand stays in cache.
    max_slots: usize,
    keys: Vec<FlowKey>,
    hashes: Vec<u64>,
    values: Vec<V>,
    links: Vec<Link>,
    free: Vec<u32>,
    heads: [u32; LISTS],
    tails: [u32; LISTS],
    len: usize,
    cap: usize,
}

/// Where a lookup landed.
pub enum Lookup {
    Found(u32),
    /// Not present; insert at this index slot.
    Vacant(usize),
}

impl<V: Default + Clone> FlowTable<V> {
    /// A table holding at most `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let max_slots = (capacity * 2).next_power_of_two().max(16);
        let nslots = max_slots.min(4096);
        FlowTable {
            slots: vec![0u64; nslots],
            mask: nslots - 1,
            max_slots,
            keys: Vec::with_capacity(capacity),
            hashes: Vec::with_capacity(capacity),
            values: Vec::with_capacity(capacity),
            links: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            heads: [NIL; LISTS],
            tails: [NIL; LISTS],
            len: 0,
            cap: capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    #[inline]
    fn tag(hash: u64) -> u32 {
        ((hash >> 32) as u32).max(1)
    }

    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Lookup {
        let tag = Self::tag(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let s = Slot(self.slots[i]);
            if s.is_empty() {
                return Lookup::Vacant(i);
            }
            if s.tag() == tag && self.keys[s.entry() as usize] == *key {
                return Lookup::Found(s.entry());
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Double the index (at most to `max_slots`) once it is half full.
    fn grow_if_needed(&mut self) -> bool {
        let n = self.slots.len();
        if (self.len + 1) * 2 <= n || n >= self.max_slots {
            return false;
        }
        let old = std::mem::replace(&mut self.slots, vec![0u64; n * 2]);
        self.mask = n * 2 - 1;
        for s in old.into_iter().map(Slot).filter(|s| !s.is_empty()) {
            let mut i = self.hashes[s.entry() as usize] as usize & self.mask;
            while !Slot(self.slots[i]).is_empty() {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = s.0;
        }
        true
    }

    /// Insert at a vacant slot returned by `lookup`. The table must not be full.
    pub fn insert_at(&mut self, mut slot: usize, key: FlowKey, hash: u64, v: V, list: u8, deadline: u64) -> u32 {
        assert!(self.len < self.cap, "insert into a full flow table");
        if self.grow_if_needed() {
            slot = match self.lookup(&key, hash) {
                Lookup::Vacant(s) => s,
                Lookup::Found(_) => unreachable!("inserting a key that is present"),
            };
        }
        let e = match self.free.pop() {
            Some(e) => {
                self.keys[e as usize] = key;
                self.hashes[e as usize] = hash;
                self.values[e as usize] = v;
                e
            }
            None => {
                // first use of this arena entry (capacity was reserved up front)
                self.keys.push(key);
                self.hashes.push(hash);
                self.values.push(v);
                self.links.push(Link { prev: NIL, next: NIL, list: 0, deadline: 0 });
                (self.keys.len() - 1) as u32
            }
        };
        self.slots[slot] = Slot::new(Self::tag(hash), e).0;
        self.len += 1;
        self.link_tail(e, list, deadline);
        e
    }

    #[inline]
    pub fn get(&self, e: u32) -> &V {
        &self.values[e as usize]
    }
    #[inline]
    pub fn get_mut(&mut self, e: u32) -> &mut V {
        &mut self.values[e as usize]
    }
    #[inline]
    pub fn key(&self, e: u32) -> &FlowKey {
        &self.keys[e as usize]
    }
    pub fn list(&self, e: u32) -> u8 {
        self.links[e as usize].list
    }
    pub fn deadline(&self, e: u32) -> u64 {
        self.links[e as usize].deadline
    }

    /// Move entry `e` to the tail of `list` with a new deadline.
    #[inline]
    pub fn touch(&mut self, e: u32, list: u8, deadline: u64) {
        self.unlink(e);
        self.link_tail(e, list, deadline);
    }

    /// The entry with the earliest deadline across lists, if any.
    pub fn oldest(&self) -> Option<(u32, u64)> {
        let mut best: Option<(u32, u64)> = None;
        for &h in &self.heads {
            if h != NIL {
                let d = self.links[h as usize].deadline;
                if best.is_none_or(|(_, bd)| d < bd) {
                    best = Some((h, d));
                }
            }
        }
        best
    }

    /// An entry whose deadline is at or before `now`, if any.
    pub fn expired(&self, now: u64) -> Option<u32> {
        self.oldest().filter(|&(_, d)| d <= now).map(|(e, _)| e)
    }

    /// Remove entry `e`, returning its value.
    pub fn remove(&mut self, e: u32) -> V {
        let key = self.keys[e as usize];
        let hash = self.hashes[e as usize];
        let mut i = hash as usize & self.mask;
        while Slot(self.slots[i]).entry() != e {
            debug_assert!(!Slot(self.slots[i]).is_empty(), "entry missing from index");
            if Slot(self.slots[i]).is_empty() {
                break;
            }
            i = (i + 1) & self.mask;
        }
        let _ = key;
        // backward-shift deletion
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let s = Slot(self.slots[j]);
            if s.is_empty() {
                break;
            }
            let home = self.hashes[s.entry() as usize] as usize & self.mask;
            // move s into the hole if its home is not in (hole, j]
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.slots[hole] = s.0;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.slots[hole] = Slot::EMPTY.0;
        self.unlink(e);
        self.free.push(e);
        self.len -= 1;
        std::mem::take(&mut self.values[e as usize])
    }

    /// All live entries (for a final flush).
    pub fn entries(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.len);
        for l in 0..LISTS {
            let mut e = self.heads[l];
            while e != NIL {
                v.push(e);
                e = self.links[e as usize].next;
            }
        }
        v
    }

    fn unlink(&mut self, e: u32) {
        let Link { prev, next, list, .. } = self.links[e as usize];
        let list = list as usize;
        if prev == NIL {
            self.heads[list] = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[list] = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[e as usize].prev = NIL;
        self.links[e as usize].next = NIL;
    }

    fn link_tail(&mut self, e: u32, list: u8, deadline: u64) {
        let l = list as usize;
        let tail = self.tails[l];
        self.links[e as usize] = Link { prev: tail, next: NIL, list, deadline };
        if tail == NIL {
            self.heads[l] = e;
        } else {
            self.links[tail as usize].next = e;
        }
        self.tails[l] = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(i: u16) -> FlowKey {
        FlowKey { lo_port: i, hi_port: i.wrapping_mul(7), proto: 6, ..FlowKey::default() }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u16, u64),
        Remove(u16),
        Expire(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..64, 0u64..1000).prop_map(|(k, t)| Op::Upsert(k, t)),
            (0u16..64).prop_map(Op::Remove),
            (0u64..1000).prop_map(Op::Expire),
        ]
    }

    #[test]
    fn index_grows_and_keeps_every_entry() {
        let mut t: FlowTable<u64> = FlowTable::new(100_000);
        let start_slots = t.slots.len();
        let keys: Vec<FlowKey> = (0..30_000u32)
            .map(|i| FlowKey { lo_port: i as u16, hi_port: (i >> 16) as u16, proto: 17, vlan: 7, ..FlowKey::default() })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            match t.lookup(k, k.hash64()) {
                Lookup::Vacant(s) => {
                    t.insert_at(s, *k, k.hash64(), i as u64, 1, i as u64);
                }
                Lookup::Found(_) => panic!("duplicate"),
            }
        }
        assert!(t.slots.len() > start_slots, "index did not grow");
        for (i, k) in keys.iter().enumerate() {
            match t.lookup(k, k.hash64()) {
                Lookup::Found(e) => assert_eq!(*t.get(e), i as u64),
                Lookup::Vacant(_) => panic!("lost key {i}"),
            }
        }
        for k in keys.iter().step_by(2) {
            if let Lookup::Found(e) = t.lookup(k, k.hash64()) {
                t.remove(e);
            }
        }
        assert_eq!(t.len(), 15_000);
        for (i, k) in keys.iter().enumerate() {
            let found = matches!(t.lookup(k, k.hash64()), Lookup::Found(_));
            assert_eq!(found, i % 2 == 1);
        }
    }

    proptest! {
        /// The table behaves like a HashMap bounded to its capacity, where a
        /// full table evicts the entry with the smallest deadline.
        #[test]
        fn model(ops in proptest::collection::vec(op(), 1..400), cap in 1usize..40) {
            let mut t: FlowTable<u64> = FlowTable::new(cap);
            let mut m: HashMap<FlowKey, (u64, u64)> = HashMap::new(); // value, deadline
            let mut seq = 0u64;
            for o in ops {
                seq += 1;
                match o {
                    Op::Upsert(k, dl) => {
                        let key = key(k);
                        // deadline must be monotone per list; use seq-based deadlines
                        let dl = seq * 1000 + dl % 1000;
                        let h = key.hash64() & 0xff0f; // force collisions
                        match t.lookup(&key, h) {
                            Lookup::Found(e) => {
                                *t.get_mut(e) += 1;
                                t.touch(e, 0, dl);
                                let v = m.get_mut(&key).unwrap();
                                v.0 += 1;
                                v.1 = dl;
                            }
                            Lookup::Vacant(mut s) => {
                                prop_assert!(!m.contains_key(&key));
                                if t.is_full() {
                                    let (e, _) = t.oldest().unwrap();
                                    let ek = *t.key(e);
                                    let (mk, _) = m.iter().min_by_key(|(_, v)| v.1).map(|(k, v)| (*k, *v)).unwrap();
                                    prop_assert_eq!(ek, mk);
                                    t.remove(e);
                                    m.remove(&ek);
                                    s = match t.lookup(&key, h) { Lookup::Vacant(s) => s, Lookup::Found(_) => unreachable!() };
                                }
                                t.insert_at(s, key, h, 1, 0, dl);
                                m.insert(key, (1, dl));
                            }
                        }
                    }
                    Op::Remove(k) => {
                        let key = key(k);
                        let h = key.hash64() & 0xff0f;
                        match t.lookup(&key, h) {
                            Lookup::Found(e) => {
                                let v = t.remove(e);
                                prop_assert_eq!(Some(v), m.remove(&key).map(|x| x.0));
                            }
                            Lookup::Vacant(_) => prop_assert!(!m.contains_key(&key)),
                        }
                    }
                    Op::Expire(d) => {
                        let now = seq * 1000 - 1000 + d;
                        while let Some(e) = t.expired(now) {
                            let k = *t.key(e);
                            let (_, dl) = m.remove(&k).unwrap();
                            prop_assert!(dl <= now);
                            t.remove(e);
                        }
                        prop_assert!(m.values().all(|v| v.1 > now));
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                prop_assert!(t.len() <= cap);
            }
            for (k, (v, _)) in &m {
                let h = k.hash64() & 0xff0f;
                match t.lookup(k, h) {
                    Lookup::Found(e) => prop_assert_eq!(t.get(e), v),
                    Lookup::Vacant(_) => prop_assert!(false, "missing key"),
                }
            }
        }
    }
}

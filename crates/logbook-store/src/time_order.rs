//! A tenant's listing order: the set of `(created_at, ordinal)`, walked in ranges in both directions.
//!
//! Events mostly arrive in `created_at` order, so the set is a sorted vector (16 bytes per event) that grows at
//! its end, and a B-tree of the keys that arrived late (below the vector's last key). A walk merges the two.
//! When the B-tree holds more than [`LATE_LIMIT`] keys and more than 1/16 of the vector's, it is merged into
//! the vector, so each late key is moved about 16 times at most, amortized. A B-tree of every key, as before,
//! took 27–32 bytes per event: its leaves are about half full when keys arrive in order.

use std::collections::btree_set;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::slice;

pub type Key = (i64, u32);

/// Late keys kept apart before they are merged into the vector, at least.
const LATE_LIMIT: usize = 4096;

#[derive(Debug, Default)]
pub struct TimeOrder {
    sorted: Vec<Key>,
    late: BTreeSet<Key>,
}

impl TimeOrder {
    /// Adds a key (keys are distinct: the ordinal is).
    pub fn insert(&mut self, key: Key) {
        match self.sorted.last() {
            Some(last) if key < *last => {
                self.late.insert(key);
                if self.late.len() > LATE_LIMIT.max(self.sorted.len() / 16) {
                    self.merge_late();
                }
            }
            _ => self.sorted.push(key),
        }
    }

    fn merge_late(&mut self) {
        let sorted = std::mem::take(&mut self.sorted);
        let late = std::mem::take(&mut self.late);
        let mut merged = Vec::with_capacity(sorted.len() + late.len());
        merged.extend(Merge::new(sorted.iter(), late.range::<Key, _>(..), false));
        self.sorted = merged;
    }

    pub fn first(&self) -> Option<Key> {
        let sorted = self.sorted.first().copied();
        let late = self.late.first().copied();
        sorted.into_iter().chain(late).min()
    }

    pub fn last(&self) -> Option<Key> {
        let sorted = self.sorted.last().copied();
        let late = self.late.last().copied();
        sorted.into_iter().chain(late).max()
    }

    /// The keys within the bounds, ascending or (`descending`) descending. Empty when the bounds cross.
    pub fn range(&self, lower: Bound<Key>, upper: Bound<Key>, descending: bool) -> Merge<'_> {
        if crossed(&lower, &upper) {
            return Merge::new([].iter(), self.late.range(EMPTY), descending);
        }
        let start = match lower {
            Bound::Included(low) => self.sorted.partition_point(|key| *key < low),
            Bound::Excluded(low) => self.sorted.partition_point(|key| *key <= low),
            Bound::Unbounded => 0,
        };
        let end = match upper {
            Bound::Included(high) => self.sorted.partition_point(|key| *key <= high),
            Bound::Excluded(high) => self.sorted.partition_point(|key| *key < high),
            Bound::Unbounded => self.sorted.len(),
        };
        let sorted = self.sorted[start..end.max(start)].iter();
        Merge::new(sorted, self.late.range((lower, upper)), descending)
    }
}

/// A range of no keys (after the largest).
const EMPTY: (Bound<Key>, Bound<Key>) = (Bound::Excluded((i64::MAX, u32::MAX)), Bound::Unbounded);

/// Whether no key can be within the bounds; `BTreeSet::range` panics on such bounds.
fn crossed(lower: &Bound<Key>, upper: &Bound<Key>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low) | Bound::Excluded(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low >= high,
        _ => false,
    }
}

/// The keys of a slice of the vector and a range of the late ones, merged in one direction.
pub struct Merge<'a> {
    sorted: slice::Iter<'a, Key>,
    late: btree_set::Range<'a, Key>,
    next_sorted: Option<Key>,
    next_late: Option<Key>,
    descending: bool,
}

impl<'a> Merge<'a> {
    fn new(
        sorted: slice::Iter<'a, Key>,
        late: btree_set::Range<'a, Key>,
        descending: bool,
    ) -> Self {
        Merge {
            sorted,
            late,
            next_sorted: None,
            next_late: None,
            descending,
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = Key;

    fn next(&mut self) -> Option<Key> {
        let descending = self.descending;
        if self.next_sorted.is_none() {
            let key = if descending {
                self.sorted.next_back()
            } else {
                self.sorted.next()
            };
            self.next_sorted = key.copied();
        }
        if self.next_late.is_none() {
            let key = if descending {
                self.late.next_back()
            } else {
                self.late.next()
            };
            self.next_late = key.copied();
        }
        let from_sorted = match (self.next_sorted, self.next_late) {
            (Some(sorted), Some(late)) => (sorted < late) != descending,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if from_sorted {
            self.next_sorted.take()
        } else {
            self.next_late.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bound(kind: u8, key: Key) -> Bound<Key> {
        match kind % 3 {
            0 => Bound::Included(key),
            1 => Bound::Excluded(key),
            _ => Bound::Unbounded,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever the arrival order, walks see what a B-tree of every key would, in both directions.
        #[test]
        fn walks_as_a_btree_would(
            times in proptest::collection::vec((0i64..50, 0u8..10), 0..12_000),
            ranges in proptest::collection::vec((0u8..3, 0i64..60, 0u8..3, 0i64..60, any::<bool>()), 1..20),
        ) {
            let mut order = TimeOrder::default();
            let mut reference = BTreeSet::new();
            let mut clock = 0i64;
            for (ordinal, (step, late)) in times.into_iter().enumerate() {
                // Mostly ascending; sometimes far back.
                clock += step % 3;
                let created_at = if late == 0 { clock - step } else { clock };
                let key = (created_at, ordinal as u32);
                order.insert(key);
                reference.insert(key);
            }
            prop_assert_eq!(order.first(), reference.first().copied());
            prop_assert_eq!(order.last(), reference.last().copied());
            for (low_kind, low, high_kind, high, descending) in ranges {
                let lower = bound(low_kind, (low, 7));
                let upper = bound(high_kind, (high, 3));
                let walked: Vec<Key> = order.range(lower, upper, descending).collect();
                let mut expected: Vec<Key> = if crossed(&lower, &upper) {
                    Vec::new()
                } else {
                    reference.range((lower, upper)).copied().collect()
                };
                if descending {
                    expected.reverse();
                }
                prop_assert_eq!(walked, expected);
            }
        }
    }

    #[test]
    fn late_keys_are_merged_into_the_vector() {
        let mut order = TimeOrder::default();
        for ordinal in 0..10_000u32 {
            // Every other event arrives a second late.
            let created_at = i64::from(ordinal) * 10 - if ordinal % 2 == 1 { 1_000 } else { 0 };
            order.insert((created_at, ordinal));
        }
        assert!(order.late.len() <= LATE_LIMIT);
        assert!(order.sorted.len() > 5_000);
        let all: Vec<Key> = order
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

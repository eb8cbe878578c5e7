//! A set of a tenant's ordinals that grows at its end: the postings, `present` sets and hourly sets of the
//! index.
//!
//! Ordinals arrive in increasing order, and many sets are one run (a field every event has; an hour's events
//! when they arrive in time order) or one ordinal (an identifier seen once). Such a set is two integers. Most
//! of the others are small (an identifier seen a few times): up to three ordinals are kept inline, and up to
//! [`LIST_LIMIT`] they are a sorted list of `u32` behind one thin pointer. A roaring bitmap costs more than
//! that for a few ordinals: its container vector, an array per container (a set spread over a large tenant's
//! ordinals has one container per 65,536 of them), and the bookkeeping below. Past the limit the set becomes a roaring bitmap. Adding to the bitmap
//! does not use roaring's `try_push`: on a bitmap container that reads the container backwards from its end
//! to find the maximum, up to 8 KiB per added ordinal. The set remembers its last ordinal and how many
//! ordinals its last container holds instead, and pushes onto an array container (cheap) or sets the bit of
//! a bitmap container. It also buffers the newest few ordinals in its own box and adds them to the bitmap
//! together, so that an append rarely touches the bitmap's containers (cache misses, on a large index).
//!
//! The set is 16 bytes, so a term dictionary entry is a short string and 16 bytes.

use roaring::RoaringBitmap;
use thin_vec::ThinVec;

/// The most ordinals kept inline.
const FEW: usize = 3;

/// Roaring's largest array container; a container with more ordinals is a bitmap.
const ARRAY_LIMIT: u32 = 4096;

/// The most ordinals a list holds; one more makes it a bitmap. A list of 128 takes 528 bytes; a bitmap of
/// 128 ordinals in one container about 300, in 16 containers (a large tenant's rare term) about 1,000.
pub const LIST_LIMIT: usize = 128;

#[derive(Debug, Clone)]
pub enum Ordinals {
    /// `start..end`; empty when they are equal.
    Run {
        start: u32,
        end: u32,
    },
    /// Two or three ordinals, ascending, that are not one run (the first `len` of `items`), kept inline: most
    /// identifiers seen more than once are seen only a few times, and a list for them is an allocation and a
    /// cache miss on every append.
    Few {
        len: u8,
        items: [u32; FEW],
    },
    /// At least four and at most [`LIST_LIMIT`] ordinals, ascending, that are not one run.
    List(ThinVec<u32>),
    Bitmap(Box<Tail>),
}

#[derive(Debug, Clone)]
pub struct Tail {
    bitmap: RoaringBitmap,
    /// The largest ordinal in `bitmap`.
    last: u32,
    /// How many ordinals share `last`'s container (its upper 16 bits).
    in_last_container: u32,
    /// The newest ordinals, ascending and above `last`, not in `bitmap` yet: an append touches only this box
    /// until it is full. Each append into the bitmap is three dependent reads (its container vector, the
    /// container, the container's array), and for the many bitmaps of a large tenant's index those are cache
    /// misses; buffering makes it one set of misses per [`PENDING`] appends.
    pending: [u32; PENDING],
    pending_len: u32,
}

/// Ordinals a bitmap buffers before adding them.
const PENDING: usize = 10;

impl Default for Ordinals {
    fn default() -> Self {
        Ordinals::Run { start: 0, end: 0 }
    }
}

impl Ordinals {
    pub fn one(ordinal: u32) -> Self {
        Ordinals::Run {
            start: ordinal,
            end: ordinal + 1,
        }
    }

    /// Adds an ordinal: O(1) when it is not below the largest one (the case on ingest), correct in any order.
    pub fn push(&mut self, ordinal: u32) {
        match self {
            Ordinals::Run { start, end } if start == end => {
                *self = Ordinals::one(ordinal);
            }
            Ordinals::Run { end, .. } if ordinal == *end => *end += 1,
            Ordinals::Run { start, end } if (*start..*end).contains(&ordinal) => {}
            Ordinals::Run { start, end } if ((*end - *start) as usize) < FEW => {
                // The run's one or two ordinals, then this one inserted among them below.
                let mut items = [0; FEW];
                for (slot, existing) in items.iter_mut().zip(*start..*end) {
                    *slot = existing;
                }
                *self = Ordinals::Few {
                    len: (*end - *start) as u8,
                    items,
                };
                self.push(ordinal);
            }
            Ordinals::Run { start, end } if ((*end - *start) as usize) < LIST_LIMIT => {
                let mut list: ThinVec<u32> = ThinVec::with_capacity((*end - *start) as usize + 1);
                list.extend(*start..*end);
                insert_sorted(&mut list, ordinal);
                *self = Ordinals::List(list);
            }
            Ordinals::Run { start, end } => {
                let mut bitmap = RoaringBitmap::new();
                bitmap.insert_range(*start..*end);
                *self = Ordinals::Bitmap(Tail::new(bitmap, ordinal));
            }
            Ordinals::Few { len, items } => {
                let present = &items[..*len as usize];
                let at = present.partition_point(|&existing| existing < ordinal);
                if present.get(at) == Some(&ordinal) {
                    return;
                }
                if (*len as usize) < FEW {
                    items.copy_within(at..*len as usize, at + 1);
                    items[at] = ordinal;
                    *len += 1;
                } else {
                    let mut list: ThinVec<u32> = ThinVec::with_capacity(2 * FEW);
                    list.extend(present.iter().copied());
                    list.insert(at, ordinal);
                    *self = Ordinals::List(list);
                }
            }
            Ordinals::List(list) if list.len() < LIST_LIMIT => insert_sorted(list, ordinal),
            Ordinals::List(list) => {
                if list.binary_search(&ordinal).is_err() {
                    let bitmap = RoaringBitmap::from_sorted_iter(list.iter().copied())
                        .expect("a list is sorted and without repeats");
                    *self = Ordinals::Bitmap(Tail::new(bitmap, ordinal));
                }
            }
            Ordinals::Bitmap(tail) => tail.push(ordinal),
        }
    }

    /// The ordinals held as a sorted slice (inline or a list), or for a bitmap those it has not added yet.
    fn sorted(&self) -> &[u32] {
        match self {
            Ordinals::Run { .. } => &[],
            Ordinals::Few { len, items } => &items[..*len as usize],
            Ordinals::List(list) => list,
            Ordinals::Bitmap(tail) => tail.pending(),
        }
    }

    pub fn len(&self) -> u64 {
        let sorted = self.sorted().len() as u64;
        match self {
            Ordinals::Run { start, end } => u64::from(end - start),
            Ordinals::Few { .. } | Ordinals::List(_) => sorted,
            Ordinals::Bitmap(tail) => tail.bitmap.len() + sorted,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds every ordinal of the set to `out`.
    pub fn add_to(&self, out: &mut RoaringBitmap) {
        match self {
            Ordinals::Run { start, end } => {
                out.insert_range(*start..*end);
            }
            Ordinals::Few { .. } | Ordinals::List(_) => out.extend(self.sorted().iter().copied()),
            Ordinals::Bitmap(tail) => {
                *out |= &tail.bitmap;
                out.extend(self.sorted().iter().copied());
            }
        }
    }

    pub fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            Ordinals::Run { .. } => {
                let mut bitmap = RoaringBitmap::new();
                self.add_to(&mut bitmap);
                bitmap
            }
            Ordinals::Few { .. } | Ordinals::List(_) => {
                RoaringBitmap::from_sorted_iter(self.sorted().iter().copied())
                    .expect("inline ordinals and lists are sorted and without repeats")
            }
            Ordinals::Bitmap(tail) => {
                let mut bitmap = tail.bitmap.clone();
                bitmap.extend(self.sorted().iter().copied());
                bitmap
            }
        }
    }

    /// How many ordinals of `other` are in the set.
    pub fn intersection_len(&self, other: &RoaringBitmap) -> u64 {
        let sorted = self
            .sorted()
            .iter()
            .filter(|&&ordinal| other.contains(ordinal))
            .count() as u64;
        match self {
            Ordinals::Run { start, end } if start == end => 0,
            Ordinals::Run { start, end } => other.range_cardinality(*start..*end),
            Ordinals::Few { .. } | Ordinals::List(_) => sorted,
            Ordinals::Bitmap(tail) => tail.bitmap.intersection_len(other) + sorted,
        }
    }

    /// The ordinals, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (run, bitmap) = match self {
            Ordinals::Run { start, end } => (*start..*end, None),
            Ordinals::Bitmap(tail) => (0..0, Some(tail.bitmap.iter())),
            Ordinals::Few { .. } | Ordinals::List(_) => (0..0, None),
        };
        // A bitmap's pending ordinals are above its bitmap's, so they come after them.
        run.chain(bitmap.into_iter().flatten())
            .chain(self.sorted().iter().copied())
    }
}

/// Adds `ordinal` to a sorted list unless it is there: a push when it is the largest.
fn insert_sorted(list: &mut ThinVec<u32>, ordinal: u32) {
    match list.last() {
        Some(&last) if ordinal > last => list.push(ordinal),
        _ => {
            if let Err(at) = list.binary_search(&ordinal) {
                list.insert(at, ordinal);
            }
        }
    }
}

impl Tail {
    /// A bitmap's bookkeeping, then `ordinal` added.
    fn new(bitmap: RoaringBitmap, ordinal: u32) -> Box<Tail> {
        let last = bitmap
            .max()
            .expect("a set becomes a bitmap when it has ordinals");
        let in_last_container = bitmap.range_cardinality(last & !0xFFFF..=last) as u32;
        let mut tail = Box::new(Tail {
            bitmap,
            last,
            in_last_container,
            pending: [0; PENDING],
            pending_len: 0,
        });
        tail.push(ordinal);
        tail
    }

    fn pending(&self) -> &[u32] {
        &self.pending[..self.pending_len as usize]
    }

    fn push(&mut self, ordinal: u32) {
        let newest = self.pending().last().copied().unwrap_or(self.last);
        if ordinal <= newest {
            // Out of order (not on ingest): into the bitmap directly, after what is pending.
            self.flush();
            self.bitmap.insert(ordinal);
            return;
        }
        self.pending[self.pending_len as usize] = ordinal;
        self.pending_len += 1;
        if self.pending_len as usize == PENDING {
            self.flush();
        }
    }

    /// Moves the pending ordinals into the bitmap.
    fn flush(&mut self) {
        for at in 0..self.pending_len as usize {
            let ordinal = self.pending[at];
            if ordinal >> 16 != self.last >> 16 {
                self.in_last_container = 0;
            }
            if self.in_last_container < ARRAY_LIMIT {
                // An array container (or none yet): a push onto its end.
                if self.bitmap.try_push(ordinal).is_err() {
                    self.bitmap.insert(ordinal);
                }
            } else {
                // A bitmap container: one bit.
                self.bitmap.insert(ordinal);
            }
            self.in_last_container += 1;
            self.last = ordinal;
        }
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever the order and density, the set holds what a plain bitmap would.
        #[test]
        fn holds_what_a_bitmap_holds(
            steps in proptest::collection::vec((0u32..3, 1u32..70_000), 0..150),
            out_of_order in proptest::collection::vec(0u32..400_000, 0..5),
        ) {
            let mut ordinals = Ordinals::default();
            let mut reference = RoaringBitmap::new();
            let mut next = 0u32;
            for (kind, step) in steps {
                match kind {
                    // A run: the next `step % 5000` ordinals.
                    0 => for _ in 0..step % 5000 {
                        ordinals.push(next);
                        reference.insert(next);
                        next += 1;
                    },
                    // A gap.
                    1 => next += step,
                    // The same ordinal again.
                    _ => if let Some(last) = next.checked_sub(1) {
                        ordinals.push(last);
                        reference.insert(last);
                    },
                }
            }
            for ordinal in out_of_order {
                ordinals.push(ordinal);
                reference.insert(ordinal);
            }
            prop_assert_eq!(ordinals.len(), reference.len());
            prop_assert_eq!(ordinals.to_bitmap(), reference.clone());
            prop_assert_eq!(ordinals.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
            let probe = RoaringBitmap::from_iter((0..400_000).step_by(7));
            prop_assert_eq!(ordinals.intersection_len(&probe), reference.intersection_len(&probe));
        }
    }

    #[test]
    fn a_few_ordinals_are_a_list_until_the_limit() {
        let mut ordinals = Ordinals::one(10);
        ordinals.push(10);
        ordinals.push(12);
        ordinals.push(11);
        assert!(matches!(
            ordinals,
            Ordinals::Few {
                len: 3,
                items: [10, 11, 12]
            }
        ));
        ordinals.push(3);
        assert!(matches!(&ordinals, Ordinals::List(list) if list[..] == [3, 10, 11, 12]));
        for ordinal in 0..LIST_LIMIT as u32 * 2 {
            ordinals.push(ordinal * 3);
            let expected = (0..=ordinal)
                .map(|o| o * 3)
                .chain([3, 10, 11, 12])
                .collect::<RoaringBitmap>();
            assert_eq!(ordinals.to_bitmap(), expected);
            assert_eq!(
                matches!(ordinals, Ordinals::List(_)),
                expected.len() as usize <= LIST_LIMIT,
                "{} ordinals",
                expected.len()
            );
        }
        assert_eq!(std::mem::size_of::<Ordinals>(), 16);
    }

    #[test]
    fn a_dense_set_becomes_bitmap_containers() {
        let mut ordinals = Ordinals::one(0);
        for ordinal in (2..200_000).step_by(2) {
            ordinals.push(ordinal);
        }
        assert_eq!(ordinals.len(), 100_000);
        let Ordinals::Bitmap(tail) = &ordinals else {
            panic!("a set with gaps is a bitmap")
        };
        let flushed = 100_000 - tail.pending_len;
        let last = 2 * (flushed - 1);
        assert_eq!(tail.last, last);
        assert_eq!(tail.in_last_container, (last - 3 * 65_536) / 2 + 1);
        assert_eq!(
            tail.pending(),
            &(last + 2..200_000).step_by(2).collect::<Vec<_>>()[..]
        );
    }
}

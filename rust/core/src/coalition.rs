//! Coalitions as bitsets of any width.

use smallvec::SmallVec;

/// A set of players as a bitset; works for any number of players, and stays off the heap up
/// to 128 players.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Coalition(SmallVec<[u64; 2]>);

/// Number of 64-bit words needed for `n` players.
#[inline]
pub fn words_for(n: usize) -> usize {
    n.div_ceil(64).max(1)
}

impl Coalition {
    /// The empty coalition for `n` players.
    pub fn empty(n: usize) -> Self {
        Coalition(SmallVec::from_elem(0u64, words_for(n)))
    }

    /// The grand coalition of `n` players.
    pub fn full(n: usize) -> Self {
        let mut c = Self::empty(n);
        for i in 0..n {
            c.insert(i);
        }
        c
    }

    /// Build from the members listed in `members`.
    pub fn from_members(n: usize, members: &[u32]) -> Self {
        let mut c = Self::empty(n);
        for &i in members {
            c.insert(i as usize);
        }
        c
    }

    /// Build from a boolean membership row of length `n`.
    pub fn from_bools(row: &[bool]) -> Self {
        let mut c = Self::empty(row.len());
        // eight bools (bytes of 0 or 1) at a time: one multiply gathers their low bits
        let mut chunks = row.chunks_exact(8);
        for (k, chunk) in chunks.by_ref().enumerate() {
            let mut bytes = [0u8; 8];
            for (b, &x) in bytes.iter_mut().zip(chunk) {
                *b = x as u8;
            }
            let bits = u64::from_le_bytes(bytes).wrapping_mul(0x0102_0408_1020_4080) >> 56;
            c.0[k / 8] |= bits << (8 * (k % 8));
        }
        let done = row.len() - chunks.remainder().len();
        for (i, &b) in chunks.remainder().iter().enumerate() {
            if b {
                c.insert(done + i);
            }
        }
        c
    }

    /// Build from the low `n` bits of `mask` (n <= 64).
    pub fn from_mask(n: usize, mask: u64) -> Self {
        let mut c = Self::empty(n);
        c.0[0] = mask;
        c
    }

    #[inline]
    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1u64 << (i % 64);
    }

    #[inline]
    pub fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1u64 << (i % 64));
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The players of `n` not in this coalition.
    pub fn complement(&self, n: usize) -> Self {
        let mut c = Coalition(self.0.iter().map(|w| !w).collect());
        let tail = n % 64;
        let last = c.0.len() - 1;
        if tail != 0 {
            c.0[last] &= (1u64 << tail) - 1;
        }
        if n == 0 {
            c.0[0] = 0;
        }
        c
    }

    /// Members in increasing order.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    None
                } else {
                    let t = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    Some(wi * 64 + t)
                }
            })
        })
    }

    /// Write the membership of `n` players into `out` as booleans.
    pub fn write_bools(&self, out: &mut [bool]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.contains(i);
        }
    }

    pub fn words(&self) -> &[u64] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip_bools(row in proptest::collection::vec(any::<bool>(), 1..200)) {
            let c = Coalition::from_bools(&row);
            let mut back = vec![false; row.len()];
            c.write_bools(&mut back);
            prop_assert_eq!(&back, &row);
            prop_assert_eq!(c.len(), row.iter().filter(|&&b| b).count());
            let members: Vec<usize> = c.members().collect();
            let expected: Vec<usize> = row.iter().enumerate().filter(|(_, &b)| b).map(|(i, _)| i).collect();
            prop_assert_eq!(members, expected);
            let comp = c.complement(row.len());
            prop_assert_eq!(comp.len() + c.len(), row.len());
            prop_assert_eq!(comp.complement(row.len()), c);
        }
    }

    #[test]
    fn wide_coalitions_are_distinct() {
        let a = Coalition::from_members(130, &[129]);
        let b = Coalition::from_members(130, &[65]);
        assert_ne!(a, b);
        assert!(a.contains(129) && !a.contains(65));
        assert_eq!(Coalition::full(130).len(), 130);
    }
}

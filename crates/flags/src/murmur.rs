//! MurmurHash3 x86 32-bit (seed 0), the hash the flagd specification names for
//! `fractional`, written so that a key made of several pieces (the flag key, then the
//! targeting key) is hashed without first being concatenated into a new string.

/// A streaming MurmurHash3 x86_32 hasher.
pub(crate) struct Murmur3 {
    h: u32,
    tail: [u8; 4],
    tail_len: usize,
    len: usize,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

impl Murmur3 {
    pub(crate) fn new() -> Self {
        Murmur3 { h: 0, tail: [0; 4], tail_len: 0, len: 0 }
    }

    fn block(&mut self, k: u32) {
        let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        self.h ^= k;
        self.h = self.h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if self.tail_len > 0 {
            let take = (4 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 4 {
                return;
            }
            self.block(u32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut chunks = bytes.chunks_exact(4);
        for chunk in &mut chunks {
            self.block(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        }
        let rest = chunks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    pub(crate) fn finish(mut self) -> u32 {
        if self.tail_len > 0 {
            let mut k = 0u32;
            for (i, byte) in self.tail[..self.tail_len].iter().enumerate() {
                k |= u32::from(*byte) << (8 * i);
            }
            self.h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        }
        // The length is mixed in modulo 2^32, as the reference implementation does.
        let mut h = self.h ^ (self.len as u32);
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::Murmur3;

    fn hash(parts: &[&str]) -> u32 {
        let mut m = Murmur3::new();
        for p in parts {
            m.write(p.as_bytes());
        }
        m.finish()
    }

    #[test]
    fn known_vectors_of_murmur3_x86_32_with_seed_zero() {
        assert_eq!(hash(&[""]), 0);
        assert_eq!(hash(&["a"]), 0x3c25_69b2);
        assert_eq!(hash(&["abc"]), 0xb3dd_93fa);
        assert_eq!(hash(&["Hello, world!"]), 0xc036_3e43);
        assert_eq!(hash(&["The quick brown fox jumps over the lazy dog"]), 0x2e4f_f723);
    }

    #[test]
    fn a_key_hashed_in_pieces_hashes_as_the_whole() {
        let whole = "flag-keyjon@company.com";
        for cut in 0..=whole.len() {
            let (a, b) = whole.split_at(cut);
            for cut2 in 0..=b.len() {
                let (b1, b2) = b.split_at(cut2);
                assert_eq!(hash(&[a, b1, b2]), hash(&[whole]), "{a:?} {b1:?} {b2:?}");
            }
        }
    }
}

//! The buffer map's bitmap: bit `i` (LSB first within each byte) stands
//! for `base + i`.

/// Sets bit `seq - base` in a bitmap.
pub fn set_bit(bits: &mut Vec<u8>, base: u64, seq: u64) {
    let i = (seq - base) as usize;
    if bits.len() <= i / 8 {
        bits.resize(i / 8 + 1, 0);
    }
    bits[i / 8] |= 1 << (i % 8);
}

/// The sequence numbers whose bits are set.
pub fn iter_bits(base: u64, bits: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bits.iter().enumerate().flat_map(move |(byte, &b)| {
        (0..8)
            .filter(move |bit| b & (1 << bit) != 0)
            .map(move |bit| base + (byte * 8 + bit) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_round_trip() {
        let mut bits = Vec::new();
        for s in [10, 11, 17, 40] {
            set_bit(&mut bits, 10, s);
        }
        assert_eq!(
            iter_bits(10, &bits).collect::<Vec<_>>(),
            vec![10, 11, 17, 40]
        );
    }
}

//! Byte encodings of store keys.
//!
//! All trees are shared by every tenant; keys start with a scope (the tenant id and,
//! where needed, more components) joined by NUL, so one tenant's data is one
//! contiguous key range. Integers are big-endian with the sign bit flipped so that
//! byte order equals numeric order.

/// Separator between key components; ids and tenant names never contain it.
pub const SEP: u8 = 0;

/// `a \0 b \0 c` (no trailing separator).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut key = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part);
    }
    key
}

/// `a \0 b \0` — the prefix of every key under this scope.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = join(parts);
    key.push(SEP);
    key
}

/// Order-preserving encoding of a signed integer.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_encoding_preserves_order() {
        let values = [i64::MIN, -5_000, -1, 0, 1, 42, i64::MAX];
        for pair in values.windows(2) {
            assert!(encode_i64(pair[0]) < encode_i64(pair[1]));
            assert_eq!(decode_i64(&encode_i64(pair[0])), Some(pair[0]));
        }
    }

    #[test]
    fn scopes_do_not_bleed() {
        // "ab" must not be a prefix-match of tenant "a" + something.
        assert!(!join(&[b"ab", b"x"]).starts_with(&prefix(&[b"a"])));
    }
}

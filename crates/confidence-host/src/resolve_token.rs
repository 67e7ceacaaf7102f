//! Resolve tokens of a resolve that took several requests (a state of more flags than one
//! request may return). The parts' tokens travel as one opaque token; applying a flag picks
//! the part that resolved it. A token of one request passes through unchanged.
//!
//! Layout: magic `CFTOKS01`, then per part a varint token length, the token, a varint flag
//! count and each flag name as varint length and UTF-8 bytes. A resolver's own token is a
//! protobuf message, whose first byte can never be `C` (field 8 with the deprecated group
//! wire type), so the two cannot be confused.

use prost::encoding::{decode_varint, encode_varint};

const MAGIC: &[u8; 8] = b"CFTOKS01";

/// One token for `parts` (each a resolver's token and the flags it resolved).
pub fn combine(parts: &[(Vec<u8>, Vec<String>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (token, flags) in parts {
        encode_varint(token.len() as u64, &mut out);
        out.extend_from_slice(token);
        encode_varint(flags.len() as u64, &mut out);
        for flag in flags {
            encode_varint(flag.len() as u64, &mut out);
            out.extend_from_slice(flag.as_bytes());
        }
    }
    out
}

/// The resolver's token that resolved `flag`: `token` itself unless it is combined; `None`
/// for a combined token without that flag, or one that does not decode.
pub fn part_for<'t>(token: &'t [u8], flag: &str) -> Option<&'t [u8]> {
    let Some(mut rest) = token.strip_prefix(MAGIC.as_slice()) else { return Some(token) };
    let take = |rest: &mut &'t [u8]| -> Option<&'t [u8]> {
        let len = usize::try_from(decode_varint(rest).ok()?).ok()?;
        let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
        *rest = tail;
        Some(head)
    };
    while !rest.is_empty() {
        let part = take(&mut rest)?;
        let count = decode_varint(&mut rest).ok()?;
        let mut found = false;
        for _ in 0..count {
            found |= take(&mut rest)? == flag.as_bytes();
        }
        if found {
            return Some(part);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combined_token_gives_each_flag_its_part() {
        let token = combine(&[
            (vec![0x0a, 1], vec!["flags/a".into(), "flags/b".into()]),
            (vec![0x0a, 2], vec!["flags/c".into()]),
        ]);
        assert_eq!(part_for(&token, "flags/b"), Some(&[0x0a, 1][..]));
        assert_eq!(part_for(&token, "flags/c"), Some(&[0x0a, 2][..]));
        assert_eq!(part_for(&token, "flags/zz"), None);
        assert_eq!(part_for(&[0x0a, 9], "flags/a"), Some(&[0x0a, 9][..]), "a plain token passes through");
        assert_eq!(part_for(&token[..token.len() - 2], "flags/c"), None, "a cut token does not decode");
    }
}

//! The request authority (`Host`, `:authority` or the absolute-form target's), validated in
//! place: no copy, no allocation.
//!
//! The grammar is the one `http::uri::Authority` accepts (RFC 3986's authority characters,
//! one optional port colon, a bracketed IPv6 literal with an optional `%zone`), narrowed the way
//! the gateway needs it: no userinfo (`x@admin.example.com` names `admin.example.com` to some
//! parsers and `x` to others) and a non-empty host. `tests::agrees_with_http_crate` checks the
//! equivalence on random inputs.

/// Whether `b` may appear in an authority outside a `%` escape (RFC 3986 unreserved,
/// sub-delims, `:`, `[`, `]`). `@`, `/`, `?` and `#` are not: they end or split an authority.
const fn authority_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        | b':' | b'[' | b']')
}

/// At most this many colons inside an IPv6 literal (`[a:b:c:d:e:f:g:h]`).
const MAX_LITERAL_COLONS: u32 = 8;

/// `host[:port]`, `[v6]` or `[v6]:port`, without userinfo, with a non-empty host.
pub fn is_valid_authority(s: &[u8]) -> bool {
    let Some(&first) = s.first() else {
        return false;
    };
    if first == b':' {
        // An empty host before the port.
        return false;
    }
    let mut colons = 0u32;
    let mut open = false;
    let mut closed = false;
    // A `%` is allowed only inside the IPv6 literal (RFC 6874 zone id); it is forgiven when
    // the literal closes.
    let mut percent = false;
    for &b in s {
        match b {
            b':' => {
                if colons >= MAX_LITERAL_COLONS {
                    return false;
                }
                colons += 1;
            }
            b'[' => {
                if open || percent {
                    return false;
                }
                open = true;
            }
            b']' => {
                if !open || closed {
                    return false;
                }
                closed = true;
                colons = 0;
                percent = false;
            }
            b'%' => percent = true,
            _ if authority_byte(b) => {}
            _ => return false,
        }
    }
    open == closed && colons <= 1 && !percent
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous implementation: parse with the `http` crate, then refuse userinfo and an
    /// empty host.
    fn http_crate_says(s: &[u8]) -> bool {
        match http::uri::Authority::try_from(s) {
            Ok(a) => !a.as_str().contains('@') && !a.host().is_empty(),
            Err(_) => false,
        }
    }

    #[test]
    fn table() {
        for ok in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[fe80::1%25eth0]:80",
            "a_b~c!$&'()*+,;=",
            "host:",
        ] {
            assert!(is_valid_authority(ok.as_bytes()), "{ok:?} refused");
            assert!(http_crate_says(ok.as_bytes()), "{ok:?}: http disagrees");
        }
        for bad in [
            "",
            ":80",
            "x@admin.example.com",
            "@host",
            "host:1:2",
            "exa mple.com",
            "host/path",
            "host?q",
            "host#f",
            "ho%41st",
            "[::1",
            "::1]",
            "[[::1]]",
            "[::1]]",
            "[1:2:3:4:5:6:7:8:9:0]",
            "h\u{e9}st",
            "host\r\nx: y",
            "host\0",
            "host\"",
            "{host}",
        ] {
            assert!(!is_valid_authority(bad.as_bytes()), "{bad:?} accepted");
            assert!(!http_crate_says(bad.as_bytes()), "{bad:?}: http disagrees");
        }
    }

    /// Random strings over an alphabet dense in the characters that matter (brackets, colons,
    /// `%`, `@`, delimiters, controls, non-ASCII): same answer as the `http` crate on every one.
    #[test]
    fn agrees_with_http_crate() {
        const ALPHABET: &[u8] = b"ab.Z09-_~:::[[]]%%@/?# \t\"<>\\^`{|}\x00\x7f\xc3\xa9!$&'()*+,;=";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..200_000 {
            let len = (next() % 12) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let ours = is_valid_authority(&s);
            assert_eq!(ours, http_crate_says(&s), "{:?}", String::from_utf8_lossy(&s));
            accepted += usize::from(ours);
        }
        // The generator reaches both answers often enough for the comparison to mean something.
        assert!(accepted > 1_000, "only {accepted} accepted");
    }

    /// The values a client picks to split parsers (zone ids with and without
    /// `%25`, ports that are not numbers, brackets in odd places, whitespace and obs-text, a
    /// bare colon), each answered as the `http` crate answers it.
    #[test]
    fn parser_splitting_cases_agree_with_http_crate() {
        for s in [
            "[fe80::1%eth0]",
            "[fe80::1%25eth0]:8080",
            "[fe80::1%]",
            "[%]",
            "%[::1]",
            "[::1]:",
            "[::1]x",
            "[::1]:80:81",
            "a[::1]",
            "[]",
            "[v1.x]",
            "[::1]%",
            ":",
            "::",
            "h:",
            "h:abc",
            "h.example.",
            "H.EXAMPLE:443",
            "h.example:65536",
            " h.example",
            "h.example ",
            "\th",
            "h\x7f",
            "h\u{ff}",
            "h@",
            "@",
            "h%",
            "h%2",
            "h%zz",
        ] {
            assert_eq!(
                is_valid_authority(s.as_bytes()),
                http_crate_says(s.as_bytes()),
                "{s:?}"
            );
        }
    }

    /// Every string of up to two bytes, and every string of up to four bytes over the
    /// characters the grammar treats specially.
    #[test]
    fn agrees_with_http_crate_exhaustively_on_short_strings() {
        for a in 0..=255u8 {
            assert_eq!(is_valid_authority(&[a]), http_crate_says(&[a]), "{a:#x}");
            for b in 0..=255u8 {
                assert_eq!(
                    is_valid_authority(&[a, b]),
                    http_crate_says(&[a, b]),
                    "{a:#x} {b:#x}"
                );
            }
        }
        const SPECIAL: &[u8] = b"a1:[]%@/?# \t.\x80";
        let n = SPECIAL.len();
        for len in 3..=4u32 {
            for mut code in 0..n.pow(len) {
                let mut s = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    s.push(SPECIAL[code % n]);
                    code /= n;
                }
                assert_eq!(
                    is_valid_authority(&s),
                    http_crate_says(&s),
                    "{:?}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }
}

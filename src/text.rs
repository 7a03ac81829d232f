//! Cutting messages to the sizes the API server and our own limits allow: one way, one
//! ellipsis, for Conditions and Events alike.

/// What ends a message that was cut.
pub const ELLIPSIS: char = '…';

/// `s` in at most `max` bytes: cut on a character boundary and ended with [`ELLIPSIS`] when
/// it is longer (without the ellipsis when `max` leaves no room for it).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let room = max.checked_sub(ELLIPSIS.len_utf8());
    let mut end = room.unwrap_or(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = s[..end].to_string();
    if room.is_some() {
        cut.push(ELLIPSIS);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 3), "abc");
        let s = "é".repeat(600);
        let t = truncate(&s, 1024);
        assert!(t.len() <= 1024);
        assert!(t.ends_with("…"));
    }
}

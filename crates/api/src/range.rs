//! Parsing of a single HTTP byte range (RFC 9110 §14.1.2).

use std::ops::Range;

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (RFC 9110 lets a server ignore what it cannot parse).
    Whole,
    Partial(Range<u64>),
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    // Several ranges would need multipart answers; serving the whole object is allowed.
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Ok(start), Err(_)) if last.is_empty() => start..size,
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 {
                return RangeRequest::Unsatisfiable;
            }
            size.saturating_sub(suffix)..size
        }
        _ => return RangeRequest::Whole,
    };
    if range.start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(range)
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Partial(2..5));
        assert_eq!(parse_range(Some("bytes=2-400"), 10), Partial(2..10));
        assert_eq!(parse_range(Some("bytes=7-"), 10), Partial(7..10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
    }
}

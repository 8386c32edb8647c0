//! The TTL of one store: the function's (or the cache's default), the
//! shorter `none_ttl` for a cached `None`, then shortened by a random part
//! of the jitter, so that entries written together do not expire together
//! (decision 0018).
//!
//! Jitter only ever shortens: a TTL stays the longest a value is served,
//! which is what users reason about ("at most 60 s old").

use std::time::Duration;

use super::Call;

/// The default jitter: up to 10 % off each TTL.
pub const DEFAULT_TTL_JITTER: u8 = 10;

/// The largest jitter, in percent: past half, a TTL says little.
pub const MAX_TTL_JITTER: u8 = 50;

/// A site's "no jitter of its own: the cache's" (`CallSite::new`).
pub(crate) const CACHE_JITTER: u8 = u8::MAX;

/// No TTL is shortened below this (the shortest TTL one can set).
const FLOOR: Duration = Duration::from_secs(1);

impl Call<'_> {
    /// The TTL to store a value with; `none` says it is a `None` that the
    /// function's `none_ttl` applies to.
    pub(crate) fn store_ttl(&self, none: bool) -> Duration {
        let ttl = match (none, self.policy.none_ttl) {
            (true, Some(none_ttl)) => none_ttl,
            _ => self.policy.ttl,
        };
        jittered(ttl, self.policy.jitter, fastrand::u64(..))
    }
}

/// `ttl` less up to `percent` of it, by `draw` (uniform over `u64`), to
/// the millisecond; never below one second (nor below `ttl`, if shorter).
pub(crate) fn jittered(ttl: Duration, percent: u8, draw: u64) -> Duration {
    let percent = u128::from(percent.min(MAX_TTL_JITTER));
    let span_ms = ttl.as_millis() * percent / 100;
    if span_ms == 0 {
        return ttl;
    }
    // Uniform over 0..=span_ms (the bias of a modulo over 2^64 is far
    // below anything a TTL can show).
    let cut = u128::from(draw) % (span_ms + 1);
    let cut = Duration::from_millis(u64::try_from(cut).unwrap_or(u64::MAX));
    ttl.saturating_sub(cut).max(FLOOR.min(ttl))
}

/// Checks a jitter given in code or the environment.
pub(crate) fn check_jitter(what: &str, percent: u8) -> crate::Result<()> {
    if percent > MAX_TTL_JITTER {
        return Err(crate::Error::Config(format!(
            "{what} must be from 0 to {MAX_TTL_JITTER} percent, not {percent}"
        )));
    }
    Ok(())
}

/// Parses `CACHE_TTL_JITTER`-style values: `10%`, `10`, `0` or `off`.
pub(crate) fn parse_jitter(what: &str, text: &str) -> crate::Result<u8> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    let percent = if number.eq_ignore_ascii_case("off") {
        0
    } else {
        number.parse::<u8>().map_err(|_| {
            crate::Error::Config(format!(
                "{what} must be a percentage such as `10%` (or `off`), not {text:?}"
            ))
        })?
    };
    check_jitter(what, percent)?;
    Ok(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn jitter_only_shortens_and_spans_the_whole_range() {
        assert_eq!(jittered(MINUTE, 10, 0), MINUTE);
        assert_eq!(jittered(MINUTE, 10, 6_000), Duration::from_secs(54));
        assert_eq!(jittered(MINUTE, 10, 6_001), MINUTE);
        assert_eq!(jittered(MINUTE, 10, 3_000), Duration::from_secs(57));
        for draw in [1, 77, u64::MAX, u64::MAX / 3] {
            let ttl = jittered(MINUTE, 10, draw);
            assert!(ttl <= MINUTE && ttl >= Duration::from_secs(54), "{ttl:?}");
        }
    }

    #[test]
    fn no_jitter_leaves_the_ttl_and_none_goes_below_a_second() {
        assert_eq!(jittered(MINUTE, 0, 12_345), MINUTE);
        let one = Duration::from_secs(1);
        for draw in [0, 250, 500, u64::MAX] {
            assert_eq!(jittered(one, 50, draw), one);
        }
        assert_eq!(
            jittered(Duration::from_secs(2), 50, 1_000),
            Duration::from_secs(1)
        );
        // Out of range is capped (the builder refuses it before).
        assert!(jittered(MINUTE, 200, u64::MAX) >= Duration::from_secs(30));
    }

    #[test]
    fn jitter_is_parsed_as_a_percentage() {
        assert_eq!(parse_jitter("J", "10%").unwrap(), 10);
        assert_eq!(parse_jitter("J", " 25 ").unwrap(), 25);
        assert_eq!(parse_jitter("J", "off").unwrap(), 0);
        assert_eq!(parse_jitter("J", "0%").unwrap(), 0);
        let err = parse_jitter("J", "51%").unwrap_err().to_string();
        assert!(err.contains("from 0 to 50 percent"), "{err}");
        let err = parse_jitter("J", "ten").unwrap_err().to_string();
        assert!(err.contains("a percentage such as `10%`"), "{err}");
    }
}

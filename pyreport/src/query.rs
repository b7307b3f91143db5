//! What a query asks for, how much of it the server filters (subject filters of the ordered
//! consumer, a start sequence or time) and the row filter applied in Rust to everything else.

use crate::error::{Error, Result};
use crate::timefmt::format_us;
use sequent_protocol::subjects;
use sequent_protocol::validate::{validate_id, validate_key, validate_type};
use std::collections::HashSet;

/// Most subject filters put on one consumer; beyond that the server filters on one dimension
/// (or nothing) and Rust filters the rest.
pub const MAX_FILTER_SUBJECTS: usize = 256;

#[derive(Debug, Default, Clone)]
pub struct Query {
    pub types: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub correlations: Option<Vec<String>>,
    /// Inclusive lower bound of the event time, µs since the epoch (UTC).
    pub since_us: Option<i64>,
    /// Inclusive upper bound of the event time.
    pub until_us: Option<i64>,
    /// First stream sequence to read.
    pub from_seq: Option<u64>,
    pub limit: Option<u64>,
}

fn dedup(v: &mut Option<Vec<String>>) {
    if let Some(v) = v {
        let mut seen = HashSet::new();
        v.retain(|s| seen.insert(s.clone()));
    }
}

impl Query {
    /// Checks every value and removes repeats; errors name the bad value.
    pub fn validated(mut self) -> Result<Query> {
        dedup(&mut self.types);
        dedup(&mut self.keys);
        dedup(&mut self.correlations);
        for t in self.types.iter().flatten() {
            validate_type(t).map_err(|e| Error::BadArgument(format!("types: {e}")))?;
        }
        for k in self.keys.iter().flatten() {
            validate_key(k).map_err(|e| Error::BadArgument(format!("keys: {e}")))?;
        }
        for c in self.correlations.iter().flatten() {
            validate_id("correlation", c).map_err(|e| Error::BadArgument(e.to_string()))?;
        }
        if let (Some(s), Some(u)) = (self.since_us, self.until_us) {
            if s > u {
                return Err(Error::BadArgument(format!(
                    "since ({}) is after until ({}): the time range is inverted",
                    format_us(s),
                    format_us(u)
                )));
            }
        }
        if self.from_seq == Some(0) {
            self.from_seq = None;
        }
        Ok(self)
    }

    /// True when an empty list makes the answer empty without reading anything.
    pub fn matches_nothing(&self) -> bool {
        [&self.types, &self.keys, &self.correlations].iter().any(|l| l.as_ref().is_some_and(|v| v.is_empty()))
            || self.limit == Some(0)
    }

    /// Subject filters for an ordered consumer over the events stream (empty = everything).
    pub fn subject_filters(&self) -> Vec<String> {
        let types = self.types.as_deref();
        let keys = self.keys.as_deref();
        match (types, keys) {
            (Some(t), Some(k)) if t.len() * k.len() <= MAX_FILTER_SUBJECTS => {
                k.iter().flat_map(|k| t.iter().map(move |t| subjects::key_type_filter(k, t))).collect()
            }
            (Some(t), Some(k)) => {
                if k.len() <= t.len() && k.len() <= MAX_FILTER_SUBJECTS {
                    k.iter().map(|k| subjects::key_filter(k)).collect()
                } else if t.len() <= MAX_FILTER_SUBJECTS {
                    t.iter().map(|t| subjects::type_filter(t)).collect()
                } else {
                    Vec::new()
                }
            }
            (Some(t), None) if t.len() <= MAX_FILTER_SUBJECTS => t.iter().map(|t| subjects::type_filter(t)).collect(),
            (None, Some(k)) if k.len() <= MAX_FILTER_SUBJECTS => k.iter().map(|k| subjects::key_filter(k)).collect(),
            _ => Vec::new(),
        }
    }

    pub fn row_filter(&self) -> RowFilter<'_> {
        fn set(v: &Option<Vec<String>>) -> Option<HashSet<&str>> {
            v.as_ref().map(|v| v.iter().map(String::as_str).collect())
        }
        RowFilter {
            types: set(&self.types),
            keys: set(&self.keys),
            correlations: set(&self.correlations),
            since_us: self.since_us,
            until_us: self.until_us,
            from_seq: self.from_seq.unwrap_or(0),
        }
    }
}

/// Every condition of a query, checked on one event (cheap: set look-ups and comparisons).
pub struct RowFilter<'q> {
    types: Option<HashSet<&'q str>>,
    keys: Option<HashSet<&'q str>>,
    correlations: Option<HashSet<&'q str>>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    from_seq: u64,
}

impl RowFilter<'_> {
    /// Lets everything through.
    pub fn all() -> RowFilter<'static> {
        RowFilter { types: None, keys: None, correlations: None, since_us: None, until_us: None, from_seq: 0 }
    }

    #[inline]
    pub fn matches(&self, seq: u64, event_type: &str, key: &str, correlation: &str, time_us: Option<i64>) -> bool {
        if seq < self.from_seq {
            return false;
        }
        if let Some(t) = &self.types {
            if !t.contains(event_type) {
                return false;
            }
        }
        if let Some(k) = &self.keys {
            if !k.contains(key) {
                return false;
            }
        }
        if let Some(c) = &self.correlations {
            if !c.contains(correlation) {
                return false;
            }
        }
        if self.since_us.is_some() || self.until_us.is_some() {
            let Some(t) = time_us else { return false };
            if self.since_us.is_some_and(|s| t < s) || self.until_us.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }

    pub fn has_time_bounds(&self) -> bool {
        self.since_us.is_some() || self.until_us.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(types: &[&str], keys: &[&str]) -> Query {
        let v = |x: &[&str]| (!x.is_empty()).then(|| x.iter().map(|s| s.to_string()).collect());
        Query { types: v(types), keys: v(keys), ..Default::default() }
    }

    #[test]
    fn filters_use_the_stored_subject_form() {
        assert_eq!(q(&["A"], &[]).subject_filters(), vec!["ev.*.*.A"]);
        assert_eq!(q(&[], &["acc-1"]).subject_filters(), vec!["ev.*.acc-1.*"]);
        assert_eq!(q(&["A", "B"], &["k"]).subject_filters(), vec!["ev.*.k.A", "ev.*.k.B"]);
        assert!(q(&[], &[]).subject_filters().is_empty());
        let many: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let big = Query { keys: Some(many), types: Some(vec!["A".into()]), ..Default::default() };
        assert_eq!(big.subject_filters(), vec!["ev.*.*.A"]);
    }

    #[test]
    fn validation_names_the_problem() {
        let e = Query { keys: Some(vec!["a b".into()]), ..Default::default() }.validated().unwrap_err();
        assert!(e.to_string().contains("keys"), "{e}");
        let e = Query { since_us: Some(2), until_us: Some(1), ..Default::default() }.validated().unwrap_err();
        assert!(e.to_string().contains("inverted"), "{e}");
        let ok = Query { types: Some(vec!["A".into(), "A".into()]), ..Default::default() }.validated().unwrap();
        assert_eq!(ok.types.unwrap().len(), 1);
    }

    #[test]
    fn row_filter_checks_everything() {
        let query = Query {
            types: Some(vec!["A".into()]),
            since_us: Some(10),
            until_us: Some(20),
            from_seq: Some(5),
            ..Default::default()
        };
        let f = query.row_filter();
        assert!(f.matches(5, "A", "k", "c", Some(10)));
        assert!(!f.matches(4, "A", "k", "c", Some(10)));
        assert!(!f.matches(5, "B", "k", "c", Some(10)));
        assert!(!f.matches(5, "A", "k", "c", Some(21)));
        assert!(!f.matches(5, "A", "k", "c", None));
    }
}

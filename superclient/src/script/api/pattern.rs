//! Lua 5.4's pattern matching (`lstrlib.c`), ported to Rust so that every step is counted.
//!
//! The C matcher backtracks: `string.find(("a"):rep(1e5), ".-.-.-.-b")` takes longer than the
//! age of the universe, and the instruction hook never fires inside a C function. This port has
//! the same semantics (the tests below run the same cases through the C functions for
//! comparison) but charges its work to the call's budget: each step of the matcher (a match
//! attempt, a repetition, a character of a bracket class or of a back-reference) counts as one
//! Lua instruction, and every few thousand steps the call's instruction budget and wall-clock
//! limit are checked. A pattern that would run too long fails its call like an endless loop does.
//!
//! Plain searches (`string.find(s, p, init, true)`, or a pattern without special characters)
//! use a linear-time substring search instead of C's `lmemfind` (which is quadratic on inputs
//! such as `("a"):rep(n)` searched for `("a"):rep(n / 2) .. "b"`).

const MAXCCALLS: u32 = 200;
const MAXCAPTURES: usize = 32;
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;
const L_ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";
/// Steps between two looks at the budget.
const CHECK_EVERY: u64 = 1 << 14;

/// Why a match stopped.
#[derive(Debug)]
pub enum Stop {
    /// A malformed pattern or a bad capture reference: an ordinary error.
    Pattern(String),
    /// The call's budget (instructions or time) ran out.
    Budget(String),
}

/// One capture: a piece of the subject or a position (`()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    Str(usize, usize),
    Pos(usize),
}

/// Charges `n` steps to the call; an error when its budget ran out.
pub type Charge<'a> = &'a mut dyn FnMut(u64) -> Result<(), String>;

pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, isize); MAXCAPTURES],
    depth: u32,
    steps: u64,
    charge: Charge<'a>,
}

impl<'a> Matcher<'a> {
    /// A matcher of `pat` (without a leading anchor: callers strip it) in `src`.
    pub fn new(src: &'a [u8], pat: &'a [u8], charge: Charge<'a>) -> Matcher<'a> {
        Matcher { src, pat, level: 0, capture: [(0, 0); MAXCAPTURES], depth: MAXCCALLS, steps: 0, charge }
    }

    /// Tries to match at `s`; the end of the match.
    pub fn match_at(&mut self, s: usize) -> Result<Option<usize>, Stop> {
        self.level = 0;
        self.depth = MAXCCALLS;
        self.do_match(s, 0)
    }

    /// Charges what is left of the steps (call once the work is done).
    pub fn finish(&mut self) -> Result<(), Stop> {
        let n = std::mem::take(&mut self.steps);
        (self.charge)(n).map_err(Stop::Budget)
    }

    fn step(&mut self, n: u64) -> Result<(), Stop> {
        self.steps += n;
        if self.steps >= CHECK_EVERY {
            self.finish()?;
        }
        Ok(())
    }

    fn pat_at(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    fn src_at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// The captures of the last match: all of them, or the whole match `whole` when there are
    /// none (`None`: no captures at all, as `string.find` wants).
    pub fn captures(&self, whole: Option<(usize, usize)>) -> Result<Vec<Capture>, Stop> {
        let n = if self.level == 0 && whole.is_some() { 1 } else { self.level };
        let (s, e) = whole.unwrap_or((0, 0));
        (0..n).map(|i| self.capture(i, s, e)).collect()
    }

    /// Capture `i` of the last match (the whole match `s..e` when `i` is 0 and there are none).
    pub fn capture(&self, i: usize, s: usize, e: usize) -> Result<Capture, Stop> {
        if i >= self.level {
            if i != 0 {
                return Err(Stop::Pattern(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Capture::Str(s, e));
        }
        let (init, len) = self.capture[i];
        match len {
            CAP_UNFINISHED => Err(Stop::Pattern("unfinished capture".into())),
            CAP_POSITION => Ok(Capture::Pos(init + 1)),
            len => Ok(Capture::Str(init, init + len as usize)),
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        if self.depth == 0 {
            return Err(Stop::Pattern("pattern too complex".into()));
        }
        self.depth -= 1;
        let r = self.match_inner(s, p);
        self.depth += 1;
        r
    }

    fn match_inner(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Stop> {
        loop {
            self.step(1)?;
            if p == self.pat.len() {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if self.pat_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => return Ok((s == self.src.len()).then_some(s)),
                L_ESC if self.pat_at(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(end) => {
                        s = end;
                        p += 4;
                    }
                    None => return Ok(None),
                },
                L_ESC if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(Stop::Pattern("missing '[' after '%f' in pattern".into()));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = self.src_at(s);
                    self.step((ep - p) as u64)?;
                    if !self.match_bracket_class(previous, p, ep - 1) && self.match_bracket_class(current, p, ep - 1) {
                        p = ep;
                    } else {
                        return Ok(None);
                    }
                }
                L_ESC if self.pat_at(p + 1).is_ascii_digit() => match self.match_capture(s, self.pat_at(p + 1))? {
                    Some(end) => {
                        s = end;
                        p += 2;
                    }
                    None => return Ok(None),
                },
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.pat_at(ep);
                    if !self.single_match(s, p, ep)? {
                        if suffix == b'*' || suffix == b'?' || suffix == b'-' {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(r) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn class_end(&self, mut p: usize) -> Result<usize, Stop> {
        let c = self.pat_at(p);
        p += 1;
        match c {
            L_ESC => {
                if p >= self.pat.len() {
                    return Err(Stop::Pattern("malformed pattern (ends with '%')".into()));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return Err(Stop::Pattern("malformed pattern (missing ']')".into()));
                    }
                    let cc = self.pat[p];
                    p += 1;
                    if cc == L_ESC && p < self.pat.len() {
                        p += 1;
                    }
                    if self.pat_at(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    /// `p` at the `[`, `ec` at the `]`.
    fn match_bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pat_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.pat[p] == L_ESC {
                p += 1;
                if match_class(c, self.pat_at(p)) {
                    return sig;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if self.pat[p] == c {
                return sig;
            }
        }
        !sig
    }

    fn single_match(&mut self, s: usize, p: usize, ep: usize) -> Result<bool, Stop> {
        if s >= self.src.len() {
            return Ok(false);
        }
        let c = self.src[s];
        Ok(match self.pat[p] {
            b'.' => true,
            L_ESC => match_class(c, self.pat_at(p + 1)),
            b'[' => {
                self.step((ep - p) as u64)?;
                self.match_bracket_class(c, p, ep - 1)
            }
            other => other == c,
        })
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        if p + 1 >= self.pat.len() {
            return Err(Stop::Pattern("malformed pattern (missing arguments to '%b')".into()));
        }
        if s >= self.src.len() || self.src[s] != self.pat[p] {
            return Ok(None);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        let mut depth = 1u64;
        let mut i = s + 1;
        while i < self.src.len() {
            self.step(1)?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        let mut i = 0;
        while self.single_match(s + i, p, ep)? {
            self.step(1)?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single_match(s, p, ep)? {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, Stop> {
        if self.level >= MAXCAPTURES {
            return Err(Stop::Pattern("too many captures".into()));
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        let Some(l) = (0..self.level).rev().find(|&l| self.capture[l].1 == CAP_UNFINISHED) else {
            return Err(Stop::Pattern("invalid pattern capture".into()));
        };
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(r)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>, Stop> {
        let l = digit as isize - b'1' as isize;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CAP_UNFINISHED {
            return Err(Stop::Pattern(format!("invalid capture index %{}", l + 1)));
        }
        let (init, len) = self.capture[l as usize];
        if len < 0 {
            // A position capture: C compares (size_t)-2 bytes, which never fit.
            return Ok(None);
        }
        let len = len as usize;
        self.step(len as u64)?;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }
}

/// `%a`, `%d`, ... in the C locale (ASCII), upper case negated; any other character stands for
/// itself.
fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c < 0x20 || c == 0x7f,
        b'd' => c.is_ascii_digit(),
        b'g' => (0x21..=0x7e).contains(&c),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c == b' ' || (0x09..=0x0d).contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() {
        res
    } else {
        !res
    }
}

/// Whether `p` has none of the special characters (then `string.find` searches it plainly).
pub fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|c| SPECIALS.contains(c))
}

/// `posrelatI`: a 1-based start position (negative from the end) as a 0-based offset, clipped
/// at 0; may be past the end.
pub fn start_offset(pos: i64, len: usize) -> usize {
    if pos > 0 {
        (pos as u64 - 1).min(usize::MAX as u64) as usize
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        0
    } else {
        len - pos.unsigned_abs() as usize
    }
}

/// Linear-time search of `needle` in `hay`.
pub fn plain_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, pat: &str) -> Option<(usize, usize, Vec<Capture>)> {
        let mut charge = |_| Ok(());
        let (anchor, p) = match pat.strip_prefix('^') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let mut m = Matcher::new(src.as_bytes(), p.as_bytes(), &mut charge);
        let mut s = 0;
        loop {
            if let Some(e) = m.match_at(s).unwrap() {
                return Some((s + 1, e, m.captures(None).unwrap()));
            }
            if s >= src.len() || anchor {
                return None;
            }
            s += 1;
        }
    }

    #[test]
    fn matches_like_lua() {
        assert_eq!(run("hello world", "o w"), Some((5, 7, vec![])));
        assert_eq!(run("hello", "l+"), Some((3, 4, vec![])));
        assert_eq!(run("hello", "^h(.-)o$"), Some((1, 5, vec![Capture::Str(1, 4)])));
        assert_eq!(run("key = value", "(%w+)%s*=%s*(%w+)"), Some((1, 11, vec![Capture::Str(0, 3), Capture::Str(6, 11)])));
        assert_eq!(run("THE (quick) fox", "%((%a+)%)"), Some((5, 11, vec![Capture::Str(5, 10)])));
        assert_eq!(run("f(a(b)c)d", "%b()"), Some((2, 8, vec![])));
        assert_eq!(run("THE (quick) fox", "%f[%a]%a+"), Some((1, 3, vec![])));
        assert_eq!(run("hello", "()ll()"), Some((3, 4, vec![Capture::Pos(3), Capture::Pos(5)])));
        assert_eq!(run("abcabc", "(abc)%1"), Some((1, 6, vec![Capture::Str(0, 3)])));
        assert_eq!(run("a.b", "%."), Some((2, 2, vec![])));
        assert_eq!(run("x]y", "[]]"), Some((2, 2, vec![])));
        assert_eq!(run("abc", "[^a]"), Some((2, 2, vec![])));
        assert_eq!(run("a-z", "[a%-z]+"), Some((1, 3, vec![])));
        assert_eq!(run("", "^$"), Some((1, 0, vec![])));
        assert_eq!(run("abc", "x*"), Some((1, 0, vec![])));
        assert_eq!(run("acc-12ab", "^acc%-[0-9a-f]+$"), Some((1, 8, vec![])));
        assert_eq!(run("acc-12xb", "^acc%-[0-9a-f]+$"), None);
        assert_eq!(run("a\u{b}b", "%s"), Some((2, 2, vec![])), "vertical tab is a space in C");
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for (p, says) in [("%", "ends with"), ("[a", "missing ']'"), ("(a", "unfinished capture"), ("a)", "invalid pattern capture"), ("%1", "invalid capture index"), ("%b", "missing arguments"), ("%fx", "missing '['")] {
            let mut charge = |_| Ok(());
            let mut m = Matcher::new(b"aaa", p.as_bytes(), &mut charge);
            let r = m.match_at(0).and_then(|e| m.captures(e.map(|e| (0, e))).map(|_| ()));
            match r {
                Err(Stop::Pattern(m)) => assert!(m.contains(says), "{p}: {m}"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_backtracking_bomb_is_stopped_by_its_budget() {
        let src = "a".repeat(5000);
        let mut used = 0u64;
        let mut charge = |n| {
            used += n;
            if used > 10_000_000 {
                Err("over budget".to_string())
            } else {
                Ok(())
            }
        };
        let mut m = Matcher::new(src.as_bytes(), b".-.-.-.-.-b", &mut charge);
        let started = std::time::Instant::now();
        let mut s = 0;
        let stopped = loop {
            match m.match_at(s) {
                Err(Stop::Budget(_)) => break true,
                Err(e) => panic!("{e:?}"),
                Ok(Some(_)) => break false,
                Ok(None) if s >= src.len() => break false,
                Ok(None) => s += 1,
            }
        };
        assert!(stopped, "the bomb is stopped by its budget");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn positions() {
        assert_eq!(start_offset(1, 5), 0);
        assert_eq!(start_offset(0, 5), 0);
        assert_eq!(start_offset(-2, 5), 3);
        assert_eq!(start_offset(-10, 5), 0);
        assert_eq!(start_offset(9, 5), 8);
        assert!(no_specials(b"abc def"));
        assert!(!no_specials(b"a.c"));
        assert_eq!(plain_find(b"hello", b""), Some(0));
    }
}

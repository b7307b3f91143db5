//! Route patterns (`/accounts/{id}`): checked when a script registers them, matched against
//! request paths (the pattern with most literal segments wins, then registration order).

/// Checks a route pattern like `/account/{id}` at registration.
pub fn check_pattern(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("route {path:?} must start with '/'"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!("route {path:?} must not contain a query or fragment; query parameters reach the handler as its 5th argument"));
    }
    if path == "/health" || path == "/ready" || path == "/metrics" {
        return Err(format!("route {path} is built in and cannot be replaced"));
    }
    for seg in path.split('/').skip(1) {
        if seg.contains('{') || seg.contains('}') {
            let ok = seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 && seg[1..seg.len() - 1].chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!("route {path:?}: a parameter must be a whole segment like {{id}}"));
            }
        }
    }
    Ok(())
}

pub struct Route {
    segments: Vec<Seg>,
    pub method: String,
    pub index: usize,
    pub literals: usize,
}

enum Seg {
    Lit(String),
    Param(String),
}

impl Route {
    pub fn parse(pattern: &str, method: &str, index: usize) -> Route {
        let segments: Vec<Seg> = pattern
            .split('/')
            .skip(1)
            .map(|s| if s.starts_with('{') { Seg::Param(s[1..s.len() - 1].to_string()) } else { Seg::Lit(s.to_string()) })
            .collect();
        let literals = segments.iter().filter(|s| matches!(s, Seg::Lit(_))).count();
        Route { segments, method: method.to_string(), index, literals }
    }

    pub fn matches(&self, parts: &[String]) -> Option<Vec<(String, String)>> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Lit(_) => return None,
                Seg::Param(name) => params.push((name.clone(), part.clone())),
            }
        }
        Some(params)
    }
}


/// The routes (or WebSocket paths) of a script, most specific first.
pub fn table<'a>(patterns: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Route> {
    let mut routes: Vec<Route> = patterns.into_iter().enumerate().map(|(i, (p, m))| Route::parse(p, m, i)).collect();
    routes.sort_by_key(|r| (std::cmp::Reverse(r.literals), r.index));
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("/accounts/{id}").is_ok());
        assert!(check_pattern("accounts").is_err());
        assert!(check_pattern("/a?b").is_err());
        assert!(check_pattern("/health").is_err());
        assert!(check_pattern("/a/x{id}").is_err());
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = table([("/accounts/{id}", "GET"), ("/accounts/mine", "GET"), ("/{any}/{id}", "GET")]);
        let parts: Vec<String> = ["accounts", "mine"].iter().map(|s| s.to_string()).collect();
        let hit = routes.iter().find(|r| r.matches(&parts).is_some()).unwrap();
        assert_eq!(hit.index, 1);
        let parts: Vec<String> = ["accounts", "acc-1"].iter().map(|s| s.to_string()).collect();
        let hit = routes.iter().find_map(|r| r.matches(&parts).map(|p| (r.index, p))).unwrap();
        assert_eq!(hit, (0, vec![("id".to_string(), "acc-1".to_string())]));
    }
}

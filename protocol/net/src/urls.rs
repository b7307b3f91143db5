//! Server URLs whose credentials never reach a log line.

/// Parses comma-separated NATS URLs and takes the credentials out of them (`nats://user:pw@host`),
/// returned apart: async-nats prints server addresses in its debug logs, so URLs passed on must
/// hold no password.
pub fn nats_servers(urls: &str) -> anyhow::Result<(Vec<async_nats::ServerAddr>, Option<(String, String)>)> {
    let mut credentials = None;
    let mut servers = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr: async_nats::ServerAddr =
            u.parse().map_err(|e| anyhow::anyhow!("NATS URL {:?} is not a nats:// URL: {e}", redact_url(u)))?;
        let mut url = addr.into_inner();
        if !url.username().is_empty() {
            credentials = Some((url.username().to_string(), url.password().unwrap_or_default().to_string()));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        servers.push(async_nats::ServerAddr::from_url(url).map_err(|e| anyhow::anyhow!("NATS URL {:?}: {e}", redact_url(u)))?);
    }
    anyhow::ensure!(!servers.is_empty(), "no NATS URL given");
    Ok((servers, credentials))
}

/// A URL (or a comma-separated list) fit for logs: the password of `scheme://user:password@host`
/// replaced by `***`.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                let userinfo = &u[start + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &u[..start + 3], &u[at..]),
                    None => u.to_string(),
                }
            }
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(super::redact_url("redis://:pw@h:1/0,nats://u:p@a:4222,nats://b"), "redis://:***@h:1/0,nats://u:***@a:4222,nats://b");
        let (servers, creds) = super::nats_servers("nats://u:secret@127.0.0.1:4222, nats://127.0.0.1:4223").unwrap();
        assert_eq!(creds, Some(("u".to_string(), "secret".to_string())));
        assert!(servers.iter().all(|s| !format!("{s:?}").contains("secret")), "{servers:?}");
    }
}

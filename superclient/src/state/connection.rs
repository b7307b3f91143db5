//! One Redis or a Redis Cluster behind one connection type, chosen by the URL:
//! `redis://host:port[/db]` (one node) or `redis+cluster://[user:password@]host:port,host:port,...`
//! (the seed nodes of a cluster; the client finds the others and follows slot moves). Both
//! reconnect by themselves. Every key of a service shares one slot (`keys::tag`), so the same
//! scripts and transactions run on either.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

const CLUSTER_SCHEMES: [(&str, &str); 2] = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")];

/// Where the state lives, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Single(String),
    /// The seed nodes, each as a `redis://` URL (credentials repeated on each).
    Cluster(Vec<String>),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let Some((scheme, node_scheme)) = CLUSTER_SCHEMES.iter().find(|(s, _)| url.starts_with(s)) else {
            return Ok(Target::Single(url.to_string()));
        };
        let rest = url[scheme.len()..].trim_end_matches('/');
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let nodes: Vec<String> =
            hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("{node_scheme}{auth}{h}")).collect();
        if nodes.is_empty() || hosts.contains('/') {
            return Err("a cluster URL names its seed nodes and nothing else: redis+cluster://host:port,host:port".into());
        }
        Ok(Target::Cluster(nodes))
    }

    /// A node to subscribe to (classic pub/sub reaches every node of a cluster); `attempt`
    /// rotates through the seeds.
    pub fn pubsub_node(&self, attempt: usize) -> &str {
        match self {
            Target::Single(url) => url,
            Target::Cluster(nodes) => &nodes[attempt % nodes.len()],
        }
    }
}

#[derive(Clone)]
pub enum Con {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Con {
    /// Connects once (the caller retries); timeouts as for one node.
    pub async fn connect(target: &Target) -> redis::RedisResult<Con> {
        match target {
            Target::Single(url) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(3)))
                    .set_response_timeout(Some(Duration::from_secs(10)))
                    .set_number_of_retries(6)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Con::Single(ConnectionManager::new_with_config(redis::Client::open(url.as_str())?, config).await?))
            }
            Target::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(Duration::from_secs(3))
                    .response_timeout(Duration::from_secs(10))
                    .retries(6)
                    .build()?;
                Ok(Con::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Con::Cluster(_))
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Con::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_one_node_or_a_cluster() {
        assert_eq!(Target::parse("redis://127.0.0.1:6379/2"), Ok(Target::Single("redis://127.0.0.1:6379/2".into())));
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2/"),
            Ok(Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()]))
        );
        let with_auth = Target::parse("rediss+cluster://u:p@w@a:1, b:2").unwrap();
        assert_eq!(with_auth, Target::Cluster(vec!["rediss://u:p@w@a:1".into(), "rediss://u:p@w@b:2".into()]));
        assert_eq!(with_auth.pubsub_node(3), "rediss://u:p@w@b:2");
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://a:1/3").is_err(), "a cluster has only database 0");
    }
}

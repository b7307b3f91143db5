//! `scale`: how the figures move with instances (e2e at saturation with 1, 2, 4 instances of
//! each service) and with the stream's size (rebuild and its bare read at 10^5 and 10^6
//! events, 10^7 with --huge). The column to watch is CPU µs per event (per transfer): it should
//! stay flat.

use crate::e2e::{self, Mode};
use crate::report::Row;
use crate::Bins;

pub struct Opts {
    pub instances: Vec<usize>,
    pub transfers: usize,
    pub clients: usize,
    pub customers: usize,
    pub sizes: Vec<usize>,
}

pub async fn run(bins: &Bins, o: &Opts) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &instances in &o.instances {
        let opts = e2e::Opts {
            transfers: o.transfers,
            modes: vec![Mode::Closed(o.clients)],
            customers: o.customers,
            instances,
            nectar: false,
            cohost: false,
            baseline: false,
            strict: false,
        };
        rows.extend(e2e::run(bins, &opts).await?);
    }
    for &events in &o.sizes {
        rows.extend(crate::rebuild::run(bins, events).await?);
    }
    Ok(rows)
}

//! pyreport's native core (`pyreport._native`): scanning, filtering, tracing and the money flow
//! run here, in Rust, with the GIL released; results are Arrow tables handed to pyarrow.
//!
//! The Python package `pyreport` (pyreport/python/pyreport) wraps these classes with argument
//! checking, progress bars and result objects; use that, not this module directly.

pub mod analysis;
pub mod cache;
pub mod columns;
pub mod error;
pub mod live;
pub mod progress;
pub mod query;
pub mod timefmt;
pub mod wire;

use crate::cache::Cache;
use crate::columns::Flow;
use crate::error::{Error, Result};
use crate::live::Live;
use crate::progress::Progress;
use crate::query::Query;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use pyo3::exceptions::{PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::PyTable;
use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

/// Anything queries can run against: the live stream or a local cache.
trait Source: Sync {
    fn scan(&self, q: &Query, progress: &mut Progress, sink: &mut dyn FnMut(RecordBatch) -> Result<Flow>) -> Result<Option<String>>;
}

impl Source for Live {
    fn scan(&self, q: &Query, progress: &mut Progress, sink: &mut dyn FnMut(RecordBatch) -> Result<Flow>) -> Result<Option<String>> {
        Live::scan(self, q, progress, sink)
    }
}

impl Source for Cache {
    fn scan(&self, q: &Query, progress: &mut Progress, sink: &mut dyn FnMut(RecordBatch) -> Result<Flow>) -> Result<Option<String>> {
        Cache::scan(self, q, progress, sink)
    }
}

fn to_pyarrow(py: Python<'_>, batches: Vec<RecordBatch>, schema: SchemaRef) -> PyResult<Bound<'_, PyAny>> {
    PyTable::try_new(batches, schema)?.into_pyarrow(py)
}

fn warn(py: Python<'_>, warning: Option<String>) -> PyResult<()> {
    if let Some(w) = warning {
        let text = CString::new(w.replace('\0', " ")).expect("no NUL left");
        PyErr::warn(py, &py.get_type::<PyUserWarning>(), &text, 2)?;
    }
    Ok(())
}

/// One money-moving event type as Python gives it: (type, source, target, amount, reference),
/// each field a data path or `@key` / `@id` / `@correlation`.
type MoveText = (String, String, String, String, Option<String>);

/// Runs a query and collects every matching batch.
fn collect(src: &dyn Source, q: &Query, progress: &mut Progress) -> Result<(Vec<RecordBatch>, Option<String>)> {
    let mut batches = Vec::new();
    let warning = src.scan(q, progress, &mut |b| {
        batches.push(b);
        Ok(Flow::Continue)
    })?;
    Ok((batches, warning))
}

#[allow(clippy::too_many_arguments)]
fn query(
    types: Option<Vec<String>>,
    keys: Option<Vec<String>>,
    correlations: Option<Vec<String>>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    from_seq: Option<u64>,
    limit: Option<u64>,
) -> Result<Query> {
    Query { types, keys, correlations, since_us, until_us, from_seq, limit }.validated()
}

#[allow(clippy::too_many_arguments)]
fn run_events<'py>(
    py: Python<'py>,
    src: &dyn Source,
    q: Query,
    fields: Vec<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    analysis::field_column_names(&fields).map_err(|e| e.into_pyerr(py))?;
    let (batches, warning) = py
        .detach(|| -> Result<_> {
            let mut progress = Progress::new(progress);
            let (batches, warning) = collect(src, &q, &mut progress)?;
            Ok((analysis::add_fields(batches, &fields)?, warning))
        })
        .map_err(|e| e.into_pyerr(py))?;
    warn(py, warning)?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or_else(columns::schema);
    to_pyarrow(py, batches, schema)
}

fn run_trace<'py>(py: Python<'py>, src: &dyn Source, correlation: String) -> PyResult<Bound<'py, PyAny>> {
    let q = Query { correlations: Some(vec![correlation]), ..Default::default() }.validated().map_err(|e| e.into_pyerr(py))?;
    let (table, warning) = py
        .detach(|| -> Result<_> {
            let (batches, warning) = collect(src, &q, &mut Progress::none())?;
            Ok((analysis::trace_table(&batches)?, warning))
        })
        .map_err(|e| e.into_pyerr(py))?;
    warn(py, warning)?;
    let schema = table.schema();
    to_pyarrow(py, vec![table], schema)
}

#[allow(clippy::too_many_arguments)]
fn run_money<'py>(
    py: Python<'py>,
    src: &dyn Source,
    account: String,
    hops: u32,
    since_us: Option<i64>,
    until_us: Option<i64>,
    reverse: bool,
    moves: Option<Vec<MoveText>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    sequent_protocol::validate::validate_key(&account).map_err(|e| PyValueError::new_err(format!("account: {e}")))?;
    if !(1..=64).contains(&hops) {
        return Err(PyValueError::new_err(format!("hops must be between 1 and 64 (got {hops})")));
    }
    let specs = match moves {
        None => analysis::MoveSpec::bank(),
        Some(m) => analysis::MoveSpec::parse_all(&m).map_err(|e| e.into_pyerr(py))?,
    };
    let types = specs.iter().map(|s| s.event_type.clone()).collect();
    let q = query(Some(types), None, None, since_us, until_us, None, None).map_err(|e| e.into_pyerr(py))?;
    let (edges, accounts, warnings) = py
        .detach(|| -> Result<_> {
            let mut progress = Progress::new(progress);
            let (batches, w1) = collect(src, &q, &mut progress)?;
            let (transfers, w2) = analysis::transfers(&batches, &specs);
            let flow = analysis::follow_money(&transfers, &account, hops, reverse);
            let (edges, accounts) = analysis::money_tables(&transfers, &flow)?;
            Ok((edges, accounts, [w1, w2]))
        })
        .map_err(|e| e.into_pyerr(py))?;
    for w in warnings {
        warn(py, w)?;
    }
    let (es, acs) = (edges.schema(), accounts.schema());
    Ok((to_pyarrow(py, vec![edges], es)?, to_pyarrow(py, vec![accounts], acs)?))
}

fn run_stats<'py>(py: Python<'py>, src: &dyn Source, progress: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyDict>> {
    let (stats, warning) = py
        .detach(|| -> Result<_> {
            let mut progress = Progress::new(progress);
            let mut stats = analysis::Stats::default();
            let warning = src.scan(&Query::default(), &mut progress, &mut |b| {
                stats.add(&b);
                Ok(Flow::Continue)
            })?;
            Ok((stats, warning))
        })
        .map_err(|e| e.into_pyerr(py))?;
    warn(py, warning)?;
    let d = PyDict::new(py);
    d.set_item("events", stats.events)?;
    d.set_item("first_seq", stats.first_seq)?;
    d.set_item("last_seq", stats.last_seq)?;
    d.set_item("first_time_us", stats.first_us)?;
    d.set_item("last_time_us", stats.last_us)?;
    d.set_item("keys", stats.distinct_keys())?;
    d.set_item("correlations", stats.distinct_correlations())?;
    let types = stats.type_table().map_err(|e| e.into_pyerr(py))?;
    let producers = stats.producer_table().map_err(|e| e.into_pyerr(py))?;
    let (ts, ps) = (types.schema(), producers.schema());
    d.set_item("by_type", to_pyarrow(py, vec![types], ts)?)?;
    d.set_item("by_producer", to_pyarrow(py, vec![producers], ps)?)?;
    Ok(d)
}

fn manifest_dict<'py>(py: Python<'py>, m: &cache::Manifest, dir: &std::path::Path) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", dir.display().to_string())?;
    d.set_item("stream", &m.stream)?;
    d.set_item("stream_created_us", m.stream_created_us)?;
    d.set_item("source_url", &m.source_url)?;
    d.set_item("last_seq", m.last_seq)?;
    d.set_item("events", m.events)?;
    d.set_item("segments", m.segments.len())?;
    let bytes: u64 = m.segments.iter().filter_map(|s| std::fs::metadata(dir.join(&s.file)).ok()).map(|md| md.len()).sum();
    d.set_item("bytes", bytes)?;
    d.set_item("synced_at", &m.synced_at)?;
    Ok(d)
}

/// A connection to the live event stream (read-only). Made by `pyreport.connect`.
#[pyclass(frozen, module = "pyreport._native")]
struct NativeClient {
    live: Live,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url, user, password, stream, timeout))]
    fn new(py: Python<'_>, url: String, user: Option<String>, password: Option<String>, stream: String, timeout: f64) -> PyResult<Self> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(PyValueError::new_err(format!("timeout must be a positive number of seconds (got {timeout})")));
        }
        let live = py
            .detach(|| Live::connect(&url, user, password, &stream, Duration::from_secs_f64(timeout)))
            .map_err(|e| e.into_pyerr(py))?;
        Ok(NativeClient { live })
    }

    #[getter]
    fn url(&self) -> String {
        self.live.url.clone()
    }

    #[getter]
    fn user(&self) -> Option<String> {
        self.live.user.clone()
    }

    #[getter]
    fn stream(&self) -> String {
        self.live.stream_name.clone()
    }

    /// Matching events as a pyarrow.Table (see pyreport.Client.events).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (types, keys, correlations, since_us, until_us, from_seq, limit, fields, progress))]
    fn events<'py>(
        &self,
        py: Python<'py>,
        types: Option<Vec<String>>,
        keys: Option<Vec<String>>,
        correlations: Option<Vec<String>>,
        since_us: Option<i64>,
        until_us: Option<i64>,
        from_seq: Option<u64>,
        limit: Option<u64>,
        fields: Vec<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = query(types, keys, correlations, since_us, until_us, from_seq, limit).map_err(|e| e.into_pyerr(py))?;
        run_events(py, &self.live, q, fields, progress)
    }

    /// The events of one correlation with `depth` and `parent` columns.
    fn trace<'py>(&self, py: Python<'py>, correlation: String) -> PyResult<Bound<'py, PyAny>> {
        run_trace(py, &self.live, correlation)
    }

    /// (transfers, accounts) tables of the money flow from or to an account, following the
    /// money-moving event types of `moves` (default: the bank's `TransferCompleted`).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (account, hops, since_us, until_us, reverse, progress, moves=None))]
    fn follow_money<'py>(
        &self,
        py: Python<'py>,
        account: String,
        hops: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        reverse: bool,
        progress: Option<Py<PyAny>>,
        moves: Option<Vec<MoveText>>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        run_money(py, &self.live, account, hops, since_us, until_us, reverse, moves, progress)
    }

    /// Counts per type and producer, times, distinct keys; plus what the stream says of itself.
    #[pyo3(signature = (progress))]
    fn stats<'py>(&self, py: Python<'py>, progress: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let d = run_stats(py, &self.live, progress)?;
        let s = py.detach(|| self.live.summary()).map_err(|e| e.into_pyerr(py))?;
        let stream = PyDict::new(py);
        stream.set_item("name", s.name)?;
        stream.set_item("messages", s.messages)?;
        stream.set_item("bytes", s.bytes)?;
        stream.set_item("first_seq", s.first_seq)?;
        stream.set_item("last_seq", s.last_seq)?;
        stream.set_item("first_time_us", s.first_time_us)?;
        stream.set_item("last_time_us", s.last_time_us)?;
        stream.set_item("created_us", s.created_us)?;
        stream.set_item("replicas", s.replicas)?;
        stream.set_item("source", "live")?;
        stream.set_item("url", &self.live.url)?;
        d.set_item("stream", stream)?;
        Ok(d)
    }

    /// Brings the cache folder `path` up to date; returns its manifest summary.
    #[pyo3(signature = (path, progress))]
    fn sync<'py>(&self, py: Python<'py>, path: PathBuf, progress: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let report = py
            .detach(|| {
                let mut progress = Progress::new(progress);
                cache::sync(&self.live, &path, &mut progress)
            })
            .map_err(|e| e.into_pyerr(py))?;
        warn(py, report.warning.clone())?;
        let d = manifest_dict(py, &report.manifest, &path)?;
        d.set_item("new_events", report.new_events)?;
        d.set_item("compacted", report.compacted)?;
        Ok(d)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.live.close());
    }
}

/// A local cache folder opened for queries. Made by `pyreport.open_cache` or `Client.sync`.
#[pyclass(frozen, module = "pyreport._native")]
struct NativeCache {
    cache: Cache,
}

#[pymethods]
impl NativeCache {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let cache = Cache::open(&path).map_err(|e| e.into_pyerr(py))?;
        Ok(NativeCache { cache })
    }

    #[getter]
    fn path(&self) -> String {
        self.cache.dir.display().to_string()
    }

    /// The manifest summary: stream, last_seq, events, segments, bytes, synced_at.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.cache.manifest().map_err(|e| e.into_pyerr(py))?;
        manifest_dict(py, &m, &self.cache.dir)
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (types, keys, correlations, since_us, until_us, from_seq, limit, fields, progress))]
    fn events<'py>(
        &self,
        py: Python<'py>,
        types: Option<Vec<String>>,
        keys: Option<Vec<String>>,
        correlations: Option<Vec<String>>,
        since_us: Option<i64>,
        until_us: Option<i64>,
        from_seq: Option<u64>,
        limit: Option<u64>,
        fields: Vec<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = query(types, keys, correlations, since_us, until_us, from_seq, limit).map_err(|e| e.into_pyerr(py))?;
        run_events(py, &self.cache, q, fields, progress)
    }

    fn trace<'py>(&self, py: Python<'py>, correlation: String) -> PyResult<Bound<'py, PyAny>> {
        run_trace(py, &self.cache, correlation)
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (account, hops, since_us, until_us, reverse, progress, moves=None))]
    fn follow_money<'py>(
        &self,
        py: Python<'py>,
        account: String,
        hops: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        reverse: bool,
        progress: Option<Py<PyAny>>,
        moves: Option<Vec<MoveText>>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        run_money(py, &self.cache, account, hops, since_us, until_us, reverse, moves, progress)
    }

    #[pyo3(signature = (progress))]
    fn stats<'py>(&self, py: Python<'py>, progress: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let d = run_stats(py, &self.cache, progress)?;
        let m = self.cache.manifest().map_err(|e| e.into_pyerr(py))?;
        let stream = manifest_dict(py, &m, &self.cache.dir)?;
        stream.set_item("name", &m.stream)?;
        stream.set_item("messages", m.events)?;
        stream.set_item("source", "cache")?;
        d.set_item("stream", stream)?;
        Ok(d)
    }
}

/// Converts a Rust error for callers that use this crate as a library (tests).
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeCache>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("COLUMNS", columns::COLUMNS.to_vec())?;
    m.add("CLOCK_SKEW_SECONDS", live::CLOCK_SKEW_US / 1_000_000)?;
    m.add("INDEX_SLACK", live::INDEX_SLACK)?;
    Ok(())
}

//! The local cache: a folder of Arrow IPC files (LZ4-compressed) holding every event of the
//! stream up to a sequence, and `manifest.json` saying which. `sync` appends one segment with
//! the events stored since the last sync (only new sequences are read); when there are many
//! segments they are compacted into one. Queries on a cache filter the columns in Rust.

use crate::columns::{check_schema, col, schema, Flow};
use crate::error::{Error, Result};
use crate::live::Live;
use crate::progress::Progress;
use crate::query::Query;
use crate::timefmt::format_us;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MANIFEST: &str = "manifest.json";
const LOCK: &str = ".sync.lock";
const FORMAT: u32 = 1;
/// More segments than this are compacted into one at the end of a sync.
const MAX_SEGMENTS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub stream: String,
    /// When the stream was created (µs since the epoch): a recreated stream of the same name
    /// is a different stream, whose sequences mean other events.
    pub stream_created_us: i64,
    pub source_url: String,
    /// Every event with a sequence up to this one is in the cache.
    pub last_seq: u64,
    pub events: u64,
    pub segments: Vec<Segment>,
    pub synced_at: String,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Cache(format!("{what}: {e}"))
}

fn arrow_err(what: String) -> impl FnOnce(arrow_schema::ArrowError) -> Error {
    move |e| Error::Cache(format!("{what}: {e}"))
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Cache(format!("reading {}: {e}", path.display()))),
    };
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::Cache(format!("{} is not a pyreport cache manifest ({e}); delete the folder and sync again", path.display()))
    })?;
    if m.format != FORMAT {
        return Err(Error::Cache(format!(
            "the cache in {} has format {}, this pyreport reads format {FORMAT}: delete the folder and sync again",
            dir.display(),
            m.format
        )));
    }
    Ok(Some(m))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(format!("writing {}", tmp.display())))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming {} to {}", tmp.display(), path.display())))
}

fn read_segment(dir: &Path, seg: &Segment) -> Result<Vec<RecordBatch>> {
    let path = dir.join(&seg.file);
    let file = File::open(&path).map_err(io_err(format!(
        "opening cache segment {} (listed in the manifest); the cache is damaged: delete the folder and sync again",
        path.display()
    )))?;
    let reader = FileReader::try_new(BufReader::new(file), None).map_err(arrow_err(format!("reading {}", path.display())))?;
    check_schema(&reader.schema(), &format!("cache segment {}", path.display()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err(format!("reading {}", path.display())))?;
        // Re-attach the canonical schema (metadata may differ) so batches concatenate.
        out.push(RecordBatch::try_new(schema(), batch.columns().to_vec()).map_err(arrow_err(path.display().to_string()))?);
    }
    Ok(out)
}

/// Writes batches to a new segment file as they come.
struct SegmentWriter {
    tmp: PathBuf,
    writer: Option<FileWriter<BufWriter<File>>>,
    first_seq: Option<u64>,
    last_seq: u64,
    rows: u64,
}

impl SegmentWriter {
    fn new(dir: &Path, tag: &str) -> Result<SegmentWriter> {
        let tmp = dir.join(format!(".{tag}.arrow.tmp"));
        let file = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .map_err(arrow_err("setting up LZ4 compression".into()))?;
        let writer = FileWriter::try_new_with_options(BufWriter::with_capacity(1 << 20, file), &schema(), options)
            .map_err(arrow_err(format!("writing {}", tmp.display())))?;
        Ok(SegmentWriter { tmp, writer: Some(writer), first_seq: None, last_seq: 0, rows: 0 })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let seqs = batch.column(col::SEQ).as_primitive::<Int64Type>();
        self.first_seq.get_or_insert(seqs.value(0) as u64);
        self.last_seq = seqs.value(seqs.len() - 1) as u64;
        self.rows += batch.num_rows() as u64;
        let tmp = self.tmp.display().to_string();
        self.writer.as_mut().expect("open until finish").write(batch).map_err(arrow_err(format!("writing {tmp}")))
    }

    /// Closes the file and gives it its final name; None when nothing was written.
    fn finish(mut self, dir: &Path) -> Result<Option<Segment>> {
        let mut writer = self.writer.take().expect("finished once");
        let tmp = self.tmp.display().to_string();
        writer.finish().map_err(arrow_err(format!("finishing {tmp}")))?;
        let inner = writer.into_inner().map_err(arrow_err(format!("closing {tmp}")))?;
        let file = inner.into_inner().map_err(|e| Error::Cache(format!("flushing {tmp}: {}", e.error())))?;
        file.sync_all().map_err(io_err(format!("syncing {tmp}")))?;
        let Some(first) = self.first_seq else {
            let _ = fs::remove_file(&self.tmp);
            return Ok(None);
        };
        let name = format!("events-{first:012}-{:012}.arrow", self.last_seq);
        fs::rename(&self.tmp, dir.join(&name)).map_err(io_err(format!("renaming {tmp} to {name}")))?;
        Ok(Some(Segment { file: name, first_seq: first, last_seq: self.last_seq, rows: self.rows }))
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Holds the sync lock of a cache folder while alive.
struct SyncLock(PathBuf);

impl SyncLock {
    fn take(dir: &Path) -> Result<SyncLock> {
        let path = dir.join(LOCK);
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                Ok(SyncLock(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Cache(format!(
                "another sync of {} is running (it holds {}); wait for it, or delete that file if no sync runs",
                dir.display(),
                path.display()
            ))),
            Err(e) => Err(Error::Cache(format!("cannot write in {}: {e}", dir.display()))),
        }
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

pub struct SyncReport {
    pub manifest: Manifest,
    pub new_events: u64,
    pub compacted: bool,
    pub warning: Option<String>,
}

/// Brings the cache in `dir` up to date with the live stream, reading only new sequences.
pub fn sync(live: &Live, dir: &Path, progress: &mut Progress) -> Result<SyncReport> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating the cache folder {}", dir.display())))?;
    let _lock = SyncLock::take(dir)?;
    let summary = live.summary()?;
    let mut manifest = match read_manifest(dir)? {
        Some(m) => {
            if m.stream != summary.name || m.stream_created_us != summary.created_us || m.last_seq > summary.last_seq {
                return Err(Error::Cache(format!(
                    "the cache in {} holds stream {:?} created {} up to seq {}, but {} has stream {:?} created {} \
                     with last seq {}: it is another stream. Use another folder, or delete this one and sync again",
                    dir.display(),
                    m.stream,
                    format_us(m.stream_created_us),
                    m.last_seq,
                    live.url,
                    summary.name,
                    format_us(summary.created_us),
                    summary.last_seq
                )));
            }
            m
        }
        None => Manifest {
            format: FORMAT,
            stream: summary.name.clone(),
            stream_created_us: summary.created_us,
            source_url: live.url.clone(),
            last_seq: 0,
            events: 0,
            segments: Vec::new(),
            synced_at: String::new(),
        },
    };
    let from = manifest.last_seq + 1;
    let mut new_events = 0;
    let mut warning = None;
    if summary.last_seq >= from {
        let mut writer = SegmentWriter::new(dir, &format!("sync-{}", std::process::id()))?;
        warning = live.scan_all_from(from, progress, |batch| {
            writer.write(&batch)?;
            Ok(Flow::Continue)
        })?;
        let last_written = writer.last_seq;
        if let Some(seg) = writer.finish(dir)? {
            new_events = seg.rows;
            manifest.events += seg.rows;
            manifest.segments.push(seg);
        }
        // Every sequence up to the end the scan saw was read (the scan has no filter).
        manifest.last_seq = summary.last_seq.max(last_written);
    }
    let mut compacted = false;
    let mut obsolete = Vec::new();
    if manifest.segments.len() > MAX_SEGMENTS {
        let mut writer = SegmentWriter::new(dir, &format!("compact-{}", std::process::id()))?;
        for seg in &manifest.segments {
            for batch in read_segment(dir, seg)? {
                writer.write(&batch)?;
            }
        }
        if let Some(seg) = writer.finish(dir)? {
            obsolete = std::mem::replace(&mut manifest.segments, vec![seg]);
            compacted = true;
        }
    }
    manifest.synced_at = format_us(crate::timefmt::to_us(time::OffsetDateTime::now_utc()));
    manifest.source_url = live.url.clone();
    let text = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_atomically(&dir.join(MANIFEST), &text)?;
    for seg in obsolete {
        if !manifest.segments.contains(&seg) {
            let _ = fs::remove_file(dir.join(&seg.file));
        }
    }
    Ok(SyncReport { manifest, new_events, compacted, warning })
}

struct Loaded {
    manifest: Manifest,
    batches: Arc<Vec<RecordBatch>>,
}

/// A cache folder opened for queries. The events are loaded on first use and reloaded when a
/// sync (from this process or another) changed the manifest.
pub struct Cache {
    pub dir: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

impl Cache {
    pub fn open(dir: &Path) -> Result<Cache> {
        if read_manifest(dir)?.is_none() {
            return Err(Error::Cache(format!(
                "{} is not a pyreport cache (no {MANIFEST}): create one with pyreport.connect(...).sync({:?})",
                dir.display(),
                dir.display().to_string()
            )));
        }
        Ok(Cache { dir: dir.to_path_buf(), loaded: Mutex::new(None) })
    }

    pub fn manifest(&self) -> Result<Manifest> {
        read_manifest(&self.dir)?
            .ok_or_else(|| Error::Cache(format!("the cache manifest in {} disappeared", self.dir.display())))
    }

    /// The cached events (loading or reloading them if needed) and the manifest they match.
    pub fn batches(&self) -> Result<(Manifest, Arc<Vec<RecordBatch>>)> {
        let manifest = self.manifest()?;
        let mut loaded = self.loaded.lock().expect("not poisoned");
        if let Some(l) = loaded.as_ref().filter(|l| l.manifest.segments == manifest.segments) {
            return Ok((manifest, l.batches.clone()));
        }
        let mut batches = Vec::new();
        for seg in &manifest.segments {
            batches.extend(read_segment(&self.dir, seg)?);
        }
        let batches = Arc::new(batches);
        *loaded = Some(Loaded { manifest: manifest.clone(), batches: batches.clone() });
        Ok((manifest, batches))
    }

    /// Runs a query over the cached events.
    pub fn scan(&self, q: &Query, progress: &mut Progress, mut sink: impl FnMut(RecordBatch) -> Result<Flow>) -> Result<Option<String>> {
        let (_, batches) = self.batches()?;
        if q.matches_nothing() {
            return Ok(None);
        }
        let filter = q.row_filter();
        let from_seq = q.from_seq.unwrap_or(0) as i64;
        let mut rows = 0u64;
        progress.add_total(batches.iter().map(|b| b.num_rows() as u64).sum());
        for batch in batches.iter() {
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let seq = batch.column(col::SEQ).as_primitive::<Int64Type>();
            progress.done += n as u64;
            progress.poll()?;
            if seq.value(n - 1) < from_seq {
                continue;
            }
            let types = batch.column(col::TYPE).as_string::<i32>();
            let keys = batch.column(col::KEY).as_string::<i32>();
            let corr = batch.column(col::CORRELATION).as_string::<i32>();
            let time = batch.column(col::TIME).as_primitive::<TimestampMicrosecondType>();
            let mask: BooleanArray = (0..n)
                .map(|i| {
                    let t = time.is_valid(i).then(|| time.value(i));
                    Some(filter.matches(seq.value(i) as u64, types.value(i), keys.value(i), corr.value(i), t))
                })
                .collect();
            let mut kept = arrow_select::filter::filter_record_batch(batch, &mask)
                .map_err(arrow_err("filtering cached events".into()))?;
            if let Some(limit) = q.limit {
                let room = limit.saturating_sub(rows) as usize;
                if kept.num_rows() > room {
                    kept = kept.slice(0, room);
                }
            }
            rows += kept.num_rows() as u64;
            if kept.num_rows() > 0 && sink(kept)? == Flow::Stop {
                break;
            }
            if q.limit.is_some_and(|l| rows >= l) {
                break;
            }
        }
        progress.finish()?;
        Ok(None)
    }
}

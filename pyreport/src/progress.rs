//! Progress of long scans, reported to a Python callable `progress(done, total, finished)` at
//! most every 200 ms (the Python side draws a bar in a terminal or a notebook). The same tick
//! checks for Ctrl-C, so a long scan can be interrupted from a notebook or a shell.

use crate::error::{Error, Result};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(200);

pub struct Progress {
    callback: Option<Py<PyAny>>,
    /// Set for the helper threads of a parallel scan: they count into `shared` and stop when
    /// `cancel` is set, and never call Python themselves.
    worker: Option<(Arc<AtomicU64>, Arc<AtomicBool>)>,
    pub total: u64,
    pub done: u64,
    last: Instant,
    counter: u32,
    reported: bool,
}

impl Progress {
    pub fn new(callback: Option<Py<PyAny>>) -> Progress {
        Progress { callback, worker: None, total: 0, done: 0, last: Instant::now(), counter: 0, reported: false }
    }

    /// A helper thread's progress: counts into `done`, stops when `cancel` is set.
    pub fn worker(done: Arc<AtomicU64>, cancel: Arc<AtomicBool>) -> Progress {
        Progress { worker: Some((done, cancel)), ..Progress::none() }
    }

    /// For the thread that runs a parallel scan: reports `done` (summed by the workers) and
    /// checks for Ctrl-C, setting `cancel` so that the workers stop.
    pub fn report_shared(&mut self, done: u64, cancel: &AtomicBool) -> Result<()> {
        self.done = done;
        if let Err(e) = self.report(false) {
            cancel.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    pub fn none() -> Progress {
        Progress::new(None)
    }

    pub fn add_total(&mut self, n: u64) {
        self.total += n;
    }

    /// One message handled.
    #[inline]
    pub fn tick(&mut self) -> Result<()> {
        self.done += 1;
        self.counter += 1;
        if self.counter >= 2048 {
            self.counter = 0;
            if let Some((done, cancel)) = &self.worker {
                done.fetch_add(2048, Ordering::Relaxed);
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Python(PyKeyboardInterrupt::new_err("scan interrupted")));
                }
                return Ok(());
            }
            if self.last.elapsed() >= EVERY {
                self.report(false)?;
            }
        }
        Ok(())
    }

    /// Checks signals (and reports) if enough time passed; for loops without per-message ticks.
    pub fn poll(&mut self) -> Result<()> {
        if self.worker.is_none() && self.last.elapsed() >= EVERY {
            self.report(false)?;
        }
        Ok(())
    }

    fn report(&mut self, finished: bool) -> Result<()> {
        self.last = Instant::now();
        let (done, total) = (self.done, self.total.max(self.done));
        Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = &self.callback {
                cb.call1(py, (done, total, finished))?;
            }
            Ok(())
        })?;
        self.reported = true;
        Ok(())
    }

    /// The final report (lets the Python side close its bar).
    pub fn finish(&mut self) -> Result<()> {
        if let Some((done, _)) = &self.worker {
            done.fetch_add(u64::from(self.counter), Ordering::Relaxed);
            self.counter = 0;
            return Ok(());
        }
        if self.callback.is_some() {
            self.report(true)?;
        }
        Ok(())
    }
}

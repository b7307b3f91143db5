//! Progress of long scans, reported to a Python callable `progress(done, total, finished)` at
//! most every 200 ms (the Python side draws a bar in a terminal or a notebook). The same tick
//! checks for Ctrl-C, so a long scan can be interrupted from a notebook or a shell.

use crate::error::Result;
use pyo3::prelude::*;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(200);

pub struct Progress {
    callback: Option<Py<PyAny>>,
    pub total: u64,
    pub done: u64,
    last: Instant,
    counter: u32,
    reported: bool,
}

impl Progress {
    pub fn new(callback: Option<Py<PyAny>>) -> Progress {
        Progress { callback, total: 0, done: 0, last: Instant::now(), counter: 0, reported: false }
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
            if self.last.elapsed() >= EVERY {
                self.report(false)?;
            }
        }
        Ok(())
    }

    /// Checks signals (and reports) if enough time passed; for loops without per-message ticks.
    pub fn poll(&mut self) -> Result<()> {
        if self.last.elapsed() >= EVERY {
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
        if self.callback.is_some() {
            self.report(true)?;
        }
        Ok(())
    }
}

//! How a run reports its progress: stage start and end events with their timings (the
//! report's `timings_s`), and pass events counted over all of the run's passes (the ensemble's,
//! then the deterministic comparison's), which `main` turns into logs and a progress bar.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::ensemble::PassDone;
use crate::pipeline::{Mode, Pipeline};

/// Progress as the run goes.
#[derive(Debug, Clone)]
pub enum Event {
    StageStart {
        name: &'static str,
    },
    StageDone {
        name: &'static str,
        seconds: f64,
    },
    /// A pass finished; `done.done` and `done.total` count over all of the run's passes (the
    /// ensemble's, then the deterministic comparison's), `ensemble` says which one it was.
    Pass {
        done: PassDone,
        ensemble: &'static str,
    },
}

/// Where one ensemble's passes stand among all the passes of the run.
#[derive(Debug, Clone, Copy)]
pub struct PassCount {
    /// Passes of the run before this ensemble's.
    pub before: usize,
    /// Passes of the whole run.
    pub all: usize,
    pub ensemble: &'static str,
}

impl PassCount {
    /// The run's ensemble, whose passes come first (those of a deterministic comparison follow).
    pub fn ensemble(p: &Pipeline, models: usize) -> PassCount {
        let comparison = if p.ensemble.compare_deterministic {
            models
        } else {
            0
        };
        PassCount {
            before: 0,
            all: p.passes_per_model() * models + comparison,
            ensemble: p.ensemble.mode.name(),
        }
    }

    /// The deterministic comparison's passes, one per model, after the ensemble's.
    pub fn comparison(self, models: usize) -> PassCount {
        PassCount {
            before: self.all - models,
            ensemble: Mode::Deterministic.name(),
            ..self
        }
    }
}

/// Stage timer that records into the report's `timings_s` and reports each stage.
pub struct Clock<'a> {
    pub timings: BTreeMap<String, f64>,
    pub started: Instant,
    pub on_event: &'a mut dyn FnMut(Event),
}

impl<'a> Clock<'a> {
    pub fn new(on_event: &'a mut dyn FnMut(Event)) -> Clock<'a> {
        Clock {
            timings: BTreeMap::new(),
            started: Instant::now(),
            on_event,
        }
    }

    pub fn stage<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = self.start(name);
        let out = f();
        self.record(name, t);
        out
    }

    /// Reports that stage `name` starts; its `record` ends it.
    pub fn start(&mut self, name: &'static str) -> Instant {
        (self.on_event)(Event::StageStart { name });
        Instant::now()
    }

    pub fn record(&mut self, name: &'static str, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        self.timings.insert(name.to_string(), seconds);
        (self.on_event)(Event::StageDone { name, seconds });
    }
}

//! Resources: CPUs and named custom resources, in fixed-point units.
//!
//! Amounts are stored as integers of 1/10,000 (as Ray does), so fractional
//! requests (`0.5` CPU, `0.25` GPU) add up exactly and never drift.
//! Availability is signed: a task blocked in `get` gives its CPUs back and
//! takes them again when it resumes even if that briefly oversubscribes
//! (Ray's rule), so `available.cpu` may dip below zero; new tasks then wait.

use crate::error::{Error, Text};

/// Fixed-point units per 1.0 of a resource.
pub(crate) const UNIT: f64 = 10_000.0;

pub(crate) fn to_units(x: f64) -> u64 {
    (x * UNIT).round().max(0.0) as u64
}

fn from_units(u: u64) -> f64 {
    u as f64 / UNIT
}

/// What one task needs while it runs. Custom resources are indices into the
/// runtime's table of names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// CPU units (a CPU is `UNIT` of them).
    pub cpu: u64,
    /// `(index in the runtime's table, units)` of each custom resource.
    /// (Behind a thin pointer: a request is in every job, and most ask for
    /// CPUs only; 8 bytes less keeps a trivial task's job in the same
    /// allocator size class as its output cell, which the allocator then
    /// reuses for each other: measurably fewer instructions per task.)
    #[allow(clippy::box_collection)] // the box is the thin pointer
    custom: Option<Box<Vec<(usize, u64)>>>,
}

impl Request {
    /// A request for `cpu` units and nothing else.
    pub fn cpus(cpu: u64) -> Request {
        Request { cpu, custom: None }
    }

    fn custom(&self) -> &[(usize, u64)] {
        self.custom.as_deref().map_or(&[], |v| v.as_slice())
    }

    /// True if it asks for any custom resource (not only CPUs).
    pub fn has_custom(&self) -> bool {
        self.custom.is_some()
    }
}

/// The runtime's resources: names and totals (fixed at build time).
#[derive(Debug)]
pub struct Totals {
    names: Vec<Text>,
    total_cpu: u64,
    total: Vec<u64>,
}

/// What is free now (changes under the scheduler's lock).
#[derive(Debug)]
pub(crate) struct Pool {
    totals: std::sync::Arc<Totals>,
    cpu: i64,
    free: Vec<i64>,
}

impl Totals {
    /// The totals of a runtime with `cpus` CPUs and `custom` resources.
    pub fn new(cpus: f64, custom: &[(Text, f64)]) -> std::sync::Arc<Totals> {
        std::sync::Arc::new(Totals {
            names: custom.iter().map(|(n, _)| n.clone()).collect(),
            total_cpu: to_units(cpus),
            total: custom.iter().map(|(_, a)| to_units(*a)).collect(),
        })
    }

    /// Turns named amounts into a request, or the `Infeasible` error of a
    /// request this runtime can never satisfy.
    /// `task` names the task in the error (formatted only then).
    #[inline]
    pub fn request(&self, task: &dyn std::fmt::Display, cpus: f64, custom: &[(Text, f64)]) -> Result<Request, Error> {
        if cpus == 1.0 && custom.is_empty() && self.total_cpu >= UNIT as u64 {
            return Ok(Request::cpus(UNIT as u64)); // the common case, no float work, no call
        }
        self.request_slow(task, cpus, custom)
    }

    /// [`Totals::request`] past its common case.
    #[cold]
    fn request_slow(&self, task: &dyn std::fmt::Display, cpus: f64, custom: &[(Text, f64)]) -> Result<Request, Error> {
        let infeasible = |resource: &str, requested: f64, total: f64| Error::Infeasible {
            task: task.to_string().into(),
            resource: resource.into(),
            requested,
            total,
        };
        // A negative or non-finite amount is a mistake, not a demand no
        // node meets (Ray raises `ValueError`).
        let invalid = |resource: &str, amount: f64| {
            Error::invalid(format!(
                "task `{task}` asks for {amount} of {resource}: amounts must be finite and non-negative"
            ))
        };
        if !(cpus >= 0.0 && cpus.is_finite()) {
            return Err(invalid("CPU", cpus));
        }
        let cpu = to_units(cpus);
        if cpu > self.total_cpu {
            return Err(infeasible("CPU", cpus, from_units(self.total_cpu)));
        }
        if custom.is_empty() {
            return Ok(Request::cpus(cpu));
        }
        let mut out = Vec::with_capacity(custom.len());
        for (name, amount) in custom {
            if !(*amount >= 0.0 && amount.is_finite()) {
                return Err(invalid(name, *amount));
            }
            let want = to_units(*amount);
            if want == 0 {
                continue; // none of it asked for (as Ray ignores a zero amount)
            }
            let idx = self.names.iter().position(|n| n == name);
            let total = idx.map(|i| self.total[i]).unwrap_or(0);
            if want > total || idx.is_none() {
                return Err(infeasible(name, *amount, from_units(total)));
            }
            if want > 0 {
                if let Some(i) = idx {
                    out.push((i, want));
                }
            }
        }
        Ok(Request { cpu, custom: if out.is_empty() { None } else { Some(Box::new(out)) } })
    }
}

impl Pool {
    pub fn new(totals: std::sync::Arc<Totals>) -> Pool {
        let free = totals.total.iter().map(|&t| t as i64).collect();
        Pool { cpu: totals.total_cpu as i64, free, totals }
    }

    pub fn fits(&self, r: &Request) -> bool {
        self.cpu >= r.cpu as i64 && r.custom().iter().all(|&(i, a)| self.free[i] >= a as i64)
    }

    /// True if `r`'s custom resources (not its CPUs) are free.
    pub fn fits_custom(&self, r: &Request) -> bool {
        r.custom().iter().all(|&(i, a)| self.free[i] >= a as i64)
    }

    pub fn acquire(&mut self, r: &Request) {
        self.cpu -= r.cpu as i64;
        for &(i, a) in r.custom() {
            self.free[i] -= a as i64;
        }
    }

    pub fn release(&mut self, r: &Request) {
        self.cpu += r.cpu as i64;
        for &(i, a) in r.custom() {
            self.free[i] += a as i64;
        }
    }

    /// CPUs given back by a task blocked in `get` (or taken again after).
    pub fn adjust_cpu(&mut self, delta: i64) {
        self.cpu += delta;
    }

    /// `(name, total, free)` for every resource, CPU first.
    pub fn snapshot(&self) -> Vec<(Text, f64, f64)> {
        let t = &self.totals;
        let mut v = vec![("CPU".into(), from_units(t.total_cpu), self.cpu as f64 / UNIT)];
        for (i, n) in t.names.iter().enumerate() {
            v.push((n.clone(), from_units(t.total[i]), self.free[i] as f64 / UNIT));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_requests_add_up_exactly() {
        let totals = Totals::new(1.0, &[("GPU".into(), 1.0)]);
        let mut p = Pool::new(totals.clone());
        let r = totals.request(&"t", 0.1, &[("GPU".into(), 0.25)]).unwrap();
        for _ in 0..4 {
            assert!(p.fits(&r));
            p.acquire(&r);
        }
        assert!(!p.fits(&r), "GPU exhausted after 4 x 0.25");
        for _ in 0..4 {
            p.release(&r);
        }
        assert_eq!(p.snapshot()[1].2, 1.0);
    }

    #[test]
    fn infeasible_names_the_resource() {
        let p = Totals::new(2.0, &[]);
        match p.request(&"t", 1.0, &[("GPU".into(), 1.0)]) {
            Err(Error::Infeasible { resource, .. }) => assert_eq!(&*resource, "GPU"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.request(&"t", 3.0, &[]), Err(Error::Infeasible { .. })));
        // Not a demand no node meets, but a mistake (Ray: ValueError).
        assert!(matches!(p.request(&"t", f64::NAN, &[]), Err(Error::InvalidArgument(_))));
        assert!(matches!(p.request(&"t", -1.0, &[]), Err(Error::InvalidArgument(_))));
        assert!(p.request(&"t", 1.0, &[("GPU".into(), 0.0)]).is_ok(), "a zero amount asks for nothing");
        assert!(Totals::new(0.5, &[]).request(&"t", 1.0, &[]).is_err());
    }
}

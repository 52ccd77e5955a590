//! Banzhaf values by maximum sample reuse (Wang & Jia 2023): every uniformly drawn coalition
//! updates the "with" mean of its members and the "without" mean of the others.

use super::{Plan, Sampler, Unit, UnitKind};
use crate::coalition::Coalition;
use crate::estimate::{Estimate, EstimateBuilder};
use crate::moments::{Dims, MomentTable};
use crate::rng::Rng;

pub struct MsrSampler {
    n: usize,
    table: Option<MomentTable>,
}

impl MsrSampler {
    pub fn new(n: usize) -> Self {
        MsrSampler { n, table: None }
    }
}

impl Sampler for MsrSampler {
    fn next_unit(&mut self, rng: &mut Rng) -> Plan {
        let n = self.n;
        let mut c = Coalition::empty(n);
        let mut i = 0;
        while i < n {
            let bits = rng.next_u64();
            for b in 0..64.min(n - i) {
                if (bits >> b) & 1 == 1 {
                    c.insert(i + b);
                }
            }
            i += 64;
        }
        Plan::Unit(Unit { kind: UnitKind::Single, coalitions: vec![c] })
    }

    fn absorb(&mut self, unit: &Unit, values: &[&[f64]], dims: Dims) {
        let n = self.n;
        let table = self.table.get_or_insert_with(|| MomentTable::new(2 * n, dims).with_shrinkage(super::stratified::SHRINK));
        let c = &unit.coalitions[0];
        for i in 0..n {
            table.push(2 * i + (!c.contains(i)) as usize, values[0]);
        }
    }

    fn estimate(&self, control_exact: Option<&[f64]>) -> Option<Estimate> {
        let table = self.table.as_ref()?;
        let mut b = EstimateBuilder::new(self.n, table.dims);
        for i in 0..self.n {
            b.add_cell(i, 1.0, table, 2 * i);
            b.add_cell(i, -1.0, table, 2 * i + 1);
        }
        Some(b.finish(control_exact))
    }

    fn min_budget(&self) -> u64 {
        4
    }
}

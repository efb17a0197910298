//! The API documents as a live daemon or a replay serves them: built from
//! the table under the state lock, their cgroups named after it is let go.

use std::collections::BTreeSet;

use super::{
    Exposed,
    api::{self, Attribution, CollisionsDoc, SummaryDoc, TimewaitDoc},
};
use crate::table::{Filter, Order};

/// Why a query cannot be answered, for a 400.
pub type Refusal = String;

impl Exposed {
    /// `GET /api/v1/timewait`: `filter`, narrowed to the containers or pods
    /// `attribution` names.
    pub fn timewait(
        &self,
        mut filter: Filter,
        attribution: &Attribution,
        order: Order,
        limit: usize,
    ) -> Result<TimewaitDoc, Refusal> {
        if !attribution.selects_all() {
            filter.cgroups = Some(self.cgroups_of(attribution)?);
        }
        let now = self.now_ns();
        let mut doc = api::timewait(&self.state(), now, &filter, order, limit);
        if let Some(namer) = self.namer() {
            api::name_sockets(&mut doc, namer);
        }
        Ok(doc)
    }

    /// `GET /api/v1/summary`.
    pub fn summary(&self, top: usize) -> SummaryDoc {
        let now = self.now_ns();
        let mut doc = api::summary(&self.state(), now, top);
        if let Some(namer) = self.namer() {
            api::name_summary(&mut doc, namer);
        }
        doc
    }

    /// `GET /api/v1/collisions`.
    pub fn collisions(&self, limit: usize) -> CollisionsDoc {
        let now = self.now_ns();
        api::collisions(&self.state(), now, limit)
    }

    /// The (netns, cgroup id) pairs of the table whose names `attribution`
    /// selects.
    fn cgroups_of(&self, attribution: &Attribution) -> Result<BTreeSet<(u32, u64)>, Refusal> {
        let Some(namer) = self.namer() else {
            return Err(
                "cgroup= and pod= need a live daemon on the host: a replay does not \
                        know the recording host's cgroups"
                    .into(),
            );
        };
        let keys = self.state().table.cgroup_keys();
        Ok(keys
            .into_iter()
            .filter(|&(netns, id)| namer(netns, id).is_some_and(|n| attribution.selects(&n)))
            .collect())
    }
}

//! The simulated fleet: which version each host runs and how many serve each version per zone.

use rollwave_core::engine::ReleaseId;
use rollwave_core::plan::{EnvId, HostId, Plan, ZoneId};

pub(crate) struct Fleet {
    pub envs: Vec<EnvFleet>,
}

pub(crate) struct EnvFleet {
    pub version: Vec<ReleaseId>,
    pub broken: Vec<bool>,
    /// Working hosts per version, per zone; a handful of versions at most.
    pub serving: Vec<Vec<(ReleaseId, u32)>>,
}

impl Fleet {
    pub fn new(plan: &Plan) -> Self {
        let envs = plan
            .envs
            .iter()
            .map(|e| EnvFleet {
                version: vec![ReleaseId(0); e.hosts.len()],
                broken: vec![false; e.hosts.len()],
                serving: e.zones.iter().map(|z| vec![(ReleaseId(0), z.hosts.len() as u32)]).collect(),
            })
            .collect();
        Fleet { envs }
    }

    pub fn set_version(&mut self, plan: &Plan, env: EnvId, host: HostId, version: ReleaseId) {
        let e = &mut self.envs[env.idx()];
        let old = std::mem::replace(&mut e.version[host.idx()], version);
        if e.broken[host.idx()] || old == version {
            return;
        }
        let zone = plan.host_zone(env, host);
        e.count(zone, old, -1);
        e.count(zone, version, 1);
    }

    pub fn break_host(&mut self, plan: &Plan, env: EnvId, host: HostId) {
        let e = &mut self.envs[env.idx()];
        if std::mem::replace(&mut e.broken[host.idx()], true) {
            return;
        }
        let zone = plan.host_zone(env, host);
        let v = e.version[host.idx()];
        e.count(zone, v, -1);
    }
}

impl EnvFleet {
    fn count(&mut self, zone: ZoneId, version: ReleaseId, delta: i64) {
        let counts = &mut self.serving[zone.idx()];
        match counts.iter_mut().find(|(v, _)| *v == version) {
            Some((_, n)) => *n = (i64::from(*n) + delta).max(0) as u32,
            None if delta > 0 => counts.push((version, delta as u32)),
            None => {}
        }
        counts.retain(|(_, n)| *n > 0);
        counts.sort_unstable();
    }
}

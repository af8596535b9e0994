//! The expanded plan: the fleet of every environment laid out as flat tables of regions,
//! zones and hosts, and the rollout tree of every stage, wave and region.

use crate::format_duration;
use crate::manifest::{Bake, Manifest, Strategy};
use std::ops::Range;
use std::time::Duration;

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            pub fn idx(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_type!(
    /// An environment of the manifest.
    EnvId(u16)
);
index_type!(
    /// A region within its environment.
    RegionId(u16)
);
index_type!(
    /// A zone within its environment (numbered across all its regions).
    ZoneId(u32)
);
index_type!(
    /// A host within its environment (numbered across all its zones).
    HostId(u32)
);
index_type!(
    /// A stage of the pipeline.
    StageId(u16)
);

/// A manifest with its fleet laid out. Built once; the engine and simulator only read it.
#[derive(Clone, Debug)]
pub struct Plan {
    pub manifest: Manifest,
    pub envs: Vec<EnvPlan>,
}

#[derive(Clone, Debug)]
pub struct EnvPlan {
    pub regions: Vec<RegionPlan>,
    pub zones: Vec<ZonePlan>,
    pub hosts: Vec<HostPlan>,
}

#[derive(Clone, Debug)]
pub struct RegionPlan {
    pub zones: Range<u32>,
    pub hosts: Range<u32>,
}

#[derive(Clone, Debug)]
pub struct ZonePlan {
    pub region: RegionId,
    pub hosts: Range<u32>,
    /// The most hosts of this zone that may be out of service at once, over every wave
    /// that deploys to it: rollbacks keep to it as well.
    pub max_out_of_service: u32,
}

#[derive(Clone, Debug)]
pub struct HostPlan {
    pub name: String,
    pub zone: ZoneId,
}

impl Plan {
    pub fn new(manifest: Manifest) -> Self {
        let mut envs: Vec<EnvPlan> = manifest
            .environments
            .iter()
            .map(|env| {
                let mut plan = EnvPlan { regions: Vec::new(), zones: Vec::new(), hosts: Vec::new() };
                for (r, region) in env.regions.iter().enumerate() {
                    let zone_start = plan.zones.len() as u32;
                    let host_start = plan.hosts.len() as u32;
                    for zone in &region.zones {
                        let z = ZoneId(plan.zones.len() as u32);
                        let first = plan.hosts.len() as u32;
                        plan.hosts
                            .extend((1..=zone.hosts).map(|n| HostPlan { name: format!("{}-{n}", zone.name), zone: z }));
                        plan.zones.push(ZonePlan {
                            region: RegionId(r as u16),
                            hosts: first..plan.hosts.len() as u32,
                            max_out_of_service: u32::MAX,
                        });
                    }
                    plan.regions.push(RegionPlan {
                        zones: zone_start..plan.zones.len() as u32,
                        hosts: host_start..plan.hosts.len() as u32,
                    });
                }
                plan
            })
            .collect();
        for stage in &manifest.stages {
            let env = &mut envs[stage.environment];
            for wave in &stage.waves {
                for &r in &wave.regions {
                    for z in env.regions[r].zones.clone() {
                        let zone = &mut env.zones[z as usize];
                        let limit = wave.strategy.rolling.batch.hosts_in(zone.hosts.len() as u32);
                        zone.max_out_of_service = zone.max_out_of_service.min(limit);
                    }
                }
            }
        }
        for env in &mut envs {
            for zone in &mut env.zones {
                if zone.max_out_of_service == u32::MAX {
                    zone.max_out_of_service = (zone.hosts.len() as u32).max(1);
                }
            }
        }
        Plan { manifest, envs }
    }

    pub fn stage_env(&self, stage: StageId) -> EnvId {
        EnvId(self.manifest.stages[stage.idx()].environment as u16)
    }

    pub fn env(&self, env: EnvId) -> &EnvPlan {
        &self.envs[env.idx()]
    }

    pub fn region_name(&self, env: EnvId, region: RegionId) -> &str {
        &self.manifest.environments[env.idx()].regions[region.idx()].name
    }

    pub fn zone_name(&self, env: EnvId, zone: ZoneId) -> &str {
        let z = &self.env(env).zones[zone.idx()];
        let region = &self.manifest.environments[env.idx()].regions[z.region.idx()];
        &region.zones[zone.0 as usize - self.env(env).regions[z.region.idx()].zones.start as usize].name
    }

    pub fn host_name(&self, env: EnvId, host: HostId) -> &str {
        &self.env(env).hosts[host.idx()].name
    }

    /// Finds a host by name (`{zone}-{n}`) in an environment.
    pub fn host_named(&self, env: EnvId, name: &str) -> Option<HostId> {
        self.env(env).hosts.iter().position(|h| h.name == name).map(|i| HostId(i as u32))
    }

    pub fn host_zone(&self, env: EnvId, host: HostId) -> ZoneId {
        self.env(env).hosts[host.idx()].zone
    }

    pub fn zone_region(&self, env: EnvId, zone: ZoneId) -> RegionId {
        self.env(env).zones[zone.idx()].region
    }

    pub fn zone_hosts(&self, env: EnvId, zone: ZoneId) -> Range<u32> {
        self.env(env).zones[zone.idx()].hosts.clone()
    }

    pub fn region_zones(&self, env: EnvId, region: RegionId) -> Range<u32> {
        self.env(env).regions[region.idx()].zones.clone()
    }

    /// The first stage deploying to `env`, for naming scopes that belong to no stage in particular.
    pub fn first_stage_of(&self, env: EnvId) -> StageId {
        let i = self.manifest.stages.iter().position(|s| s.environment == env.idx()).unwrap_or(0);
        StageId(i as u16)
    }

    /// Hosts of the one-box in a region: the first hosts of its first zone, as many as the
    /// strategy asks, capped by `max_share` of the region and by the zone's batch, at least one.
    pub fn one_box_hosts(&self, env: EnvId, region: RegionId, strategy: &Strategy) -> Option<Range<u32>> {
        let one_box = strategy.one_box.as_ref()?;
        let r = &self.env(env).regions[region.idx()];
        let first_zone = self.env(env).zones.get(r.zones.start as usize)?;
        let zone_hosts = first_zone.hosts.len() as u32;
        if zone_hosts == 0 {
            return None;
        }
        let n = one_box
            .hosts
            .min(one_box.max_share.of(r.hosts.len() as u32))
            .min(strategy.rolling.batch.hosts_in(zone_hosts))
            .max(1);
        Some(first_zone.hosts.start..first_zone.hosts.start + n)
    }

    /// The rollout tree of every stage, for `rollwave plan`.
    pub fn tree(&self) -> Vec<StageTree> {
        self.manifest
            .stages
            .iter()
            .enumerate()
            .map(|(s, stage)| {
                let env = self.stage_env(StageId(s as u16));
                StageTree {
                    name: stage.name.clone(),
                    environment: self.manifest.environments[env.idx()].name.clone(),
                    approval: stage.approval,
                    tests: stage.tests.iter().map(|t| t.name.clone()).collect(),
                    waves: stage
                        .waves
                        .iter()
                        .map(|wave| {
                            let regions: Vec<RegionTree> = wave
                                .regions
                                .iter()
                                .map(|&r| self.region_tree(env, RegionId(r as u16), &wave.strategy))
                                .collect();
                            let longest = regions.iter().map(|r| r.lead_time).max().unwrap_or_default();
                            WaveTree {
                                name: wave.name.clone(),
                                regions,
                                bake: wave.strategy.bake,
                                lead_time: longest + wave.strategy.bake.time,
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn region_tree(&self, env: EnvId, region: RegionId, strategy: &Strategy) -> RegionTree {
        let one_box = self.one_box_hosts(env, region, strategy);
        let mut zones = Vec::new();
        for z in self.region_zones(env, region) {
            let hosts = self.zone_hosts(env, ZoneId(z));
            let skip = match &one_box {
                Some(ob) if ob.start >= hosts.start && ob.end <= hosts.end => ob.len() as u32,
                _ => 0,
            };
            let total = hosts.len() as u32;
            let per_batch = strategy.rolling.batch.hosts_in(total);
            let mut left = total - skip;
            let mut batches = Vec::new();
            while left > 0 {
                let b = per_batch.min(left);
                batches.push(b);
                left -= b;
            }
            zones.push(ZoneTree {
                name: self.zone_name(env, ZoneId(z)).to_owned(),
                hosts: total,
                batches,
                bake: strategy.rolling.zone_bake,
            });
        }
        let one_box_bake = strategy.one_box.as_ref().map(|o| o.bake);
        let lead_time = one_box.as_ref().and(one_box_bake).map(|b| b.time).unwrap_or_default()
            + zones.iter().map(|z| z.bake.time).sum::<Duration>();
        RegionTree {
            name: self.region_name(env, region).to_owned(),
            one_box: one_box.zip(one_box_bake).map(|(h, bake)| OneBoxTree {
                hosts: h.map(|i| self.host_name(env, HostId(i)).to_owned()).collect(),
                bake,
            }),
            zones,
            lead_time,
        }
    }

    /// The shortest possible lead time of a release: bakes on the critical path, with
    /// instant deployments, instant approvals and windows ignored.
    pub fn lead_time(&self) -> Duration {
        self.tree().iter().flat_map(|s| &s.waves).map(|w| w.lead_time).sum()
    }
}

#[derive(Clone, Debug)]
pub struct StageTree {
    pub name: String,
    pub environment: String,
    pub approval: bool,
    pub tests: Vec<String>,
    pub waves: Vec<WaveTree>,
}

#[derive(Clone, Debug)]
pub struct WaveTree {
    pub name: String,
    pub regions: Vec<RegionTree>,
    pub bake: Bake,
    /// The slowest region plus the wave's bake.
    pub lead_time: Duration,
}

#[derive(Clone, Debug)]
pub struct RegionTree {
    pub name: String,
    pub one_box: Option<OneBoxTree>,
    pub zones: Vec<ZoneTree>,
    pub lead_time: Duration,
}

#[derive(Clone, Debug)]
pub struct OneBoxTree {
    pub hosts: Vec<String>,
    pub bake: Bake,
}

#[derive(Clone, Debug)]
pub struct ZoneTree {
    pub name: String,
    pub hosts: u32,
    /// Hosts per batch, in order; the one-box hosts are not counted again.
    pub batches: Vec<u32>,
    pub bake: Bake,
}

/// `1h, 100 data points`
pub fn describe_bake(b: &Bake) -> String {
    if b.min_datapoints > 0 {
        format!("{} and {} data points", format_duration(b.time), b.min_datapoints)
    } else {
        format_duration(b.time)
    }
}

//! `rollwave plan`: the rollout tree as text or JSON.

use rollwave_core::format_duration;
use rollwave_core::manifest::Bake;
use rollwave_core::plan::{Plan, describe_bake};
use serde_json::{Value, json};
use std::fmt::Write;

fn bake_json(b: &Bake) -> Value {
    json!({ "time_s": b.time.as_secs(), "time": format_duration(b.time), "min_datapoints": b.min_datapoints })
}

pub fn to_json(plan: &Plan) -> Value {
    let stages: Vec<Value> = plan
        .tree()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "environment": s.environment,
                "approval": s.approval,
                "tests": s.tests,
                "waves": s.waves.iter().map(|w| json!({
                    "name": w.name,
                    "bake": bake_json(&w.bake),
                    "lead_time_s": w.lead_time.as_secs(),
                    "regions": w.regions.iter().map(|r| json!({
                        "name": r.name,
                        "one_box": r.one_box.as_ref().map(|o| json!({ "hosts": o.hosts, "bake": bake_json(&o.bake) })),
                        "zones": r.zones.iter().map(|z| json!({
                            "name": z.name,
                            "hosts": z.hosts,
                            "batches": z.batches,
                            "bake": bake_json(&z.bake),
                        })).collect::<Vec<_>>(),
                        "lead_time_s": r.lead_time.as_secs(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let lead = plan.lead_time();
    json!({
        "service": plan.manifest.service,
        "stages": stages,
        "lead_time_s": lead.as_secs(),
        "lead_time": format_duration(lead),
    })
}

pub fn to_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "service {}", plan.manifest.service);
    for s in plan.tree() {
        let mut notes = Vec::new();
        if s.approval {
            notes.push("needs approval".to_owned());
        }
        if !s.tests.is_empty() {
            notes.push(format!("tests: {}", s.tests.join(", ")));
        }
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        let _ = writeln!(out, "stage {} → environment {}{notes}", s.name, s.environment);
        for w in &s.waves {
            let _ = writeln!(
                out,
                "  wave {}: then bake {} (critical path {})",
                w.name,
                describe_bake(&w.bake),
                format_duration(w.lead_time)
            );
            for r in &w.regions {
                let _ = writeln!(out, "    region {}", r.name);
                if let Some(o) = &r.one_box {
                    let _ = writeln!(out, "      one-box {}: bake {}", o.hosts.join(", "), describe_bake(&o.bake));
                }
                for z in &r.zones {
                    let batches: Vec<String> = z.batches.iter().map(u32::to_string).collect();
                    let batches = if batches.is_empty() { "none left".to_owned() } else { batches.join("+") };
                    let _ = writeln!(
                        out,
                        "      zone {} ({} hosts): batches {batches}, bake {}",
                        z.name,
                        z.hosts,
                        describe_bake(&z.bake)
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "shortest lead time: {} (bakes on the critical path; windows ignored)",
        format_duration(plan.lead_time())
    );
    out
}

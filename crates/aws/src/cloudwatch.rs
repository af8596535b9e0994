//! `GetMetricData` over CloudWatch's JSON protocol: one value per metric for one period.

use crate::client::{CallError, Client};
use serde_json::json;

/// One metric to read: its namespace, name, dimensions and statistic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricQuery {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub statistic: String,
}

/// CloudWatch in one region.
pub struct CloudWatch {
    client: Client,
}

impl CloudWatch {
    pub fn new(client: Client) -> CloudWatch {
        CloudWatch { client }
    }

    /// Each query's value over the period `[end_s - period_s, end_s)` (Unix seconds), in
    /// the queries' order; `None` where CloudWatch has no data point.
    pub fn values(
        &self,
        queries: &[MetricQuery],
        end_s: i64,
        period_s: i64,
        journal: &mut Vec<String>,
    ) -> Result<Vec<Option<f64>>, CallError> {
        let period_s = period_s.max(1);
        let metric_queries: Vec<serde_json::Value> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                json!({
                    "Id": format!("m{i}"),
                    "MetricStat": {
                        "Metric": {
                            "Namespace": q.namespace,
                            "MetricName": q.name,
                            "Dimensions": q.dimensions.iter().map(|(n, v)| json!({ "Name": n, "Value": v })).collect::<Vec<_>>(),
                        },
                        "Period": period_s,
                        "Stat": q.statistic,
                    },
                    "ReturnData": true,
                })
            })
            .collect();
        let body = json!({
            "MetricDataQueries": metric_queries,
            "StartTime": end_s - period_s,
            "EndTime": end_s,
            "ScanBy": "TimestampDescending",
        });
        let answer = self.client.call_json_rpc("GraniteServiceVersion20100801", "GetMetricData", &body, journal)?;
        let results = answer.get("MetricDataResults").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        Ok((0..queries.len())
            .map(|i| {
                let id = format!("m{i}");
                results
                    .iter()
                    .find(|r| r.get("Id").and_then(|v| v.as_str()) == Some(id.as_str()))
                    .and_then(|r| r.get("Values")?.as_array()?.first()?.as_f64())
            })
            .collect())
    }
}

//! The annual-cost answer of docs/assignment.md (batch vs event-driven on GKE, and versus
//! own hardware), computed rather than typed: every input is a named constant here with
//! its source, the pod requests are checked against `manifests/base` by a test, and a test
//! requires docs/assignment.md to hold exactly what `lims-sim cost` prints.

use std::fmt::Write as _;

/// Hours in a (non-leap) year.
pub const HOURS_PER_YEAR: f64 = 8760.0;

/// CPU (millicores) and memory (MiB) a pod requests: what it reserves of a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requests {
    /// CPU request in millicores.
    pub cpu_m: f64,
    /// Memory request in MiB.
    pub mem_mib: f64,
}

/// Everything the calculation uses.
#[derive(Debug, Clone)]
pub struct CostInputs {
    /// A 3 × e2-custom-4-4096 cluster at $0.42/h (≈ $304/month) all in: what one earlier
    /// LIMS deployment reported (shared/LIMS.md), not the assignment's reference.
    pub reference_cluster_per_hour: f64,
    /// Nodes in it.
    pub reference_nodes: f64,
    /// vCPUs per node (e2-custom-4-4096).
    pub node_vcpu: f64,
    /// Memory per node in MiB (e2-custom-4-4096).
    pub node_mem_mib: f64,
    /// The assignment's reference cluster: one n1-standard-4 (4 vCPU, 15 GB), on demand, us-central1
    /// list price; its zonal cluster's $0.10/h management fee is covered by GKE's free tier.
    pub single_node_per_hour: f64,
    /// consumer-job (manifests/base/consumer-job.yaml).
    pub job: Requests,
    /// consumer-api, per replica (manifests/base/consumer-api.yaml).
    pub api: Requests,
    /// consumer-api replicas at rest (the HPA's minimum).
    pub api_replicas: f64,
    /// Most consumer-job replicas KEDA runs (the partition count; manifests/components/keda).
    pub max_job_replicas: f64,
    /// The Db Synchronizer's pod: LIMS's prod manifest requests 250m CPU and 128Mi.
    pub batch: Requests,
    /// The GKE Ingress's load balancer: one forwarding rule (Cloud Load Balancing list
    /// price for the first five rules).
    pub forwarding_rule_per_hour: f64,
    /// MB a LIMS hour moves, stream and batch (`lims-sim experiment`: 5.85 and 2.52 MB
    /// in 60 s at 60×, i.e. one LIMS hour; docs/experiment/batch-vs-stream.csv).
    pub stream_mb_per_hour: f64,
    /// See `stream_mb_per_hour`.
    pub batch_mb_per_hour: f64,
    /// Own hardware: one server that holds the whole LIMS (≥ 12 vCPU threads, 32 GB),
    /// bought for this much and written off over `server_years`.
    pub server_price: f64,
    /// Years to write the server off.
    pub server_years: f64,
    /// Its average draw in watts.
    pub server_watts: f64,
    /// Electricity price per kWh.
    pub kwh_price: f64,
    /// Hours of administration per month that the managed control plane saves.
    pub admin_hours_per_month: f64,
    /// Cost of an administrator's hour.
    pub admin_hour_price: f64,
}

impl Default for CostInputs {
    fn default() -> Self {
        Self {
            reference_cluster_per_hour: 0.42,
            reference_nodes: 3.0,
            node_vcpu: 4.0,
            node_mem_mib: 4096.0,
            single_node_per_hour: 0.19,
            job: Requests {
                cpu_m: 100.0,
                mem_mib: 64.0,
            },
            api: Requests {
                cpu_m: 50.0,
                mem_mib: 64.0,
            },
            api_replicas: 2.0,
            max_job_replicas: 3.0,
            batch: Requests {
                cpu_m: 250.0,
                mem_mib: 128.0,
            },
            forwarding_rule_per_hour: 0.025,
            stream_mb_per_hour: 5.85,
            batch_mb_per_hour: 2.52,
            server_price: 1500.0,
            server_years: 3.0,
            server_watts: 60.0,
            kwh_price: 0.30,
            admin_hours_per_month: 2.0,
            admin_hour_price: 50.0,
        }
    }
}

impl CostInputs {
    /// A node's price per hour in the reference cluster.
    pub fn node_per_hour(&self) -> f64 {
        self.reference_cluster_per_hour / self.reference_nodes
    }

    /// The fraction of a node `r` reserves: its larger share of CPU or memory (the node
    /// is full when either runs out).
    pub fn share(&self, r: Requests) -> f64 {
        (r.cpu_m / 1000.0 / self.node_vcpu).max(r.mem_mib / self.node_mem_mib)
    }

    /// What reserving `r` for a year costs at the reference node price.
    pub fn yearly(&self, r: Requests) -> f64 {
        self.share(r) * self.node_per_hour() * HOURS_PER_YEAR
    }
}

fn req(r: Requests) -> String {
    format!("{:.0}m CPU, {:.0} MiB", r.cpu_m, r.mem_mib)
}

/// One line of the table: item, arithmetic, dollars a year.
type Row = (String, String, f64);

/// Own hardware's rows, their total and the administration part of it.
fn own_hardware(c: &CostInputs) -> (Vec<Row>, f64, f64) {
    let hw = c.server_price / c.server_years;
    let power = c.server_watts * HOURS_PER_YEAR / 1000.0 * c.kwh_price;
    let admin = c.admin_hours_per_month * 12.0 * c.admin_hour_price;
    let rows = vec![
        (
            format!(
                "own hardware: server ${:.0} over {:.0} years",
                c.server_price, c.server_years
            ),
            format!("${:.0} / {:.0}", c.server_price, c.server_years),
            hw,
        ),
        (
            format!("own hardware: power, {:.0} W average", c.server_watts),
            format!(
                "{:.0} kWh × ${:.2}",
                c.server_watts * HOURS_PER_YEAR / 1000.0,
                c.kwh_price
            ),
            power,
        ),
        (
            "own hardware: administration GKE does for us".into(),
            format!(
                "{:.0} h/month × 12 × ${:.0}/h",
                c.admin_hours_per_month, c.admin_hour_price
            ),
            admin,
        ),
    ];
    (rows, hw + power + admin, admin)
}

/// `+$12` or `−$12`, rounded to whole dollars.
fn signed_dollars(amount: f64) -> String {
    let sign = if amount.round() < 0.0 { "−" } else { "+" };
    format!("{sign}${:.0}", amount.abs())
}

/// The cost tables, as Markdown (what docs/assignment.md shows).
pub fn render(c: &CostInputs) -> String {
    let mut s = String::new();
    let node = c.node_per_hour();
    let share_of_node = |share: f64| {
        format!(
            "{:.1}% of a node × ${node:.2}/h × {HOURS_PER_YEAR:.0} h",
            100.0 * share
        )
    };
    let cluster_year = c.reference_cluster_per_hour * HOURS_PER_YEAR;
    let single_year = c.single_node_per_hour * HOURS_PER_YEAR;
    let batch = c.yearly(c.batch);
    let job = c.yearly(c.job);
    let api_share = c.share(c.api) * c.api_replicas;
    let api = c.yearly(c.api) * c.api_replicas;
    let lb = c.forwarding_rule_per_hour * HOURS_PER_YEAR;
    let stream_gb = c.stream_mb_per_hour * HOURS_PER_YEAR / 1000.0;
    let batch_gb = c.batch_mb_per_hour * HOURS_PER_YEAR / 1000.0;
    let (hw_rows, hw_total, admin) = own_hardware(c);
    let mut rows: Vec<Row> = vec![
        (
            "whole LIMS cluster as one earlier deployment reported it: 3 × e2-custom-4-4096".into(),
            format!(
                "${:.2}/h × {HOURS_PER_YEAR:.0} h",
                c.reference_cluster_per_hour
            ),
            cluster_year,
        ),
        (
            "whole LIMS cluster, the assignment's reference: 1 × n1-standard-4, free-tier zonal"
                .into(),
            format!("${:.2}/h × {HOURS_PER_YEAR:.0} h", c.single_node_per_hour),
            single_year,
        ),
        (
            format!("batch: Db Synchronizer pod ({})", req(c.batch)),
            share_of_node(c.share(c.batch)),
            batch,
        ),
        (
            format!("stream: consumer-job pod ({})", req(c.job)),
            share_of_node(c.share(c.job)),
            job,
        ),
        (
            format!(
                "stream, scaled out by KEDA: {:.0} × consumer-job (only while lag lasts)",
                c.max_job_replicas
            ),
            format!("{:.0} × ${job:.0}", c.max_job_replicas),
            job * c.max_job_replicas,
        ),
        (
            format!("stream: data moved, {stream_gb:.0} GB/yr (batch: {batch_gb:.0} GB/yr)"),
            "in-zone traffic is free".into(),
            0.0,
        ),
        (
            format!("consumer-api pods ({:.0} × {})", c.api_replicas, req(c.api)),
            share_of_node(api_share),
            api,
        ),
        (
            "consumer-api's own Ingress (one forwarding rule)".into(),
            format!(
                "${:.3}/h × {HOURS_PER_YEAR:.0} h",
                c.forwarding_rule_per_hour
            ),
            lb,
        ),
    ];
    rows.extend(hw_rows);
    s.push_str("| item | arithmetic | $/year |\n|---|---|---:|\n");
    for (item, how, dollars) in rows {
        let _ = writeln!(s, "| {item} | {how} | {dollars:.0} |");
    }
    let _ = writeln!(
        s,
        "\nReplacing the batch job by the stream: ${batch:.0} → ${job:.0} a year, a difference of \
         {}. With the consumer API and its Ingress the stream side costs ${:.0} a year, \
         {:.1}% of the assignment's reference cluster's ${single_year:.0} \
         ({:.1}% of the reported 3-node cluster's ${cluster_year:.0}). \
         Own hardware: ${:.0} a year (${:.0} without administration).",
        signed_dollars(job - batch),
        job + api + lb,
        100.0 * (job + api + lb) / single_year,
        100.0 * (job + api + lb) / cluster_year,
        hw_total,
        hw_total - admin,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_costs_its_larger_share_of_a_node() {
        let c = CostInputs::default();
        // 100m of 4 vCPU = 2.5%; 64 of 4096 MiB = 1.5625%: CPU decides.
        assert!((c.share(c.job) - 0.025).abs() < 1e-12);
        // $0.14/h per node × 2.5% × 8760 h = $30.66.
        assert!((c.yearly(c.job) - 30.66).abs() < 1e-9);
        // The Db Synchronizer: 250m = 6.25%, 128 MiB = 3.125%: CPU decides.
        assert!((c.share(c.batch) - 0.0625).abs() < 1e-12);
    }

    #[test]
    fn the_tables_show_the_arithmetic_and_the_totals() {
        let text = render(&CostInputs::default());
        assert!(text.contains("| $0.42/h × 8760 h | 3679 |"), "{text}");
        assert!(text.contains("| $0.025/h × 8760 h | 219 |"), "{text}");
        assert!(text.contains("difference of −$46"), "{text}");
    }
}

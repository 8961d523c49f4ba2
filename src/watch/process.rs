//! The standard `process_*` metrics (CPU time, resident and virtual memory, open and maximum
//! file descriptors, start time), read from `/proc/self` at each scrape, so an idle daemon
//! does no work for them. prometheus-client has no process collector; on a platform without
//! `/proc` (anything but Linux) the daemon exports none of them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Adds the process metrics to `registry` where they can be read.
pub fn register(registry: &mut Registry) {
    if cfg!(target_os = "linux") {
        registry.register_collector(Box::new(ProcessCollector));
    }
}

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture (Prometheus's own Go collector assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
struct ProcessCollector;

/// One reading of `/proc/self`; a figure that cannot be read is left out.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = read();
        if let Some(v) = r.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        let bytes = |n: Option<i64>| n.map(|n| n as f64);
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                bytes(r.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                bytes(r.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                bytes(r.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                bytes(r.max_fds),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                r.start_time_seconds,
            ),
        ] {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

fn read() -> Reading {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let mut r = Reading::default();
    if let Some(stat) = text("/proc/self/stat") {
        let boot = text("/proc/stat").and_then(|s| boot_time(&s));
        parse_stat(&stat, boot, &mut r);
    }
    if let Some(status) = text("/proc/self/status") {
        r.resident_bytes = kib_field(&status, "VmRSS:").map(|k| k.saturating_mul(1024));
    }
    r.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
    r.max_fds = text("/proc/self/limits").and_then(|l| max_open_files(&l));
    r
}

/// CPU time, virtual memory and start time from `/proc/self/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str, boot_time: Option<u64>, r: &mut Reading) {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    // rest[0] is field 3 (state): field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        r.cpu_seconds = Some((user + system) as f64 / TICKS_PER_SECOND);
    }
    r.virtual_bytes = field(23).map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    if let (Some(boot), Some(start)) = (boot_time, field(22)) {
        r.start_time_seconds = Some(boot as f64 + start as f64 / TICKS_PER_SECOND);
    }
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the Unix epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in KiB.
fn kib_field(status: &str, name: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may be named.
        let stat = "4242 (feed (b) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let mut r = Reading::default();
        parse_stat(stat, Some(1_700_000_000), &mut r);
        assert_eq!(r.cpu_seconds, Some(3.0));
        assert_eq!(r.virtual_bytes, Some(104_857_600));
        assert_eq!(r.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(kib_field("VmRSS:\t   11264 kB\n", "VmRSS:"), Some(11_264));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let r = read();
        assert!(
            r.cpu_seconds.is_some() && r.start_time_seconds.is_some(),
            "{r:?}"
        );
        assert!(r.resident_bytes.is_some_and(|b| b > 0), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n > 0), "{r:?}");
    }
}

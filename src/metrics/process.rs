//! What the agent process costs, read from `/proc/self` at scrape time.
//!
//! Only reads `/proc`; a value that cannot be read leaves the whole set out rather than showing
//! a wrong number.

/// Clock ticks per second of `utime` and `stime` in `/proc/PID/stat`: the kernel's `USER_HZ`,
/// which is 100 on every architecture Linux runs edgeroll on (amd64, arm64).
const USER_HZ: f64 = 100.0;

/// The agent process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Resident set size (`VmRSS`), bytes.
    pub resident_memory_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: usize,
    /// Threads.
    pub threads: usize,
}

impl ProcessStats {
    /// The current values, or `None` when `/proc/self` cannot be read (not Linux, or no `/proc`).
    pub fn read() -> Option<ProcessStats> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let mut stats = ProcessStats::parse(&status, &stat)?;
        stats.open_fds = open_fds;
        Some(stats)
    }

    /// Parse `/proc/PID/status` and `/proc/PID/stat` (open file descriptors are counted apart).
    fn parse(status: &str, stat: &str) -> Option<ProcessStats> {
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let resident_kib = field("VmRSS")?;
        let threads = usize::try_from(field("Threads")?).ok()?;
        // The command name in parentheses may contain spaces; the fields after its closing
        // parenthesis are positional: state is field 3, utime 14 and stime 15.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| -> Option<f64> { fields.get(index)?.parse::<f64>().ok() };
        let cpu_ticks = ticks(14 - 3)? + ticks(15 - 3)?;
        Some(ProcessStats {
            resident_memory_bytes: resident_kib * 1024,
            cpu_seconds: cpu_ticks / USER_HZ,
            open_fds: 0,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat_even_with_spaces_in_the_name() {
        let status = "Name:\tedgeroll\nVmPeak:\t  20000 kB\nVmRSS:\t    7340 kB\nThreads:\t3\n";
        let stat = "4242 (edge roll) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 3 0";
        let stats = ProcessStats::parse(status, stat).unwrap();
        assert_eq!(stats.resident_memory_bytes, 7340 * 1024);
        assert_eq!(stats.threads, 3);
        assert!((stats.cpu_seconds - 3.25).abs() < 1e-9);
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read().unwrap();
        assert!(stats.resident_memory_bytes > 0);
        assert!(stats.open_fds >= 3);
        assert!(stats.threads >= 1);
    }
}

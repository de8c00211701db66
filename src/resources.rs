//! What the process may use and has used: the thread count a run takes (the config, else the
//! CPU quota of a Slurm job or the cgroup/affinity-aware count the OS reports) and the peak
//! resident memory the report records.

/// Threads to use: the configured count, else the CPU quota (`SLURM_CPUS_PER_TASK`, then the
/// cgroup/affinity-aware count the OS reports).
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    if let Some(n) = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// This process's peak resident memory so far (Linux `VmHWM`, which, unlike `ru_maxrss`, does
/// not include what the parent held before `exec`); `None` where it cannot be read.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

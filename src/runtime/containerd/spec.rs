//! The OCI runtime spec of an instance's container, built here (containerd stores what the
//! client sends): the process from the image config and the template, containerd's default
//! mounts, capabilities, masked paths and rlimits, the host network, and the template's limits.
//!
//! It owns only this JSON; it never talks to the engine. It never adds a network namespace (the
//! instance serves on the host's loopback port the supervisor allocated).

use serde_json::{json, Value};

use super::image::ProcessConfig;
use crate::spec::ContainerSpec;

/// `Any.type_url` of an OCI runtime spec, as containerd's Go client writes it.
pub(super) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The cgroup parent of every container of the agent.
pub(super) const CGROUP_PARENT: &str = "/edgeroll";
/// CPU period for `cpu_millis` limits, microseconds.
const CPU_PERIOD: u64 = 100_000;
/// `PATH` when the image sets none (containerd's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capabilities (`oci.defaultUnixCaps`).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// What the container's process runs, from the image's defaults and the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Process {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) cwd: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl Process {
    /// `command` replaces the image's entrypoint (and drops its `CMD`, as Docker does); `args`
    /// replace its `CMD`. The environment is the image's, then `env` (later keys win).
    pub(super) fn of(
        image: &ProcessConfig,
        command: Vec<String>,
        args: Vec<String>,
        env: &[(String, String)],
    ) -> Process {
        let argv = if !command.is_empty() {
            command.into_iter().chain(args).collect()
        } else {
            let entrypoint = image.entrypoint.clone().unwrap_or_default();
            let cmd = if args.is_empty() {
                image.cmd.clone().unwrap_or_default()
            } else {
                args
            };
            entrypoint.into_iter().chain(cmd).collect()
        };
        let mut variables: Vec<String> = image.env.clone().unwrap_or_default();
        if !variables
            .iter()
            .any(|variable| variable.starts_with("PATH="))
        {
            variables.insert(0, DEFAULT_PATH.to_string());
        }
        for (key, value) in env {
            let prefix = format!("{key}=");
            variables.retain(|variable| !variable.starts_with(&prefix));
            variables.push(format!("{key}={value}"));
        }
        let cwd = image
            .working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_string());
        // Only numeric users: resolving a name would need the image's /etc/passwd.
        let (uid, gid) = image
            .user
            .as_deref()
            .map(|user| {
                let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
                let uid = uid.parse().unwrap_or(0);
                (uid, gid.parse().unwrap_or(uid))
            })
            .unwrap_or((0, 0));
        Process {
            args: argv,
            env: variables,
            cwd,
            uid,
            gid,
        }
    }
}

/// The runtime spec JSON of container `id`, with the limits of `container`.
pub(super) fn runtime_spec(
    id: &str,
    process: &Process,
    container: Option<&ContainerSpec>,
) -> Value {
    let mut resources = json!({
        "devices": [{ "allow": false, "access": "rwm" }],
    });
    if let Some(millis) = container.and_then(|container| container.cpu_millis) {
        resources["cpu"] = json!({
            "quota": u64::from(millis) * CPU_PERIOD / 1000,
            "period": CPU_PERIOD,
        });
    }
    if let Some(bytes) = container.and_then(|container| container.memory_bytes) {
        resources["memory"] = json!({ "limit": bytes });
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        // Host network: sysfs read-only, as containerd mounts it for a host-network container.
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    // The host's name resolution, as `ctr run --net-host` gives it.
    for file in ["/etc/hosts", "/etc/resolv.conf"] {
        if std::path::Path::new(file).exists() {
            mounts.push(json!({"destination": file, "type": "bind", "source": file,
                               "options": ["rbind", "ro"]}));
        }
    }
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": process.uid, "gid": process.gid },
            "args": process.args,
            "env": process.env,
            "cwd": process.cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs" },
        "hostname": hostname(),
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("{CGROUP_PARENT}/{id}"),
            // No "network" namespace: the host's network.
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ProcessConfig {
        ProcessConfig {
            entrypoint: Some(vec!["/bin/app".to_string()]),
            cmd: Some(vec!["serve".to_string()]),
            env: Some(vec!["PATH=/bin".to_string(), "MODE=image".to_string()]),
            working_dir: Some("/srv".to_string()),
            user: Some("1000".to_string()),
        }
    }

    #[test]
    fn the_image_defaults_apply_unless_the_template_replaces_them() {
        let env = [
            ("PORT".to_string(), "8080".to_string()),
            ("MODE".to_string(), "canary".to_string()),
        ];
        let kept = Process::of(&image(), Vec::new(), Vec::new(), &env);
        assert_eq!(kept.args, ["/bin/app", "serve"]);
        assert_eq!(kept.env, ["PATH=/bin", "PORT=8080", "MODE=canary"]);
        assert_eq!(
            (kept.cwd.as_str(), kept.uid, kept.gid),
            ("/srv", 1000, 1000)
        );
        let args = Process::of(&image(), Vec::new(), vec!["check".to_string()], &env);
        assert_eq!(args.args, ["/bin/app", "check"]);
        let command = Process::of(&image(), vec!["/bin/sh".to_string()], Vec::new(), &env);
        assert_eq!(command.args, ["/bin/sh"]);
    }
}

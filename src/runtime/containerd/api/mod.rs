//! The containerd API (gRPC client stubs and messages), generated from the protos vendored in
//! `proto/containerd/` (containerd 1.6.20, see `proto/containerd/SOURCE.md`) by
//! `tools/containerd-api-gen/regen.sh`. Never edit the generated files by hand; only this module
//! tree is written here. It holds no logic.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unreachable_pub,
    dead_code
)]

/// `containerd.types`: descriptors, mounts, metrics.
pub mod types {
    include!("containerd.types.rs");
}

/// `containerd.v1.types`: task status.
pub mod v1 {
    /// `containerd.v1.types`.
    pub mod types {
        include!("containerd.v1.types.rs");
    }
}

/// `containerd.services.*.v1`.
pub mod services {
    macro_rules! service {
        ($name:ident, $file:literal) => {
            #[doc = concat!("`containerd.services.", stringify!($name), ".v1`.")]
            pub mod $name {
                /// Version 1 of the service.
                pub mod v1 {
                    include!($file);
                }
            }
        };
    }
    service!(containers, "containerd.services.containers.v1.rs");
    service!(content, "containerd.services.content.v1.rs");
    service!(diff, "containerd.services.diff.v1.rs");
    service!(images, "containerd.services.images.v1.rs");
    service!(leases, "containerd.services.leases.v1.rs");
    service!(namespaces, "containerd.services.namespaces.v1.rs");
    service!(snapshots, "containerd.services.snapshots.v1.rs");
    service!(tasks, "containerd.services.tasks.v1.rs");
    service!(version, "containerd.services.version.v1.rs");
}

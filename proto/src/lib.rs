//! The `waveguide.v1` gRPC contract between Waveguide's processes.
//!
//! This crate owns the `.proto` files under `proto/waveguide/v1/` and the Rust code generated
//! from them at build time (prost messages, tonic clients and servers). It owns no behaviour:
//! the edge implements the node services, the orchestrator implements [`v1::event_service_server`].
//!
//! | file | service | served by |
//! |---|---|---|
//! | `common.proto` | — (shared types: tracks, streams, nodes, health) | — |
//! | `module.proto` | `ModuleService`: register, health, configure, shutdown | edge |
//! | `entity.proto` | `EntityService`: streams, tracks and sessions | edge |
//! | `pipeline.proto` | `PipelineService`: relay links and delivery flows | edge |
//! | `signaling.proto` | `WebRtcSignaling`: WebRTC offer/answer over a gRPC stream | edge |
//! | `events.proto` | `EventService`: node and stream events, load heartbeats | orchestrator |
//!
//! Changing a `.proto` file changes a contract between separately deployed binaries: add
//! fields and never renumber or reuse them.

/// The generated `waveguide.v1` package.
pub mod v1 {
    // Generated code: its shape follows the .proto files, not our lint preferences.
    #![allow(clippy::all, clippy::pedantic, rust_2018_idioms, missing_docs)]

    tonic::include_proto!("waveguide.v1");

    /// The encoded `FileDescriptorSet` of every `waveguide.v1` file, for gRPC reflection
    /// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("waveguide_v1_descriptor");
}

/// The protobuf package name, as it appears in gRPC paths (`/waveguide.v1.EventService/…`).
pub const PACKAGE: &str = "waveguide.v1";

/// The well-known types used in messages (`Timestamp`, `Duration`).
pub use prost_types;

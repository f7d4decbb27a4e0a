//! gRPC services that every Voca server exposes beside its own API.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionAlpha,
    ServerReflectionServer as ServerReflectionAlphaServer,
};

/// Fully qualified names of the services that every Voca server exposes
/// beside its own API.
const COMMON_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Server reflection in the v1 and v1alpha protocols, so that grpcurl and
/// other tools can list and describe the services. It advertises `api` (the
/// fully qualified names of the server's own services, such as
/// `voca.v1.Gateway`), health checking and reflection itself.
pub fn reflection_services(
    api: &[&str],
) -> (
    ServerReflectionServer<impl ServerReflection>,
    ServerReflectionAlphaServer<impl ServerReflectionAlpha>,
) {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(voca_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in api.iter().chain(&COMMON_SERVICES) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let v1 = builder()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    (v1, v1alpha)
}

/// Trailers of the FAILED_PRECONDITION a pool node answers when its ring,
/// newer than the one a message was routed on, names another owner.
pub mod redirect {
    /// Id of the pool node that owns the vendor.
    pub const OWNER_ID: &str = "voca-owner-id";
    /// Address of that pool node, as host:port.
    pub const OWNER_ADDRESS: &str = "voca-owner-address";
    /// Version of the ring that names the owner.
    pub const RING_VERSION: &str = "voca-ring-version";
}

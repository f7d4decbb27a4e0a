//! gRPC services that every Voca server exposes beside its own API.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionAlpha,
    ServerReflectionServer as ServerReflectionAlphaServer,
};

/// Server reflection for the `voca.v1` API and `grpc.health.v1`, in the v1
/// and v1alpha protocols, so that grpcurl and other tools can list and
/// describe the services.
pub fn reflection_services() -> (
    ServerReflectionServer<impl ServerReflection>,
    ServerReflectionAlphaServer<impl ServerReflectionAlpha>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(voca_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    (v1, v1alpha)
}

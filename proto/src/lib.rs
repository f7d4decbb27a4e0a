//! The `voca.v1` gRPC API: the public gateway service, the pool node's
//! internal service, and the file descriptor set used by server reflection.

pub mod v1 {
    tonic::include_proto!("voca.v1");
}

/// Encoded `FileDescriptorSet` of every `voca.v1` proto file, for
/// `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("voca_descriptor");

//! The vendor API on the gateway's endpoint: every `voca.v1.VendorRegistry`
//! call is passed to the registry named by `--registry`, so that clients
//! use one address for messages and vendors.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use voca_proto::v1::vendor_registry_client::VendorRegistryClient;
use voca_proto::v1::vendor_registry_server::VendorRegistry;
use voca_proto::v1::{
    DeleteVendorRequest, DeleteVendorResponse, GetVendorRequest, ImportVendorsResponse,
    ListVendorsRequest, ListVendorsResponse, RegisterVendorRequest, RegisterVendorResponse,
    UpdateVendorRequest, Vendor,
};

use crate::deadline::grpc_timeout;
use crate::routes::is_unreachable;

/// Largest registry request or response passed on, matching the registry's
/// own limit.
pub const MAX_REGISTRY_MESSAGE_BYTES: usize = 12 * 1024 * 1024;
/// Time allowed to connect to the registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Passes vendor API calls to a registry, or refuses them when the gateway
/// has none.
pub struct RegistryProxy {
    /// `None` when the gateway was started without `--registry`.
    registry: Option<(String, VendorRegistryClient<Channel>)>,
}

impl RegistryProxy {
    /// Creates a proxy to the registry at `address` (host:port). It connects on
    /// first use and again after a lost connection, so the gateway starts
    /// while the registry is down.
    pub fn new(address: &str) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("invalid --registry {address:?}: {e}; use host:port"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = VendorRegistryClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_REGISTRY_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_REGISTRY_MESSAGE_BYTES);
        Ok(Self {
            registry: Some((address.to_owned(), client)),
        })
    }

    /// Creates a proxy that rejects every call with UNIMPLEMENTED.
    pub fn none() -> Self {
        Self { registry: None }
    }

    fn client(&self) -> Result<(&str, VendorRegistryClient<Channel>), Status> {
        match &self.registry {
            Some((address, client)) => Ok((address, client.clone())),
            None => Err(Status::unimplemented(
                "this gateway serves no vendor registry; start it with --registry HOST:PORT, or call voca-registry directly",
            )),
        }
    }
}

/// Builds the request to the registry, carrying the caller's deadline.
fn outbound<T>(request: Request<T>) -> Request<T> {
    let timeout = grpc_timeout(request.metadata());
    let mut outbound = Request::new(request.into_inner());
    if let Some(timeout) = timeout {
        outbound.set_timeout(timeout);
    }
    outbound
}

/// Names the registry in a failure to reach it; any status the registry
/// itself sent passes through.
fn registry_status(address: &str, status: Status) -> Status {
    if is_unreachable(&status) {
        tracing::warn!(registry = %address, error = %status, "registry unavailable");
        return Status::unavailable(format!(
            "the vendor registry at {address} is unavailable: {}; retry shortly",
            status.message()
        ));
    }
    status
}

type ImportStream = Pin<Box<dyn Stream<Item = Result<ImportVendorsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VendorRegistry for RegistryProxy {
    async fn register_vendor(
        &self,
        request: Request<RegisterVendorRequest>,
    ) -> Result<Response<RegisterVendorResponse>, Status> {
        let (address, mut client) = self.client()?;
        client
            .register_vendor(outbound(request))
            .await
            .map_err(|status| registry_status(address, status))
    }

    async fn get_vendor(
        &self,
        request: Request<GetVendorRequest>,
    ) -> Result<Response<Vendor>, Status> {
        let (address, mut client) = self.client()?;
        client
            .get_vendor(outbound(request))
            .await
            .map_err(|status| registry_status(address, status))
    }

    async fn update_vendor(
        &self,
        request: Request<UpdateVendorRequest>,
    ) -> Result<Response<Vendor>, Status> {
        let (address, mut client) = self.client()?;
        client
            .update_vendor(outbound(request))
            .await
            .map_err(|status| registry_status(address, status))
    }

    async fn delete_vendor(
        &self,
        request: Request<DeleteVendorRequest>,
    ) -> Result<Response<DeleteVendorResponse>, Status> {
        let (address, mut client) = self.client()?;
        client
            .delete_vendor(outbound(request))
            .await
            .map_err(|status| registry_status(address, status))
    }

    async fn list_vendors(
        &self,
        request: Request<ListVendorsRequest>,
    ) -> Result<Response<ListVendorsResponse>, Status> {
        let (address, mut client) = self.client()?;
        client
            .list_vendors(outbound(request))
            .await
            .map_err(|status| registry_status(address, status))
    }

    type ImportVendorsStream = ImportStream;

    async fn import_vendors(
        &self,
        request: Request<Streaming<RegisterVendorRequest>>,
    ) -> Result<Response<Self::ImportVendorsStream>, Status> {
        let (address, mut client) = self.client()?;
        let address = address.to_owned();
        // The client's stream ends at its first error; the registry then
        // finishes the registrations it has read.
        let requests = outbound(request).map(|stream| {
            stream
                .take_while(|item| std::future::ready(item.is_ok()))
                .filter_map(|item| std::future::ready(item.ok()))
        });
        let responses = client
            .import_vendors(requests)
            .await
            .map_err(|status| registry_status(&address, status))?
            .into_inner()
            .map(move |item| item.map_err(|status| registry_status(&address, status)));
        Ok(Response::new(Box::pin(responses)))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[tokio::test]
    async fn gateway_without_registry_says_how_to_add_one() {
        let proxy = RegistryProxy::none();
        let status = proxy
            .get_vendor(Request::new(GetVendorRequest {
                vendor_id: "rosies-bakery".to_owned(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(
            status.message().contains("--registry"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn unreachable_registry_is_named() {
        // Port 9 on loopback (discard) is closed on test machines.
        let proxy = RegistryProxy::new("127.0.0.1:9").unwrap();
        let status = proxy
            .get_vendor(Request::new(GetVendorRequest {
                vendor_id: "rosies-bakery".to_owned(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("vendor registry at 127.0.0.1:9"),
            "{}",
            status.message()
        );
        assert!(RegistryProxy::new("not a host").is_err());
    }
}

//! The `voca.v1.VendorRegistry` gRPC service.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use voca_common::input::check_vendor_id;
use voca_proto::v1::vendor_registry_server::VendorRegistry;
use voca_proto::v1::{
    self, DeleteVendorRequest, DeleteVendorResponse, GetVendorRequest, ImportVendorsResponse,
    ListVendorsRequest, ListVendorsResponse, RegisterVendorRequest, RegisterVendorResponse,
    UpdateVendorRequest,
};

use crate::db::{ListVendors, VendorStatus, MAX_PAGE_SIZE};
use crate::error::RegistryError;
use crate::registrar::{PlacedVendor, Registrar};
use crate::request;
use crate::request::checked_business_type;

/// Registrations of one import stream that run at once.
pub const IMPORT_CONCURRENCY: usize = 32;
/// Page size of a ListVendors request that gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Serves the vendor API from a [`Registrar`].
#[derive(Clone)]
pub struct RegistryService {
    registrar: Arc<Registrar>,
}

impl RegistryService {
    pub fn new(registrar: Arc<Registrar>) -> Self {
        Self { registrar }
    }
}

type ImportStream = Pin<Box<dyn Stream<Item = Result<ImportVendorsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VendorRegistry for RegistryService {
    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id))]
    async fn register_vendor(
        &self,
        request: Request<RegisterVendorRequest>,
    ) -> Result<Response<RegisterVendorResponse>, Status> {
        let registration = request::registration(request.into_inner())?;
        let placed = self.registrar.register(registration).await?;
        Ok(Response::new(RegisterVendorResponse {
            vendor: Some(to_proto(placed)),
        }))
    }

    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id))]
    async fn get_vendor(
        &self,
        request: Request<GetVendorRequest>,
    ) -> Result<Response<v1::Vendor>, Status> {
        let vendor_id = request.into_inner().vendor_id;
        check_vendor_id(&vendor_id).map_err(RegistryError::from)?;
        let placed = self.registrar.get(&vendor_id).await?;
        Ok(Response::new(to_proto(placed)))
    }

    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id))]
    async fn update_vendor(
        &self,
        request: Request<UpdateVendorRequest>,
    ) -> Result<Response<v1::Vendor>, Status> {
        let update = request::update(request.into_inner())?;
        let placed = self.registrar.update(update).await?;
        Ok(Response::new(to_proto(placed)))
    }

    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id))]
    async fn delete_vendor(
        &self,
        request: Request<DeleteVendorRequest>,
    ) -> Result<Response<DeleteVendorResponse>, Status> {
        let vendor_id = request.into_inner().vendor_id;
        let erasure = self.registrar.delete(&vendor_id).await?;
        Ok(Response::new(DeleteVendorResponse {
            existed: erasure.existed,
            files_deleted: u32::try_from(erasure.files_deleted).unwrap_or(u32::MAX),
            redis_keys_deleted: u32::try_from(erasure.redis_keys_deleted).unwrap_or(u32::MAX),
        }))
    }

    async fn list_vendors(
        &self,
        request: Request<ListVendorsRequest>,
    ) -> Result<Response<ListVendorsResponse>, Status> {
        let request = request.into_inner();
        let list = list_request(request)?;
        let (vendors, next_page_token) = self.registrar.list(&list).await?;
        Ok(Response::new(ListVendorsResponse {
            vendors: vendors.into_iter().map(to_proto).collect(),
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    type ImportVendorsStream = ImportStream;

    async fn import_vendors(
        &self,
        request: Request<Streaming<RegisterVendorRequest>>,
    ) -> Result<Response<Self::ImportVendorsStream>, Status> {
        let registrar = self.registrar.clone();
        let requests = request.into_inner();
        // A request that cannot be read, such as one over the size limit,
        // ends the import: the registrations read before it finish and get
        // their responses, then the stream ends with the error.
        let broken: Arc<Mutex<Option<Status>>> = Arc::default();
        let broken_in = broken.clone();
        let requests = requests.enumerate().take_while(move |(index, item)| {
            let keep = match item {
                Ok(_) => true,
                Err(status) => {
                    tracing::warn!(index, %status, "import stream broke; finishing the registrations read so far");
                    let error = Status::new(
                        status.code(),
                        format!(
                            "request {index} of the import stream could not be read ({}); the requests before it were handled and none after it was read",
                            status.message()
                        ),
                    );
                    *broken_in.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    false
                }
            };
            std::future::ready(keep)
        });
        let responses = requests
            .map(move |(index, item)| {
                let registrar = registrar.clone();
                async move {
                    let request = item.expect("errors end the stream above");
                    let requested_id = request.vendor_id.clone();
                    let index = u64::try_from(index).unwrap_or(u64::MAX);
                    let result = async {
                        let registration = request::registration(request)?;
                        registrar.register(registration).await
                    }
                    .await;
                    Ok(match result {
                        Ok(placed) => ImportVendorsResponse {
                            index,
                            pool_id: placed.pool.map(|(id, _)| id).unwrap_or_default(),
                            vendor_id: placed.vendor.id,
                            code: Code::Ok as i32,
                            message: String::new(),
                        },
                        Err(error) => {
                            let status = Status::from(error);
                            ImportVendorsResponse {
                                index,
                                vendor_id: requested_id,
                                pool_id: String::new(),
                                code: status.code() as i32,
                                message: status.message().to_owned(),
                            }
                        }
                    })
                }
            })
            .buffer_unordered(IMPORT_CONCURRENCY)
            .chain(
                futures::stream::once(async move {
                    broken.lock().unwrap_or_else(PoisonError::into_inner).take()
                })
                .filter_map(|error| std::future::ready(error.map(Err))),
            );
        Ok(Response::new(Box::pin(responses)))
    }
}

fn list_request(request: ListVendorsRequest) -> Result<ListVendors, RegistryError> {
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size > MAX_PAGE_SIZE => {
            return Err(RegistryError::invalid(
                "page_size",
                &size.to_string(),
                format!("use 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"),
            ))
        }
        size => size,
    };
    let status = match v1::VendorStatus::try_from(request.status) {
        Ok(v1::VendorStatus::Unspecified) => None,
        Ok(status) => Some(from_proto_status(status)),
        Err(_) => {
            return Err(RegistryError::invalid(
                "status",
                &request.status.to_string(),
                "use a VendorStatus value, or leave it unspecified to list every status",
            ))
        }
    };
    let business_type = if request.business_type.is_empty() {
        None
    } else {
        Some(checked_business_type(
            "business_type",
            &request.business_type,
        )?)
    };
    let page_token = if request.page_token.is_empty() {
        None
    } else {
        // Tokens are vendor ids, so a token that is not one did not come
        // from this service.
        check_vendor_id(&request.page_token).map_err(|_| {
            RegistryError::invalid(
                "page_token",
                &request.page_token,
                "pass the next_page_token of the previous page unchanged",
            )
        })?;
        Some(request.page_token)
    };
    Ok(ListVendors {
        status,
        business_type,
        page_size,
        page_token,
    })
}

fn from_proto_status(status: v1::VendorStatus) -> VendorStatus {
    match status {
        v1::VendorStatus::Pending => VendorStatus::Pending,
        v1::VendorStatus::Suspended => VendorStatus::Suspended,
        v1::VendorStatus::Deleted => VendorStatus::Deleted,
        v1::VendorStatus::Active | v1::VendorStatus::Unspecified => VendorStatus::Active,
    }
}

fn to_proto_status(status: VendorStatus) -> v1::VendorStatus {
    match status {
        VendorStatus::Pending => v1::VendorStatus::Pending,
        VendorStatus::Active => v1::VendorStatus::Active,
        VendorStatus::Suspended => v1::VendorStatus::Suspended,
        VendorStatus::Deleted => v1::VendorStatus::Deleted,
    }
}

fn timestamp(time: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.unix_timestamp(),
        nanos: i32::try_from(time.nanosecond()).unwrap_or(0),
    }
}

fn to_proto(placed: PlacedVendor) -> v1::Vendor {
    let PlacedVendor { vendor, pool } = placed;
    let (pool_id, pool_address) = pool.unwrap_or_default();
    v1::Vendor {
        vendor_id: vendor.id,
        name: vendor.name,
        business_type: vendor.business_type,
        status: to_proto_status(vendor.status) as i32,
        character_version: vendor.character_version,
        created_at: Some(timestamp(vendor.created_at)),
        updated_at: Some(timestamp(vendor.updated_at)),
        pool_id,
        pool_address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_requests_are_checked() {
        let list = list_request(ListVendorsRequest::default()).unwrap();
        assert_eq!(list.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(list.status, None);

        let list = list_request(ListVendorsRequest {
            page_size: 7,
            status: v1::VendorStatus::Suspended as i32,
            business_type: "retail".to_owned(),
            page_token: "rosies-bakery".to_owned(),
        })
        .unwrap();
        assert_eq!(list.status, Some(VendorStatus::Suspended));
        assert_eq!(list.business_type.as_deref(), Some("retail"));
        assert_eq!(list.page_token.as_deref(), Some("rosies-bakery"));

        let bad = [
            ListVendorsRequest {
                page_size: MAX_PAGE_SIZE + 1,
                ..Default::default()
            },
            ListVendorsRequest {
                status: 99,
                ..Default::default()
            },
            ListVendorsRequest {
                business_type: "Retail".to_owned(),
                ..Default::default()
            },
            ListVendorsRequest {
                page_token: "../x".to_owned(),
                ..Default::default()
            },
        ];
        for request in bad {
            let shown = format!("{request:?}");
            assert!(
                matches!(list_request(request), Err(RegistryError::Invalid { .. })),
                "{shown}"
            );
        }
    }

    #[test]
    fn statuses_map_both_ways() {
        for status in [
            VendorStatus::Pending,
            VendorStatus::Active,
            VendorStatus::Suspended,
            VendorStatus::Deleted,
        ] {
            assert_eq!(from_proto_status(to_proto_status(status)), status);
        }
    }
}

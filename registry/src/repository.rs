//! The registry's view of vendor metadata storage, so that PostgreSQL and
//! the quickstart's embedded store sit behind one interface.

use async_trait::async_trait;

use crate::db::{
    Database, DbError, ListVendors, NewVendor, SqliteDatabase, Vendor, VendorPage, VendorStatus,
    VendorUpdate,
};

/// Storage of the registry's vendor metadata.
#[async_trait]
pub trait VendorRepository: Send + Sync + 'static {
    /// Inserts a vendor; [`DbError::AlreadyExists`] when the id is taken.
    async fn insert_vendor(&self, vendor: &NewVendor) -> Result<Vendor, DbError>;

    /// Returns a vendor, or [`DbError::NotFound`].
    async fn get_vendor(&self, id: &str) -> Result<Vendor, DbError>;

    /// Applies `update`, raises the version by 1 and returns the new version.
    async fn update_vendor(&self, id: &str, update: &VendorUpdate) -> Result<i64, DbError>;

    /// Makes a pending vendor active; [`DbError::NotFound`] when it is not
    /// pending.
    async fn activate_vendor(&self, id: &str) -> Result<Vendor, DbError>;

    /// Sets a vendor's status without raising its version.
    async fn set_vendor_status(&self, id: &str, status: VendorStatus) -> Result<Vendor, DbError>;

    /// Deletes a vendor; returns whether there was one.
    async fn delete_vendor(&self, id: &str) -> Result<bool, DbError>;

    /// Deletes a vendor only while it has `status`; returns whether it did.
    async fn delete_vendor_in_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<bool, DbError>;

    /// Returns one page of vendors in id order.
    async fn list_vendors(&self, request: &ListVendors) -> Result<VendorPage, DbError>;

    /// Names the storage for logs, such as `PostgreSQL at 10.0.0.5:5432`.
    fn describe(&self) -> String;
}

#[async_trait]
impl VendorRepository for Database {
    async fn insert_vendor(&self, vendor: &NewVendor) -> Result<Vendor, DbError> {
        Database::insert_vendor(self, vendor).await
    }

    async fn get_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        Database::get_vendor(self, id).await
    }

    async fn update_vendor(&self, id: &str, update: &VendorUpdate) -> Result<i64, DbError> {
        Database::update_vendor(self, id, update).await
    }

    async fn activate_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        Database::activate_vendor(self, id).await
    }

    async fn set_vendor_status(&self, id: &str, status: VendorStatus) -> Result<Vendor, DbError> {
        Database::set_vendor_status(self, id, status).await
    }

    async fn delete_vendor(&self, id: &str) -> Result<bool, DbError> {
        Database::delete_vendor(self, id).await
    }

    async fn delete_vendor_in_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<bool, DbError> {
        Database::delete_vendor_in_status(self, id, status).await
    }

    async fn list_vendors(&self, request: &ListVendors) -> Result<VendorPage, DbError> {
        Database::list_vendors(self, request).await
    }

    fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.address())
    }
}

#[async_trait]
impl VendorRepository for SqliteDatabase {
    async fn insert_vendor(&self, vendor: &NewVendor) -> Result<Vendor, DbError> {
        SqliteDatabase::insert_vendor(self, vendor).await
    }

    async fn get_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        SqliteDatabase::get_vendor(self, id).await
    }

    async fn update_vendor(&self, id: &str, update: &VendorUpdate) -> Result<i64, DbError> {
        SqliteDatabase::update_vendor(self, id, update).await
    }

    async fn activate_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        SqliteDatabase::activate_vendor(self, id).await
    }

    async fn set_vendor_status(&self, id: &str, status: VendorStatus) -> Result<Vendor, DbError> {
        SqliteDatabase::set_vendor_status(self, id, status).await
    }

    async fn delete_vendor(&self, id: &str) -> Result<bool, DbError> {
        SqliteDatabase::delete_vendor(self, id).await
    }

    async fn delete_vendor_in_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<bool, DbError> {
        SqliteDatabase::delete_vendor_in_status(self, id, status).await
    }

    async fn list_vendors(&self, request: &ListVendors) -> Result<VendorPage, DbError> {
        SqliteDatabase::list_vendors(self, request).await
    }

    fn describe(&self) -> String {
        format!("SQLite at {}", self.location())
    }
}

//! The vendor repository.

use std::fmt;
use std::str::FromStr;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use voca_common::input::check_vendor_id;

use super::error::is_unique_violation;
use super::schema::vendors;
use super::{Database, DbError};

/// Maximum vendors in one page of [`Database::list_vendors`].
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Lifecycle state of a vendor, stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VendorStatus {
    /// Its registration is in progress: the id is claimed, the files may
    /// not be written yet.
    Pending,
    Active,
    Suspended,
    Deleted,
}

impl VendorStatus {
    /// Returns the value stored in `vendors.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for VendorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VendorStatus {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            other => Err(format!(
                "unknown vendor status {other:?}; expected pending, active, suspended or deleted"
            )),
        }
    }
}

/// A stored vendor. Its pool node is not stored: it is computed from the
/// ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub business_type: String,
    pub status: VendorStatus,
    /// Key of the vendor's `character.json` in the character store.
    pub character_path: String,
    /// Starts at 1 and rises by 1 with each update.
    pub character_version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A row of `vendors` as stored, before its status is parsed.
#[derive(Queryable, Selectable)]
#[diesel(table_name = vendors, check_for_backend(diesel::pg::Pg))]
struct VendorRow {
    id: String,
    name: String,
    business_type: String,
    status: String,
    character_path: String,
    character_version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<VendorRow> for Vendor {
    type Error = DbError;

    fn try_from(row: VendorRow) -> Result<Self, DbError> {
        let status = row.status.parse().map_err(|reason: String| {
            DbError::other(format!("reading vendor {}", row.id), reason)
        })?;
        Ok(Self {
            id: row.id,
            name: row.name,
            business_type: row.business_type,
            status,
            character_path: row.character_path,
            character_version: row.character_version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A vendor to insert. Its version starts at 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVendor {
    pub id: String,
    pub name: String,
    pub business_type: String,
    pub status: VendorStatus,
    pub character_path: String,
}

/// Changes to a vendor. Fields left `None` keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorUpdate {
    pub name: Option<String>,
    pub business_type: Option<String>,
    pub status: Option<VendorStatus>,
    pub character_path: Option<String>,
}

#[derive(AsChangeset)]
#[diesel(table_name = vendors)]
struct VendorChangeset<'a> {
    name: Option<&'a str>,
    business_type: Option<&'a str>,
    status: Option<&'static str>,
    character_path: Option<&'a str>,
}

/// Filter and position of one page of [`Database::list_vendors`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListVendors {
    pub status: Option<VendorStatus>,
    pub business_type: Option<String>,
    /// 1 to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// The `next_page_token` of the previous page, or `None` for the first.
    pub page_token: Option<String>,
}

/// One page of vendors in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPage {
    pub vendors: Vec<Vendor>,
    /// Token of the next page, or `None` after the last page.
    pub next_page_token: Option<String>,
}

impl Database {
    /// Inserts a vendor and returns it as stored. Fails with
    /// [`DbError::AlreadyExists`] when the id is taken.
    pub async fn insert_vendor(&self, vendor: &NewVendor) -> Result<Vendor, DbError> {
        check_vendor_id(&vendor.id)?;
        let mut connection = self.connection().await?;
        let row = diesel::insert_into(vendors::table)
            .values((
                vendors::id.eq(&vendor.id),
                vendors::name.eq(&vendor.name),
                vendors::business_type.eq(&vendor.business_type),
                vendors::status.eq(vendor.status.as_str()),
                vendors::character_path.eq(&vendor.character_path),
            ))
            .returning(VendorRow::as_returning())
            .get_result(&mut connection)
            .await
            .map_err(|error| {
                if is_unique_violation(&error) {
                    DbError::AlreadyExists {
                        entity: "vendor",
                        key: vendor.id.clone(),
                    }
                } else {
                    self.query_error(error, format!("inserting vendor {}", vendor.id))
                }
            })?;
        row.try_into()
    }

    /// Returns the vendor with this id, or [`DbError::NotFound`].
    pub async fn get_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let mut connection = self.connection().await?;
        let row = vendors::table
            .find(id)
            .select(VendorRow::as_select())
            .first(&mut connection)
            .await
            .optional()
            .map_err(|error| self.query_error(error, format!("reading vendor {id}")))?;
        row.ok_or_else(|| vendor_not_found(id))?.try_into()
    }

    /// Makes a pending vendor active without raising its version. Fails with
    /// [`DbError::NotFound`] when the vendor is not pending, such as one a
    /// delete marked while its registration ran.
    pub async fn activate_vendor(&self, id: &str) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let mut connection = self.connection().await?;
        diesel::update(
            vendors::table
                .find(id)
                .filter(vendors::status.eq(VendorStatus::Pending.as_str())),
        )
        .set((
            vendors::status.eq(VendorStatus::Active.as_str()),
            vendors::updated_at.eq(diesel::dsl::now),
        ))
        .returning(VendorRow::as_returning())
        .get_result(&mut connection)
        .await
        .optional()
        .map_err(|error| self.query_error(error, format!("activating vendor {id}")))?
        .ok_or_else(|| vendor_not_found(id))?
        .try_into()
    }

    /// Applies `update` to an active or suspended vendor, raises the
    /// character version by 1, sets `updated_at` and returns the new
    /// version. The version rises even when `update` changes no field, so
    /// that callers can announce a change of the vendor's files. A pending
    /// or deleted vendor is [`DbError::NotFound`].
    pub async fn update_vendor(&self, id: &str, update: &VendorUpdate) -> Result<i64, DbError> {
        check_vendor_id(id)?;
        let changeset = VendorChangeset {
            name: update.name.as_deref(),
            business_type: update.business_type.as_deref(),
            status: update.status.map(VendorStatus::as_str),
            character_path: update.character_path.as_deref(),
        };
        let mut connection = self.connection().await?;
        diesel::update(
            vendors::table
                .find(id)
                .filter(vendors::status.eq_any(["active", "suspended"])),
        )
        .set((
            changeset,
            vendors::character_version.eq(vendors::character_version + 1),
            vendors::updated_at.eq(diesel::dsl::now),
        ))
        .returning(vendors::character_version)
        .get_result(&mut connection)
        .await
        .optional()
        .map_err(|error| self.query_error(error, format!("updating vendor {id}")))?
        .ok_or_else(|| vendor_not_found(id))
    }

    /// Sets a vendor's status without raising its version, and returns the
    /// vendor as stored.
    pub async fn set_vendor_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<Vendor, DbError> {
        check_vendor_id(id)?;
        let mut connection = self.connection().await?;
        diesel::update(vendors::table.find(id))
            .set((
                vendors::status.eq(status.as_str()),
                vendors::updated_at.eq(diesel::dsl::now),
            ))
            .returning(VendorRow::as_returning())
            .get_result(&mut connection)
            .await
            .optional()
            .map_err(|error| self.query_error(error, format!("setting the status of vendor {id}")))?
            .ok_or_else(|| vendor_not_found(id))?
            .try_into()
    }

    /// Deletes a vendor only while its status is `status`, and returns
    /// whether it did. A failed registration removes its own pending row
    /// this way and never a row that another call made active.
    pub async fn delete_vendor_in_status(
        &self,
        id: &str,
        status: VendorStatus,
    ) -> Result<bool, DbError> {
        check_vendor_id(id)?;
        let mut connection = self.connection().await?;
        let deleted = diesel::delete(
            vendors::table
                .find(id)
                .filter(vendors::status.eq(status.as_str())),
        )
        .execute(&mut connection)
        .await
        .map_err(|error| self.query_error(error, format!("deleting vendor {id}")))?;
        Ok(deleted > 0)
    }

    /// Deletes a vendor and, by cascade, its message routes. Returns whether
    /// a row was deleted, so deleting a missing vendor succeeds.
    pub async fn delete_vendor(&self, id: &str) -> Result<bool, DbError> {
        check_vendor_id(id)?;
        let mut connection = self.connection().await?;
        let deleted = diesel::delete(vendors::table.find(id))
            .execute(&mut connection)
            .await
            .map_err(|error| self.query_error(error, format!("deleting vendor {id}")))?;
        Ok(deleted > 0)
    }

    /// Returns one page of vendors in id order (byte order), filtered by
    /// status and business type when those are set.
    pub async fn list_vendors(&self, request: &ListVendors) -> Result<VendorPage, DbError> {
        check_page_size(request.page_size)?;
        let mut query = vendors::table
            .select(VendorRow::as_select())
            .order(vendors::id.asc())
            // The row after the page shows whether another page follows.
            .limit(i64::from(request.page_size) + 1)
            .into_boxed();
        if let Some(status) = request.status {
            query = query.filter(vendors::status.eq(status.as_str()));
        }
        if let Some(business_type) = &request.business_type {
            query = query.filter(vendors::business_type.eq(business_type.clone()));
        }
        if let Some(token) = &request.page_token {
            query = query.filter(vendors::id.gt(token.clone()));
        }

        let mut connection = self.connection().await?;
        let mut rows: Vec<VendorRow> = query
            .load(&mut connection)
            .await
            .map_err(|error| self.query_error(error, "listing vendors"))?;
        let page_size = request.page_size as usize;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last().map(|row| row.id.clone())
        } else {
            None
        };
        let vendors = rows
            .into_iter()
            .map(Vendor::try_from)
            .collect::<Result<_, _>>()?;
        Ok(VendorPage {
            vendors,
            next_page_token,
        })
    }
}

/// Fails with [`DbError::InvalidInput`] unless `page_size` is 1 to
/// [`MAX_PAGE_SIZE`].
pub(super) fn check_page_size(page_size: u32) -> Result<(), DbError> {
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(DbError::InvalidInput(voca_common::input::InvalidInput {
            field: "page_size",
            value: page_size.to_string(),
            reason: format!("use 1 to {MAX_PAGE_SIZE}"),
        }));
    }
    Ok(())
}

pub(super) fn vendor_not_found(id: &str) -> DbError {
    DbError::NotFound {
        entity: "vendor",
        key: id.to_owned(),
    }
}

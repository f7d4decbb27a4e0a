//! Message routes: the platform addresses (such as a WhatsApp number) whose
//! messages go to a vendor. A route stores no pool node.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use voca_common::input::check_vendor_id;

use super::error::{is_foreign_key_violation, is_unique_violation};
use super::schema::message_routes;
use super::vendors::vendor_not_found;
use super::{Database, DbError};

/// A stored message route.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = message_routes, check_for_backend(diesel::pg::Pg))]
pub struct MessageRoute {
    pub id: i64,
    pub vendor_id: String,
    /// Messaging platform, such as `whatsapp`.
    pub platform: String,
    /// The vendor's address on the platform, unique per platform.
    pub platform_address: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: OffsetDateTime,
}

/// A message route to insert, with status `active`.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = message_routes)]
pub struct NewMessageRoute {
    pub vendor_id: String,
    pub platform: String,
    pub platform_address: String,
}

impl Database {
    /// Inserts a message route and returns it as stored. Fails with
    /// [`DbError::NotFound`] when the vendor does not exist and with
    /// [`DbError::AlreadyExists`] when the platform address is taken.
    pub async fn insert_message_route(
        &self,
        route: &NewMessageRoute,
    ) -> Result<MessageRoute, DbError> {
        check_vendor_id(&route.vendor_id)?;
        let mut connection = self.connection().await?;
        diesel::insert_into(message_routes::table)
            .values(route)
            .returning(MessageRoute::as_returning())
            .get_result(&mut connection)
            .await
            .map_err(|error| {
                if is_unique_violation(&error) {
                    DbError::AlreadyExists {
                        entity: "message route",
                        key: format!("{} {}", route.platform, route.platform_address),
                    }
                } else if is_foreign_key_violation(&error) {
                    vendor_not_found(&route.vendor_id)
                } else {
                    let context = format!("inserting a message route of {}", route.vendor_id);
                    self.query_error(error, context)
                }
            })
    }

    /// Returns a vendor's message routes in insertion order. A vendor with
    /// no routes, or no row, has an empty list.
    pub async fn list_message_routes(&self, vendor_id: &str) -> Result<Vec<MessageRoute>, DbError> {
        check_vendor_id(vendor_id)?;
        let mut connection = self.connection().await?;
        message_routes::table
            .filter(message_routes::vendor_id.eq(vendor_id))
            .order(message_routes::id.asc())
            .select(MessageRoute::as_select())
            .load(&mut connection)
            .await
            .map_err(|error| {
                self.query_error(error, format!("listing message routes of {vendor_id}"))
            })
    }
}

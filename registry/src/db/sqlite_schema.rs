//! Diesel table definitions matching `registry/migrations-sqlite`.

diesel::table! {
    use diesel::sql_types::{BigInt, Text, TimestamptzSqlite};

    vendors (id) {
        id -> Text,
        name -> Text,
        business_type -> Text,
        status -> Text,
        character_path -> Text,
        character_version -> BigInt,
        created_at -> TimestamptzSqlite,
        updated_at -> TimestamptzSqlite,
    }
}

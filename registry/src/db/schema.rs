//! Diesel table definitions matching `registry/migrations`.

diesel::table! {
    vendors (id) {
        id -> Text,
        name -> Text,
        business_type -> Text,
        status -> Text,
        character_path -> Text,
        character_version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    agent_pools (id) {
        id -> Text,
        name -> Text,
        status -> Text,
        vendor_count -> Int8,
        memory_usage -> Int8,
        cpu_usage -> Float8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    pool_metrics (id) {
        id -> Int8,
        pool_id -> Text,
        message_count -> Int8,
        response_time_ms -> Float8,
        error_rate -> Float8,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    message_routes (id) {
        id -> Int8,
        vendor_id -> Text,
        platform -> Text,
        platform_address -> Text,
        status -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(message_routes -> vendors (vendor_id));
diesel::allow_tables_to_appear_in_same_query!(vendors, agent_pools, pool_metrics, message_routes);

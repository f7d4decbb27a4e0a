-- Vendor metadata of the registry service. No table stores which pool node
-- serves a vendor: every gateway and pool node computes it from the ring.

CREATE TABLE vendors (
    -- Vendor id rules of voca-common: 1 to 128 ASCII letters, digits, '.',
    -- '_' or '-', not starting with '.'. The "C" collation orders ids by
    -- byte, so pages by id do not depend on the server's locale.
    id TEXT COLLATE "C" PRIMARY KEY
        CHECK (id ~ '^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$'),
    name TEXT NOT NULL,
    business_type TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'suspended', 'deleted')),
    -- Key of the vendor's character.json in the character store.
    character_path TEXT NOT NULL,
    character_version BIGINT NOT NULL DEFAULT 1 CHECK (character_version >= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Listing pages by id within a status, a business type, or both. The primary
-- key serves unfiltered pages.
CREATE INDEX vendors_status_id ON vendors (status, id);
CREATE INDEX vendors_business_type_id ON vendors (business_type, id);
CREATE INDEX vendors_status_business_type_id ON vendors (status, business_type, id);

CREATE TABLE agent_pools (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'draining', 'offline')),
    vendor_count BIGINT NOT NULL DEFAULT 0 CHECK (vendor_count >= 0),
    -- Resident memory in bytes.
    memory_usage BIGINT NOT NULL DEFAULT 0 CHECK (memory_usage >= 0),
    -- Fraction of one core, 0.0 to the core count.
    cpu_usage DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cpu_usage >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE pool_metrics (
    id BIGSERIAL PRIMARY KEY,
    pool_id TEXT NOT NULL,
    message_count BIGINT NOT NULL CHECK (message_count >= 0),
    response_time_ms DOUBLE PRECISION NOT NULL CHECK (response_time_ms >= 0),
    -- Fraction of failed messages, 0.0 to 1.0.
    error_rate DOUBLE PRECISION NOT NULL CHECK (error_rate >= 0 AND error_rate <= 1),
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX pool_metrics_pool_id_recorded_at ON pool_metrics (pool_id, recorded_at);

CREATE TABLE message_routes (
    id BIGSERIAL PRIMARY KEY,
    vendor_id TEXT COLLATE "C" NOT NULL REFERENCES vendors (id) ON DELETE CASCADE,
    -- Messaging platform, such as 'whatsapp'.
    platform TEXT NOT NULL CHECK (platform <> ''),
    -- The vendor's address on that platform, such as a WhatsApp number.
    platform_address TEXT NOT NULL CHECK (platform_address <> ''),
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'disabled')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (platform, platform_address)
);

CREATE INDEX message_routes_vendor_id ON message_routes (vendor_id, id);

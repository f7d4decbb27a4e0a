-- Vendor metadata of the registry's embedded SQLite store, with the columns
-- and rules of the PostgreSQL `vendors` table in registry/migrations. The
-- tables agent_pools, pool_metrics and message_routes exist only in
-- PostgreSQL, so this store has none of them.
--
-- STRICT makes SQLite reject values of the wrong type instead of converting
-- them. Timestamps are TEXT such as '2026-12-04 10:00:00.123456+00:00', the
-- format that diesel reads and writes for TimestamptzSqlite.

CREATE TABLE vendors (
    -- Vendor id rules of voca-common: 1 to 128 ASCII letters, digits, '.',
    -- '_' or '-', not starting with '.'. The default BINARY collation orders
    -- ids by byte, as the "C" collation does in PostgreSQL.
    id TEXT NOT NULL PRIMARY KEY
        CHECK (
            length(id) BETWEEN 1 AND 128
            AND id NOT GLOB '*[^A-Za-z0-9._-]*'
            AND id NOT GLOB '.*'
        ),
    name TEXT NOT NULL,
    business_type TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('pending', 'active', 'suspended', 'deleted')),
    -- Key of the vendor's character.json in the character store.
    character_path TEXT NOT NULL,
    character_version INTEGER NOT NULL DEFAULT 1 CHECK (character_version >= 1),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
) STRICT, WITHOUT ROWID;

-- Listing pages by id within a status, a business type, or both. The primary
-- key serves unfiltered pages.
CREATE INDEX vendors_status_id ON vendors (status, id);
CREATE INDEX vendors_business_type_id ON vendors (business_type, id);
CREATE INDEX vendors_status_business_type_id ON vendors (status, business_type, id);

DELETE FROM vendors WHERE status = 'pending';
ALTER TABLE vendors DROP CONSTRAINT vendors_status_check;
ALTER TABLE vendors ADD CONSTRAINT vendors_status_check
    CHECK (status IN ('active', 'suspended', 'deleted'));

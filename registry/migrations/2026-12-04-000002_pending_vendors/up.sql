-- A registration first claims the vendor id with a 'pending' row, writes the
-- vendor's files, and then makes the row 'active'. A second registration of
-- the same id fails on the primary key while the first is still running.
ALTER TABLE vendors DROP CONSTRAINT vendors_status_check;
ALTER TABLE vendors ADD CONSTRAINT vendors_status_check
    CHECK (status IN ('pending', 'active', 'suspended', 'deleted'));

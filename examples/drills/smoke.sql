-- Smoke queries for restore drills: each "-- expect:" line is followed by one query whose
-- single value (first column of the first row, compared as text) must equal it. NULL is "NULL".

-- name: the schema is at the migration the application expects
-- expect: 0042_add_payments
SELECT version_num FROM alembic_version

-- name: no order line has a non-positive quantity
-- expect: 0
SELECT count(*) FROM order_items WHERE quantity <= 0

-- name: every payment belongs to an order
-- expect: 0
SELECT count(*) FROM payments p LEFT JOIN orders o ON o.id = p.order_id WHERE o.id IS NULL

-- name: every tenant has at least one location
-- expect: 0
SELECT count(*) FROM tenants t WHERE NOT EXISTS (SELECT 1 FROM locations l WHERE l.tenant_id = t.id)

-- One PostgreSQL server, one database per service that keeps state in PostgreSQL
-- (metering keeps its events in ClickHouse). Runs once, on an empty data volume.
CREATE DATABASE bxb_catalog;
CREATE DATABASE bxb_invoicing;
CREATE DATABASE bxb_payments;

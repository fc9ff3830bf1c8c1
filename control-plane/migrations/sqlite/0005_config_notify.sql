-- Schema version 5 announces config changes to the other control planes of a
-- PostgreSQL database (migrations/postgres/0005_config_notify.sql). One control plane
-- uses a SQLite file: nothing to announce, and the version stays in step.
SELECT 1;

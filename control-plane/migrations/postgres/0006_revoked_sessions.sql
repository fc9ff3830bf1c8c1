-- Schema version 6: session JWTs (dashboard cookies, CLI logins) signed out before
-- they expired. A JWT is valid on its own until `exp`; signing out records the
-- SHA-256 of its text here, and every control plane on this database refuses it from
-- then on. Rows are useless once the JWT expires and are deleted after that.
CREATE TABLE revoked_sessions (
    sha256     TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_by_expiry ON revoked_sessions(expires_at);

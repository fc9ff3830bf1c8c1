-- Gatehouse control plane schema, version 1.
-- Times are unix seconds. Ids are random text. Written in SQL that PostgreSQL also
-- accepts (BLOB -> BYTEA aside) so a second backend needs its own migration files only.

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    email             TEXT NOT NULL,
    admin             INTEGER NOT NULL DEFAULT 0,
    credential_sha256 TEXT NOT NULL,
    created_at        INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    owner_id   TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE workspace_tokens (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX workspace_tokens_by_workspace ON workspace_tokens(workspace_id);

CREATE TABLE servers (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    slug         TEXT NOT NULL,
    url          TEXT NOT NULL,
    transport    TEXT NOT NULL,
    headers      TEXT NOT NULL,
    policy       TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, slug)
);

-- Secret values are AES-256-GCM sealed with the master key: nonce || ciphertext.
CREATE TABLE secrets (
    server_id  TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, name)
);

-- Kept after a workspace is deleted: the audit trail outlives what it describes.
CREATE TABLE audit_events (
    id        TEXT PRIMARY KEY,
    time      INTEGER NOT NULL,
    workspace TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL
);
CREATE INDEX audit_events_by_workspace ON audit_events(workspace, time);

-- Sealed settings: session keys, the JWT signing key.
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);

-- Bumped by every change that alters what proxies serve.
CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 1);

-- Gatehouse control plane schema, version 1, for PostgreSQL: the SQLite schema
-- (migrations/sqlite/) with BYTEA for BLOB, BIGINT for INTEGER (times pass 2^31 in
-- 2038), and text compared byte by byte (COLLATE "C") so it sorts and compares as
-- on SQLite, whatever the database's locale. Times are unix seconds.

CREATE TABLE users (
    id                TEXT COLLATE "C" PRIMARY KEY,
    username          TEXT COLLATE "C" NOT NULL UNIQUE,
    email             TEXT COLLATE "C" NOT NULL,
    admin             BIGINT NOT NULL DEFAULT 0,
    credential_sha256 TEXT COLLATE "C" NOT NULL,
    created_at        BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT COLLATE "C" PRIMARY KEY,
    slug       TEXT COLLATE "C" NOT NULL UNIQUE,
    name       TEXT COLLATE "C" NOT NULL,
    owner_id   TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE workspace_tokens (
    id           TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    sha256       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX workspace_tokens_by_workspace ON workspace_tokens(workspace_id);

CREATE TABLE servers (
    id           TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    slug         TEXT COLLATE "C" NOT NULL,
    url          TEXT COLLATE "C" NOT NULL,
    transport    TEXT COLLATE "C" NOT NULL,
    headers      TEXT COLLATE "C" NOT NULL,
    policy       TEXT COLLATE "C" NOT NULL,
    enabled      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, slug)
);

-- Secret values are AES-256-GCM sealed with the master key: nonce || ciphertext.
CREATE TABLE secrets (
    server_id  TEXT COLLATE "C" NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    sealed     BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (server_id, name)
);

-- Kept after a workspace is deleted: the audit trail outlives what it describes.
CREATE TABLE audit_events (
    id        TEXT COLLATE "C" PRIMARY KEY,
    time      BIGINT NOT NULL,
    workspace TEXT COLLATE "C" NOT NULL,
    actor     TEXT COLLATE "C" NOT NULL,
    action    TEXT COLLATE "C" NOT NULL,
    target    TEXT COLLATE "C" NOT NULL,
    outcome   TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_events_by_workspace ON audit_events(workspace, time);

-- Sealed settings: session keys, the JWT signing key.
CREATE TABLE settings (
    name   TEXT COLLATE "C" PRIMARY KEY,
    sealed BYTEA NOT NULL
);

-- Bumped by every change that alters what proxies serve.
CREATE TABLE config_version (
    id      BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 1);

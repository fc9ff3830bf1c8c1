-- Skills registry, teams and the Hub (schema version 2).

-- A user's team: the people they invited. A row is an invitation until accepted.
CREATE TABLE team_members (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    member_id   TEXT REFERENCES users(id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    code_sha256 TEXT NOT NULL UNIQUE,
    invited_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    joined_at   INTEGER,
    UNIQUE (owner_id, email)
);

-- A package is @owner/name. `high_water` is the highest version ever published, so a
-- version number is never reused, even after unpublishing.
CREATE TABLE packages (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    visibility  TEXT NOT NULL,
    description TEXT NOT NULL,
    category    TEXT NOT NULL,
    tags        TEXT NOT NULL,
    high_water  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE package_versions (
    package_id   TEXT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (package_id, version)
);

-- Where an installed server came from ("@owner/name@version"), who installed it, and
-- a skill's tools (JSON) when transport = 'skill'.
ALTER TABLE servers ADD COLUMN package TEXT;
ALTER TABLE servers ADD COLUMN installed_by TEXT;
ALTER TABLE servers ADD COLUMN tools TEXT;

-- Skills registry, teams and the Hub (schema version 2).

-- A user's team: the people they invited. A row is an invitation until accepted.
CREATE TABLE team_members (
    id          TEXT COLLATE "C" PRIMARY KEY,
    owner_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    email       TEXT COLLATE "C" NOT NULL,
    member_id   TEXT COLLATE "C" REFERENCES users(id) ON DELETE CASCADE,
    status      TEXT COLLATE "C" NOT NULL,
    code_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    invited_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    joined_at   BIGINT,
    UNIQUE (owner_id, email)
);

-- A package is @owner/name. `high_water` is the highest version ever published, so a
-- version number is never reused, even after unpublishing.
CREATE TABLE packages (
    id          TEXT COLLATE "C" PRIMARY KEY,
    owner_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    name        TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    visibility  TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    category    TEXT COLLATE "C" NOT NULL,
    tags        TEXT COLLATE "C" NOT NULL,
    high_water  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE package_versions (
    package_id   TEXT COLLATE "C" NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    version      TEXT COLLATE "C" NOT NULL,
    manifest     TEXT COLLATE "C" NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (package_id, version)
);

-- Where an installed server came from ("@owner/name@version"), who installed it, and
-- a skill's tools (JSON) when transport = 'skill'.
ALTER TABLE servers ADD COLUMN package TEXT COLLATE "C";
ALTER TABLE servers ADD COLUMN installed_by TEXT COLLATE "C";
ALTER TABLE servers ADD COLUMN tools TEXT COLLATE "C";

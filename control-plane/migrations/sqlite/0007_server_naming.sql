-- Schema version 7: how a server's names reach clients. `prefixed` (the default)
-- exposes <server>__<tool>; `bare` exposes its tool, prompt and resource names as the
-- server gives them, for clients that must see the upstream's own names. At most one
-- server of a workspace is bare (the names of two could collide with nothing to tell
-- them apart): the partial unique index holds that across control planes.
ALTER TABLE servers ADD COLUMN naming TEXT NOT NULL DEFAULT 'prefixed';
CREATE UNIQUE INDEX servers_one_bare ON servers(workspace_id) WHERE naming = 'bare';

-- Who created a workspace token (schema version 3): when a team member is removed,
-- the tokens they created in the owner's workspaces are revoked with them.
ALTER TABLE workspace_tokens ADD COLUMN created_by TEXT COLLATE "C";

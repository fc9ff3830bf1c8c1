-- Every config version bump is announced on channel `gatehouse_config` (schema
-- version 5), delivered when its transaction commits, so every control plane on this
-- database republishes to its proxies what another one changed.
CREATE FUNCTION gatehouse_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gatehouse_config', NEW.version::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER config_version_changed AFTER UPDATE ON config_version
    FOR EACH ROW EXECUTE FUNCTION gatehouse_config_changed();

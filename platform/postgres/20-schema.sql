-- Schema privileges, connected to the environment's Dagster database. Dagster creates and
-- migrates its tables itself (`dagster instance migrate`), so the app user may create in `public`.

REVOKE ALL ON SCHEMA public FROM public;

ALTER SCHEMA public OWNER TO :owner_role;

GRANT USAGE, CREATE ON SCHEMA public TO :app_user;

GRANT USAGE ON SCHEMA public TO :readonly_role;

ALTER DEFAULT PRIVILEGES FOR ROLE :app_user IN SCHEMA public
GRANT SELECT ON TABLES TO :readonly_role;

ALTER DEFAULT PRIVILEGES FOR ROLE :app_user IN SCHEMA public
GRANT SELECT ON SEQUENCES TO :readonly_role;

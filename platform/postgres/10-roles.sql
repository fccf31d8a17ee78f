-- Roles of one environment's Dagster database. Run once per environment, as a Postgres admin,
-- connected to the `postgres` database; the psql variables come from the environment's Helm
-- values (`dagster-platform platform postgres-setup --env ENV` prints the commands):
--   :owner_role     owns the database and the schema; nobody logs in as it
--   :app_user       webserver, daemon, run pods and code servers (dagster.postgresql.postgresqlUsername)
--   :readonly_role  read access for on-call and analysts, granted to people's own roles
-- The app user's password is never in this repository: it is set from the secret store that also
-- feeds the Kubernetes Secret (global.postgresqlSecretName).

CREATE ROLE :owner_role NOLOGIN;

CREATE ROLE :app_user LOGIN CONNECTION LIMIT 100;

CREATE ROLE :readonly_role NOLOGIN;

ALTER ROLE :readonly_role SET default_transaction_read_only = ON;

-- The environment's Dagster database (dagster.postgresql.postgresqlDatabase), connected to `postgres`.

CREATE DATABASE :database OWNER :owner_role ENCODING 'UTF8' TEMPLATE template0;

REVOKE ALL ON DATABASE :database FROM public;

GRANT CONNECT, TEMPORARY ON DATABASE :database TO :app_user;

GRANT CONNECT ON DATABASE :database TO :readonly_role;

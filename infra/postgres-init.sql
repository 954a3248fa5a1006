-- The Prefect server's database, beside MLflow's (POSTGRES_DB) in the same PostgreSQL.
CREATE DATABASE prefect;

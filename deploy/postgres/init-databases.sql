-- Run once by the postgres image (/docker-entrypoint-initdb.d) on an empty data directory,
-- as POSTGRES_USER (seteli). One database per service; each service connects only to its own.
CREATE DATABASE registry OWNER seteli;
CREATE DATABASE vouchers OWNER seteli;
CREATE DATABASE payments OWNER seteli;
CREATE DATABASE reporting OWNER seteli;

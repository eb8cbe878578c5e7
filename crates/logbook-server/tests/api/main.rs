//! HTTP API behaviour, through the router without a socket. One test binary, split by concern.

mod support;

mod audit;
mod auth_and_tenants;
mod export;
mod faults;
mod filters;
mod histogram;
mod hostile;
mod ingest;
mod pagination;
mod viewer;

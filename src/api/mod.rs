pub mod discovery;
pub mod metrics;
pub mod router;
pub mod status;
pub mod values;

pub mod quantity;
pub mod selector;

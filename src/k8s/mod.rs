//! Kubernetes vocabulary every layer may use: label selectors as
//! `k8s.io/apimachinery` parses them, `resource.Quantity` strings in milli
//! units, and errors as `metav1.Status` objects. Pure, and the bottom layer:
//! nothing here uses another module of this crate.

pub mod quantity;
pub mod selector;
pub(crate) mod status;

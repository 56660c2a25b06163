//! What an operation records: the images a release runs, and the context `resume` needs to
//! finish an operation (recorded before its first step).

use cutover_core::plan::Plan;
use cutover_core::runtime::{ContainerInfo, ImageInfo};
use cutover_core::spec::Stack;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A stored record that does not parse. Never read as an empty default: an empty image
/// list is an empty revert target.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} cannot be read ({reason}): the state file is damaged; nothing was changed (the record is kept as it is, for inspection)"
)]
pub struct RecordError {
    pub what: String,
    pub reason: String,
}

/// What a release records about each service's image: `images_json` in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseImages(pub IndexMap<String, ImageInfo>);

impl ReleaseImages {
    /// The images release `revision` recorded.
    pub fn of_release(revision: u64, json: &str) -> Result<ReleaseImages, RecordError> {
        serde_json::from_str(json).map_err(|e| RecordError {
            what: format!("the images of release {revision}"),
            reason: e.to_string(),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }

    /// Service → image ID.
    pub fn ids(&self) -> IndexMap<String, String> {
        self.0
            .iter()
            .map(|(s, i)| (s.clone(), i.id.clone()))
            .collect()
    }
}

/// What `resume` needs to finish an operation: recorded before its first step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperationContext {
    pub kind: String,
    pub plan: Plan,
    /// Secrets as references only: `resume` binds them from the stack file again.
    pub desired: Stack,
    pub previous: Option<Stack>,
    pub from_release: Option<u64>,
    pub release: u64,
    pub record_release: bool,
    pub pins: IndexMap<String, String>,
    #[serde(default)]
    pub ack_settings: bool,
    #[serde(default)]
    pub from_dump: bool,
    /// The containers that ran when the operation began: the revert target.
    pub before: Vec<ContainerInfo>,
}

impl OperationContext {
    /// The context operation `op` recorded.
    pub fn of_operation(op: u64, json: &str) -> Result<OperationContext, RecordError> {
        serde_json::from_str(json).map_err(|e| RecordError {
            what: format!("the recorded context of operation {op}"),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_image_record_is_an_error_that_names_it_never_no_images() {
        let err =
            ReleaseImages::of_release(7, "{\"web\": {\"reference\": 3}").expect_err("damaged");
        assert!(
            err.to_string()
                .starts_with("the images of release 7 cannot be read"),
            "{err}"
        );
        let empty = ReleaseImages::of_release(7, "{}").expect("an empty record is no error");
        assert!(empty.0.is_empty());
    }

    #[test]
    fn images_round_trip_and_give_their_ids() {
        let mut images = ReleaseImages::default();
        images.0.insert(
            "web".into(),
            ImageInfo {
                reference: "app:v2".into(),
                id: "sha256:abc".into(),
                ..ImageInfo::default()
            },
        );
        let back = ReleaseImages::of_release(1, &images.to_json()).expect("parses");
        assert_eq!(back, images);
        assert_eq!(
            back.ids().get("web").map(String::as_str),
            Some("sha256:abc")
        );
    }
}

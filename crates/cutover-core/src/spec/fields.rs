//! The key names of the stack file format, read off the raw types themselves.
//!
//! serde's derive hands a struct's field names to `deserialize_struct`; a deserializer that
//! only records that list gives us every key without a hand-kept copy that could drift.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::compose::ComposeService;
use super::raw::*;

#[derive(Debug)]
struct Captured(&'static [&'static str]);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(&[])
    }
}

struct FieldNames;

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Captured(f)) => f,
        Ok(_) => &[],
    }
}

/// Every key any part of the stack file accepts.
pub fn all_keys() -> BTreeSet<&'static str> {
    [
        fields_of::<RawStack>(),
        fields_of::<RawSecret>(),
        fields_of::<RawService>(),
        fields_of::<RawHealth>(),
        fields_of::<RawMigrate>(),
        fields_of::<RawConfigFile>(),
        fields_of::<RawRestorePoints>(),
        fields_of::<RawData>(),
        fields_of::<RawPostgres>(),
        fields_of::<RawSqlite>(),
        fields_of::<RawVolume>(),
        fields_of::<RawSchemaVersion>(),
        fields_of::<RawCheck>(),
        fields_of::<RawHttpCheck>(),
        fields_of::<RawSqlCheck>(),
        fields_of::<RawExec>(),
        fields_of::<RawLogsCheck>(),
        fields_of::<RawSteps>(),
        fields_of::<RawStep>(),
        fields_of::<RawTraffic>(),
        fields_of::<RawTls>(),
        fields_of::<RawRoute>(),
        fields_of::<RawEnvironment>(),
        fields_of::<ComposeService>(),
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_come_from_the_types() {
        let keys = super::all_keys();
        for k in [
            "services",
            "image",
            "depends_on",
            "expect_status",
            "include_compose",
            "rerun_safe",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains("imagee"));
    }
}

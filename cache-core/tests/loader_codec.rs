//! L-14 and L-5 under proptest: codecs and the record envelope round-trip
//! and never panic on arbitrary bytes; stored keys are injective.

use cache_core::loader::keys::{parse_stored_key, stored_key, Key};
use cache_core::loader::record::Record;
use cache_core::loader::Codec;
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    id: u64,
    name: String,
    bytes: Vec<u8>,
    flag: Option<bool>,
}

proptest! {
    #[test]
    fn l14_codecs_roundtrip_every_value(id: u64, name in ".*", bytes in proptest::collection::vec(any::<u8>(), 0..64), flag: Option<bool>) {
        let row = Row { id, name, bytes, flag };
        for codec in [Codec::Binary, Codec::Json] {
            let enc = codec.encode(&row).unwrap();
            prop_assert_eq!(codec.decode::<Row>(&enc).unwrap(), row.clone());
        }
    }

    #[test]
    fn l14_arbitrary_bytes_decode_to_an_error_or_a_value_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        for codec in [Codec::Binary, Codec::Json] {
            let _ = codec.decode::<Row>(&bytes);
            let _ = codec.decode::<String>(&bytes);
        }
        if let Ok(rec) = Record::decode(&bytes) {
            // Whatever decodes re-encodes to the same bytes: one reading per record.
            prop_assert_eq!(rec.encode(), bytes);
        }
    }

    #[test]
    fn l6_records_roundtrip_and_keep_their_tag(value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), exp: i64) {
        let rec = match value {
            Some(v) => Record::value(v, exp),
            None => Record::placeholder(exp),
        };
        prop_assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
    }

    #[test]
    fn l5_distinct_keys_never_share_a_stored_key(
        a in proptest::collection::vec("[a-c:0-9]{0,3}", 0..4),
        b in proptest::collection::vec("[a-c:0-9]{0,3}", 0..4),
        na in "[a:]{0,2}", nb in "[a:]{0,2}",
    ) {
        let (ka, kb) = (Key::new(a), Key::new(b));
        let (sa, sb) = (stored_key(&na, &ka), stored_key(&nb, &kb));
        let same_stored = sa == sb;
        let same_key = na == nb && ka == kb;
        prop_assert_eq!(same_stored, same_key);
        prop_assert_eq!(parse_stored_key(&sa), Some((na, ka)));
    }
}

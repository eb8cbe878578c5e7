//! Property tests of the filter parsers: no input makes them panic, every rejection is an `invalid_filter`,
//! and generated filters survive being written in the `q=` syntax or as deep-object query parameters (quoting,
//! escaping and URL encoding included).

use logbook_core::filter::query_string::RawQuery;
use logbook_core::filter::{q, Field, Filter, Op};
use logbook_core::Error;
use proptest::prelude::*;

const NOW: i64 = 1_795_341_600_000;

/// A field name as clients write it, and values valid for it.
fn field_and_value() -> impl Strategy<Value = (&'static str, String)> {
    let text = "[ -~]{1,12}|[a-zA-Zé🌞 ]{1,8}"; // printable ASCII (quotes, backslashes, commas...) and unicode
    prop_oneof![
        (
            prop::sample::select(vec![
                "type",
                "action",
                "actor.id",
                "actor.name",
                "entity.type",
                "entity.id",
                "entity.name",
                "outcome",
                "description",
                "bot_id",
                "resources.file_id",
                "context.ip",
                "meta.status",
                "metadata.order.total"
            ]),
            text.prop_map(|s| s.to_string())
        ),
        (Just("seq"), (0i64..1_000_000).prop_map(|n| n.to_string())),
        (
            prop::sample::select(vec!["created_at", "received_at"]),
            prop::sample::select(vec![
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:00:00.123+02:00",
                "1h",
                "now-15m",
                "7d",
                "1795341600000"
            ])
            .prop_map(str::to_string)
        ),
    ]
}

fn comparison() -> impl Strategy<Value = (Op, &'static str)> {
    prop::sample::select(vec![
        (Op::Eq, ""),
        (Op::Gt, ">"),
        (Op::Gte, ">="),
        (Op::Lt, "<"),
        (Op::Lte, "<="),
    ])
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn q_never_panics_and_only_rejects_as_invalid_filter(input in "\\PC{0,80}") {
        if let Err(error) = q::parse(&input, NOW) {
            prop_assert!(matches!(error, Error::InvalidFilter { .. }), "{:?}", error);
        }
    }

    #[test]
    fn query_strings_never_panic(input in "[a-z_.\\[\\]=&%:,0-9*\"-]{0,80}") {
        if let Err(error) = RawQuery::parse(&input).to_list_query(NOW) {
            prop_assert!(matches!(error, Error::InvalidFilter { .. }), "{:?}", error);
        }
    }

    #[test]
    fn q_terms_round_trip(terms in prop::collection::vec((field_and_value(), comparison(), any::<bool>()), 1..5)) {
        let mut text = Vec::new();
        let mut expected = Vec::new();
        for ((name, value), (op, symbol), negated) in terms {
            let condition = Field::parse(name).unwrap().condition(op, &value, NOW).unwrap();
            expected.push(if negated { condition.negate() } else { condition });
            text.push(format!("{}{name}:{symbol}{}", if negated { "-" } else { "" }, quoted(&value)));
        }
        let text = text.join("  ");
        prop_assert_eq!(q::parse(&text, NOW).unwrap(), Filter::and(expected), "{}", text);
    }

    #[test]
    fn deep_object_parameters_round_trip(terms in prop::collection::vec((field_and_value(), prop::sample::select(vec![
        "eq", "ne", "gt", "gte", "lt", "lte", "contains", "not_contains", "prefix", "in", "not_in"])), 1..5)) {
        let mut pairs = Vec::new();
        let mut expected = Vec::new();
        for ((name, value), op_name) in terms {
            let op = Op::parse(op_name).unwrap();
            let built = Field::parse(name).unwrap().condition(op, &value, NOW);
            let Ok(condition) = built else { continue }; // e.g. contains on a time field: rejected by both paths
            expected.push(condition);
            pairs.push(format!("{}={}", url_encode(&format!("filter[{name}][{op_name}]")), url_encode(&value)));
        }
        let query = pairs.join("&");
        prop_assert_eq!(RawQuery::parse(&query).to_list_query(NOW).unwrap().filter, Filter::and(expected), "{}", query);
    }

    #[test]
    fn shorthand_commas_mean_any_of(values in prop::collection::vec("[a-z0-9_.]{1,8}", 1..4)) {
        let query = format!("type={}", values.join(","));
        let expected_op = if values.len() > 1 { Op::In } else { Op::Eq };
        let expected = Field::Type.condition(expected_op, &values.join(","), NOW).unwrap();
        prop_assert_eq!(RawQuery::parse(&query).to_list_query(NOW).unwrap().filter, expected);
    }
}

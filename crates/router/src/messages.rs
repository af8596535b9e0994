//! The track across asynchronous hops: one message attribute, `rollwave.track`, beside
//! W3C `baggage`, in the shapes SQS, SNS and EventBridge take and deliver.
//!
//! A producer on the canary track sets the attribute on what it sends; the consumer reads
//! it from what it receives and carries it on (as a header with
//! [`track::inject`](crate::track::inject), or as an attribute again). For SQS-triggered
//! functions the control plane's two event source mappings filter on it
//! (`rollwave_aws::lambda::sqs_filters`), so a message produced on the canary track is
//! consumed by the canary version.
//!
//! ```
//! use rollwave_router::messages;
//! use rollwave_router::track::Track;
//! use serde_json::json;
//!
//! // SendMessage's MessageAttributes, written by a function on the canary track.
//! let mut attributes = serde_json::Map::new();
//! messages::set_attributes(&mut attributes, Track::Canary, Some("tenant=acme"));
//! assert_eq!(attributes["rollwave.track"], json!({ "DataType": "String", "StringValue": "canary" }));
//!
//! // The record the consuming function receives from SQS.
//! let record = json!({ "messageAttributes": {
//!     "rollwave.track": { "stringValue": "canary", "dataType": "String" } } });
//! assert_eq!(messages::sqs_record_track(&record), Some(Track::Canary));
//! ```

use crate::track::{BAGGAGE_KEY, Track};
use serde_json::{Map, Value, json};

/// The message attribute that carries the decision (the baggage member's name).
pub const ATTRIBUTE: &str = BAGGAGE_KEY;

/// The attribute that carries the rest of the W3C baggage.
pub const BAGGAGE_ATTRIBUTE: &str = "baggage";

/// Sets the decision (and `baggage`, if given) in the `MessageAttributes` of an SQS
/// `SendMessage` or an SNS `Publish`: both take `{DataType, StringValue}`.
pub fn set_attributes(attributes: &mut Map<String, Value>, track: Track, baggage: Option<&str>) {
    attributes.insert(ATTRIBUTE.to_owned(), json!({ "DataType": "String", "StringValue": track.as_str() }));
    if let Some(baggage) = baggage.filter(|b| !b.is_empty()) {
        attributes.insert(BAGGAGE_ATTRIBUTE.to_owned(), json!({ "DataType": "String", "StringValue": baggage }));
    }
}

/// The decision in an SQS record as a function receives it (`messageAttributes`, with
/// `stringValue`), or in a message as `ReceiveMessage` returns it (`MessageAttributes`,
/// with `StringValue`).
pub fn sqs_record_track(record: &Value) -> Option<Track> {
    let lower = record.pointer(&format!("/messageAttributes/{ATTRIBUTE}/stringValue"));
    let upper = record.pointer(&format!("/MessageAttributes/{ATTRIBUTE}/StringValue"));
    lower.or(upper).and_then(Value::as_str).and_then(|s| Track::parse(s.as_bytes()))
}

/// The decision in an SNS record as a function receives it (`Sns.MessageAttributes`,
/// with `Value`).
pub fn sns_record_track(record: &Value) -> Option<Track> {
    record
        .pointer(&format!("/Sns/MessageAttributes/{ATTRIBUTE}/Value"))
        .and_then(Value::as_str)
        .and_then(|s| Track::parse(s.as_bytes()))
}

/// Sets the decision in an EventBridge event's `Detail` (events carry no attributes):
/// a top-level `"rollwave.track"` member, with `"baggage"` beside it if given.
pub fn set_event_detail(detail: &mut Map<String, Value>, track: Track, baggage: Option<&str>) {
    detail.insert(ATTRIBUTE.to_owned(), Value::String(track.as_str().to_owned()));
    if let Some(baggage) = baggage.filter(|b| !b.is_empty()) {
        detail.insert(BAGGAGE_ATTRIBUTE.to_owned(), Value::String(baggage.to_owned()));
    }
}

/// The decision in an EventBridge event as a target receives it (`detail`), or as
/// `PutEvents` takes it (`Detail`, a JSON string).
pub fn event_track(event: &Value) -> Option<Track> {
    let from = |detail: &Value| detail.get(ATTRIBUTE).and_then(Value::as_str).and_then(|s| Track::parse(s.as_bytes()));
    if let Some(detail) = event.get("detail") {
        return from(detail);
    }
    let text = event.get("Detail")?.as_str()?;
    from(&serde_json::from_str::<Value>(text).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each hop of HTTP → function → SQS → function → SNS → function → EventBridge, with
    /// the shapes AWS delivers, keeps the decision.
    #[test]
    fn the_decision_survives_every_hop_of_an_asynchronous_chain() {
        for track in Track::ALL {
            // Hop 1: the function behind the router read `x-rollwave-track`; it sends to SQS.
            let mut send = Map::new();
            set_attributes(&mut send, track, Some("tenant=acme"));
            assert_eq!(send[BAGGAGE_ATTRIBUTE]["StringValue"], "tenant=acme");
            // SQS delivers the attributes to the consumer in lower camel case.
            let record = json!({ "body": "{}", "messageAttributes": {
                ATTRIBUTE: { "stringValue": send[ATTRIBUTE]["StringValue"], "dataType": "String" } } });
            let hop2 = sqs_record_track(&record);
            assert_eq!(hop2, Some(track));
            // Hop 2 publishes to SNS with the same attribute shape.
            let mut publish = Map::new();
            set_attributes(&mut publish, hop2.unwrap(), None);
            let sns_record = json!({ "Sns": { "Message": "{}", "MessageAttributes": {
                ATTRIBUTE: { "Type": "String", "Value": publish[ATTRIBUTE]["StringValue"] } } } });
            let hop3 = sns_record_track(&sns_record);
            assert_eq!(hop3, Some(track));
            // Hop 3 puts an event; EventBridge delivers `detail` as an object.
            let mut detail = Map::new();
            set_event_detail(&mut detail, hop3.unwrap(), Some("tenant=acme"));
            let put = json!({ "Detail": Value::Object(detail.clone()).to_string() });
            assert_eq!(event_track(&put), Some(track));
            assert_eq!(event_track(&json!({ "detail": Value::Object(detail) })), Some(track));
        }
    }

    #[test]
    fn no_attribute_or_an_unknown_value_is_no_decision() {
        assert_eq!(sqs_record_track(&json!({ "messageAttributes": {} })), None);
        let odd = json!({ "messageAttributes": { ATTRIBUTE: { "stringValue": "blue" } } });
        assert_eq!(sqs_record_track(&odd), None);
        assert_eq!(sns_record_track(&json!({ "Sns": {} })), None);
        assert_eq!(event_track(&json!({ "Detail": "not json" })), None);
        let received = json!({ "MessageAttributes": { ATTRIBUTE: { "StringValue": " Canary " } } });
        assert_eq!(sqs_record_track(&received), Some(Track::Canary));
    }
}

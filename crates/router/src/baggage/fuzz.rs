//! Property tests of the baggage reader and writer: well-formed lists are read back
//! member for member within the W3C limits, whatever the white space and however they
//! are split over headers; any header text is rewritten into one that keeps to the
//! limits, carries the decision, and reads back as written.

use super::*;
use proptest::prelude::*;

const TOKEN: &str = "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,10}";
const VALUE: &str = "[!#-+\\--:<-\\[\\]-~]{0,12}";
const OWS: &str = "[ \t]{0,2}";

/// One well-formed member, with white space where the grammar allows it: its wire text
/// and what the reader keeps of it (trimmed).
fn member() -> impl Strategy<Value = (String, String)> {
    let property = (TOKEN, OWS, prop::option::of((OWS, VALUE)), OWS).prop_map(|(key, a, value, b)| match value {
        Some((c, v)) => format!("{a}{key}{c}={c}{v}{b}"),
        None => format!("{a}{key}{b}"),
    });
    let long_value = prop_oneof![8 => VALUE.prop_map(|v| v), 1 => "[a-z]{200,400}".prop_map(|v| v)];
    (OWS, TOKEN, OWS, OWS, long_value, prop::collection::vec(property, 0..3), OWS).prop_map(
        |(lead, key, a, b, value, properties, trail)| {
            let mut text = format!("{key}{a}={b}{value}");
            for p in properties {
                text.push(';');
                text.push_str(&p);
            }
            let kept = text.trim_matches([' ', '\t']).to_owned();
            (format!("{lead}{text}{trail}"), kept)
        },
    )
}

/// The members a reader honours: the longest prefix within both limits.
fn within_limits(kept: &[String], max_members: usize, max_bytes: usize) -> Vec<String> {
    let mut bytes = 0;
    let mut out = Vec::new();
    for (i, m) in kept.iter().enumerate() {
        let separator = usize::from(i > 0);
        if i == max_members || bytes + separator + m.len() > max_bytes {
            break;
        }
        bytes += separator + m.len();
        out.push(m.clone());
    }
    out
}

fn header_map(values: &[Vec<u8>]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for v in values {
        if let Ok(value) = HeaderValue::from_bytes(v) {
            map.append(BAGGAGE, value);
        }
    }
    map
}

fn texts(map: &HeaderMap) -> Vec<String> {
    members(map, |_| false, MAX_MEMBERS, MAX_BYTES).map(|m| String::from_utf8_lossy(m.text).into_owned()).collect()
}

/// Header text from the bytes baggage is made of, some that break it, and obs-text.
fn any_header() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop::sample::select(b"ab=;, \t%3=.rollwave.trackcanarystable\"\\\x80\xff".to_vec());
    prop_oneof![
        prop::collection::vec(byte, 0..200),
        member().prop_map(|(wire, _)| wire.into_bytes()),
        Just(b"rollwave.track=canary".to_vec()),
        "[a-z]{8000,8300}".prop_map(|v| format!("big={v}").into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_well_formed_list_reads_back_member_for_member_within_the_limits(
        list in prop::collection::vec(member(), 0..90),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        empties in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        // Commas between members; some empty members; the list split over headers.
        let mut split_at: Vec<usize> = splits.iter().map(|s| s.index(list.len() + 1)).collect();
        split_at.sort_unstable();
        let empty_at: Vec<usize> = empties.iter().map(|s| s.index(list.len() + 1)).collect();
        let mut headers = vec![String::new()];
        for (i, (wire, _)) in list.iter().enumerate() {
            if split_at.contains(&i) && !headers.last().is_some_and(String::is_empty) {
                headers.push(String::new());
            }
            let header = headers.last_mut().unwrap();
            if !header.is_empty() {
                header.push(',');
            }
            if empty_at.contains(&i) {
                header.push_str(" ,");
            }
            header.push_str(wire);
        }
        let map = header_map(&headers.into_iter().map(String::into_bytes).collect::<Vec<_>>());
        let kept: Vec<String> = list.into_iter().map(|(_, kept)| kept).collect();
        prop_assert_eq!(texts(&map), within_limits(&kept, MAX_MEMBERS, MAX_BYTES));
    }

    #[test]
    fn any_baggage_is_rewritten_within_the_limits_with_the_decision_and_reads_back_as_written(
        values in prop::collection::vec(any_header(), 0..4),
        canary in any::<bool>(),
    ) {
        let track = if canary { Track::Canary } else { Track::Stable };
        let mut map = header_map(&values);
        // Whatever it carried, reading it never panics.
        let _ = find_track(&map);
        let others: Vec<String> = members(&map, |m| m.key == BAGGAGE_KEY.as_bytes(), usize::MAX, usize::MAX)
            .map(|m| String::from_utf8_lossy(m.text).into_owned())
            .collect();
        let ours = track.baggage_member();
        let mut expected = within_limits(&others, MAX_MEMBERS - 1, MAX_BYTES - ours.len() - 1);
        expected.push(ours.to_owned());

        set_track(&mut map, track);
        let written = map.get_all(BAGGAGE).iter().collect::<Vec<_>>();
        prop_assert_eq!(written.len(), 1);
        prop_assert!(written[0].len() <= MAX_BYTES, "{} bytes", written[0].len());
        prop_assert_eq!(find_track(&map), Some(track));
        // Everything written is honoured when read again: nothing over the limits.
        prop_assert_eq!(texts(&map), expected);
        let once = map.clone();
        set_track(&mut map, track);
        prop_assert_eq!(map, once, "rewriting a rewritten header changes nothing");
    }
}

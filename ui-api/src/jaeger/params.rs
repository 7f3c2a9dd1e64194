//! Parameter parsing shared by the v1 and v3 handlers: Go durations, RFC 3339 timestamps,
//! Jaeger search tags.

/// Nanoseconds per Go duration unit (`time.ParseDuration`'s table: both micro signs included).
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration (`time.ParseDuration`): an optional sign, then one or more decimal
/// numbers each with a unit (`ns us µs ms s m h`), e.g. `300ms`, `-1.5h`, `2h45m`; `0` alone
/// needs no unit. Returns nanoseconds; the error says what is wrong.
pub(crate) fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {text:?}: {why} (expected a Go duration such as 300ms, 1.5s or \
             1h30m; units ns, us, µs, ms, s, m, h)"
        )
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(invalid("missing unit"));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| invalid(&format!("unknown unit {unit:?}")))?;
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid("number too large"))?
        };
        let mut value = whole
            .checked_mul(scale)
            .ok_or_else(|| invalid("out of range"))?;
        // Fractions beyond nanoseconds are truncated, as Go does.
        let frac = &frac_part[..frac_part.len().min(18)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| invalid("bad fraction"))?;
            value += digits * scale / 10u128.pow(frac.len() as u32);
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= i64::MAX as u128)
            .ok_or_else(|| invalid("out of range"))?;
        rest = after;
    }
    let total = total as i64;
    Ok(if negative { -total } else { total })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp with optional fractional seconds (Go's `time.RFC3339Nano`), e.g.
/// `2024-05-01T12:30:00.123456789Z` or `2024-05-01T14:30:00+02:00`, into unix nanoseconds.
pub(crate) fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid timestamp {text:?}: {why} (expected RFC 3339, e.g. 2024-05-01T12:30:00.5Z)"
        )
    };
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let s = text.get(range).ok_or_else(|| invalid("too short"))?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid("expected digits"));
        }
        s.parse().map_err(|_| invalid("expected digits"))
    };
    if b.len() < 20 {
        return Err(invalid("too short"));
    }
    let sep = |i: usize, allowed: &[u8]| -> Result<(), String> {
        if allowed.contains(&b[i]) {
            Ok(())
        } else {
            Err(invalid(&format!(
                "unexpected {:?} at position {i}",
                b[i] as char
            )))
        }
    };
    sep(4, b"-")?;
    sep(7, b"-")?;
    sep(10, b"Tt")?;
    sep(13, b":")?;
    sep(16, b":")?;
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(invalid("month out of range")),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(invalid("field out of range"));
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(invalid("expected digits after '.'"));
        }
        let frac = &text[i + 1..i + 1 + digits.min(9)];
        nanos = frac.parse::<i64>().map_err(|_| invalid("bad fraction"))?
            * 10i64.pow(9 - frac.len() as u32);
        i += 1 + digits;
    }
    let offset_secs = match &text[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) => {
            if zone.as_bytes()[3] != b':' {
                return Err(invalid("expected a zone like +02:00"));
            }
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return Err(invalid("zone offset out of range"));
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        "" => return Err(invalid("missing zone (Z or +hh:mm)")),
        _ => return Err(invalid("expected Z or +hh:mm after the time")),
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(|| invalid("out of range"))
}

/// Parses Jaeger's `tags` parameter: a JSON object of string values.
pub(crate) fn parse_tags_json(name: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("malformed '{name}' parameter: expected a JSON object of strings such as {{\"http.route\":\"/cart\"}}: {e}"))?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            // Grafana and scripts send numbers and booleans unquoted; compare their text.
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(format!(
                "malformed '{name}' parameter: the value of {k:?} is {other}, expected a string"
            )),
        })
        .collect()
}

/// Parses one `tag=key:value` parameter (split at the first `:`).
pub(crate) fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "malformed 'tag' parameter, expecting key:value, received: {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("5ns", 5),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("300ms", 300_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("2m", 120_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("-1.5h", -5_400_000_000_000),
            ("+10ms", 10_000_000),
            ("1.0000000001s", 1_000_000_000),
            ("0.1ns", 0),
        ];
        for (text, nanos) in ok {
            assert_eq!(parse_go_duration(text), Ok(nanos), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("1", "missing unit"),
            ("10", "missing unit"),
            ("1d", "unknown unit \"d\""),
            ("ms", "expected a number"),
            ("1.5", "missing unit"),
            (".s", "expected a number"),
            ("1s2", "missing unit"),
            ("3000000h", "out of range"),
            ("-", "empty"),
            ("1 s", "unknown unit \" s\""),
        ] {
            let err = parse_go_duration(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("units ns, us"), "{err}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:30:00.5Z"),
            Ok(1_714_566_600_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:30:00.000000001+02:00"),
            Ok(1_714_566_600_000_000_001)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00-01:30"),
            Ok(1_709_170_200_000_000_000)
        );
        for bad in [
            "2024-05-01",
            "2024-05-01 12:30:00Z",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:30:00",
            "2024-05-01T12:30:00.Z",
            "2024-05-01T12:30:00+0200",
            "1714566600",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(
            parse_tag("http.url:http://x:80/"),
            Ok(("http.url".into(), "http://x:80/".into()))
        );
        assert!(parse_tag("novalue").is_err());
        assert!(parse_tag(":v").is_err());
        assert_eq!(
            parse_tags_json("tags", r#"{"error":"true","code":500}"#).unwrap(),
            vec![
                ("code".to_string(), "500".to_string()),
                ("error".to_string(), "true".to_string())
            ]
        );
        assert!(parse_tags_json("tags", "[1]").is_err());
        assert!(parse_tags_json("tags", r#"{"a":{"b":1}}"#).is_err());
    }
}

//! What both pages share: the head and its inline CSS, escaping (every string from a site goes
//! through `esc`), links, and figures for people (ages, durations, numbers).

use super::*;

// Pieces

/// The document head, the style sheet, and the opening `<body>`.
pub(super) fn head(out: &mut String, title: &str) {
    w!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta \
         http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style>\
         </head><body>",
        esc(title)
    );
}

pub(super) const STYLE: &str = "\
:root{--fg:#1f2933;--muted:#6b7785;--line:#e3e7ec;--bg:#f5f7fa;--card:#fff;\
--good:#1f9d55;--busy:#2f6fde;--bad:#d6363b;--quiet:#98a2ae;--stale:#e39a14;--bake:#0f9fa8}\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
color:var(--fg);background:var(--bg)}\
header{display:flex;justify-content:space-between;align-items:center;gap:16px;padding:12px 24px;\
background:#17202b;color:#fff}\
header .title{display:flex;align-items:baseline;gap:12px}\
header h1{font-size:18px;margin:0}\
header .sub,header .now{color:#aab6c3;font-size:12px}\
header a.back{color:#aab6c3;text-decoration:none}\
main{padding:16px 24px;max-width:1400px;margin:0 auto}\
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;\
margin-bottom:16px}\
section.tiles{display:flex;gap:12px;background:none;border:0;padding:0}\
h2{font-size:15px;margin:0 0 10px}\
h3{font-size:14px;margin:0}\
.count{color:var(--muted);font-weight:normal}\
.tile{flex:1;background:var(--card);border:1px solid var(--line);border-radius:8px;\
padding:10px 14px;border-top:3px solid var(--line)}\
.tile .value{font-size:22px;font-weight:600}\
.tile .label{color:var(--muted);font-size:12px}\
.tile.good{border-top-color:var(--good)}.tile.busy{border-top-color:var(--busy)}\
.tile.bad{border-top-color:var(--bad)}.tile.bad .value{color:var(--bad)}\
.tile.quiet{border-top-color:var(--quiet)}\
.empty,.muted{color:var(--muted)}\
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;\
background:#e8ecf1;color:var(--fg);white-space:nowrap}\
.pill.good,.plan-Completed,.wave-Completed,.member-Healthy{background:#dcf3e5;color:#13693a}\
.pill.busy,.plan-Progressing,.wave-Progressing,.member-Progressing{background:#e0eafc;color:#1d4fae}\
.pill.bad,.plan-Stopped,.wave-Stopped,.member-Aborted{background:#fbe1e1;color:#a8242a}\
.pill.quiet,.wave-Pending,.member-Unknown,.plan-Aborted,.wave-RolledBack{background:#eceff3;color:#57616d}\
.plan-Paused,.wave-Gated,.member-Stale{background:#fdf0d5;color:#8a5a00}\
.wave-Baking{background:#d9f4f5;color:#0a6d73}\
.plan{border-top:1px solid var(--line);padding:10px 0}\
.plan:first-of-type{border-top:0;padding-top:0}\
.plan-head{display:flex;align-items:center;gap:10px;flex-wrap:wrap}\
.release{font-size:12px;color:var(--muted)}\
.file{margin-left:auto;font-size:12px;color:var(--muted)}\
p.message{margin:6px 0 8px}\
.message{color:#3e4a57;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%}\
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;\
border-bottom:1px solid var(--line);padding:6px 8px}\
td{border-bottom:1px solid var(--line);padding:6px 8px;vertical-align:top}\
tr:last-child td{border-bottom:0}\
.num{text-align:right;font-variant-numeric:tabular-nums}\
table.waves td{border-bottom:1px dashed var(--line)}\
tr.wave.current td{background:#f7faff}\
td.wave-name{width:170px}td.wave-phase{width:130px}\
.selector{font-size:12px;color:var(--muted)}\
.bar{position:relative;display:flex;height:22px;border-radius:5px;overflow:hidden;\
background:#eef1f4;margin:2px 0 4px}\
.seg{display:flex;align-items:center;justify-content:center;color:#fff;font-size:12px;\
font-weight:600;min-width:2px}\
.seg.healthy,.key.healthy i{background:var(--good)}\
.seg.progressing,.key.progressing i{background:var(--busy)}\
.seg.aborted,.key.aborted i{background:var(--bad)}\
.seg.unknown,.key.unknown i{background:var(--quiet)}\
.seg.stale,.key.stale i{background:var(--stale)}\
.needed{position:absolute;top:-2px;bottom:-2px;width:0;border-left:2px dashed #17202b}\
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted)}\
.key i{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:4px}\
.key.zero{opacity:.45}\
.need{margin-left:auto}\
details{margin-top:6px;font-size:13px}\
summary{cursor:pointer;color:var(--muted)}\
details ul,ul.attention{list-style:none;margin:6px 0 0;padding:0}\
details li,ul.attention li{padding:3px 0;overflow-wrap:anywhere}\
ul.attention li{border-bottom:1px solid var(--line);padding:6px 0}\
ul.attention li:last-child{border-bottom:0}\
.reason{color:#3e4a57}\
.ago{color:var(--muted);white-space:nowrap}\
a{color:#1d4fae}\
.section-head{display:flex;justify-content:space-between;align-items:center}\
form{display:flex;gap:6px;align-items:center}\
input[type=search]{padding:5px 8px;border:1px solid #cbd2d9;border-radius:5px;width:220px}\
button{padding:5px 12px;border:1px solid #cbd2d9;border-radius:5px;background:#f0f3f6;\
cursor:pointer}\
table.sites td.name{font-weight:600;overflow-wrap:anywhere}\
tr.site.bad td:first-child{box-shadow:inset 3px 0 var(--bad)}\
tr.site.quiet td:first-child{box-shadow:inset 3px 0 var(--quiet)}\
.svc{white-space:nowrap}\
.svc-name{color:var(--muted)}\
.ver{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:13px}\
.ver.canary{color:#1d4fae}\
.phase{font-size:12px;font-weight:600}\
.phase-Healthy,.phase-Successful{color:var(--good)}\
.phase-Progressing{color:var(--busy)}\
.phase-Paused,.phase-Inconclusive{color:#8a5a00}\
.phase-Degraded,.phase-Failed,.phase-Error{color:var(--bad)}\
.outcome{font-weight:600}\
.outcome-applied{color:var(--good)}.outcome-refused{color:var(--bad)}\
.outcome-stale{color:#8a5a00}\
.more{color:var(--muted);margin:8px 0 0}\
section.alert{border-color:#f1b5b7;background:#fff6f6}\
section.alert ul{margin:0;padding-left:18px}\
section.facts{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}\
dl{display:flex;flex-wrap:wrap;gap:8px 28px;margin:0}\
dt{color:var(--muted);font-size:12px}\
dd{margin:0;font-weight:600}\
.labels{display:flex;gap:6px;flex-wrap:wrap;align-items:center}\
.labels h3{color:var(--muted);font-size:12px;font-weight:normal;margin-right:4px}\
.chip{background:#eef1f4;border-radius:4px;padding:1px 7px;font-size:12px}\
section.pair{display:grid;grid-template-columns:1fr 1fr;gap:24px}\
.type{font-size:12px;color:var(--muted)}\
code.value{background:#eef1f4;padding:0 5px;border-radius:3px}\
";

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for element content and quoted attributes.
pub(super) fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// A word usable in a class name: ASCII letters, digits and `-` kept, the rest dropped.
pub(super) fn css_word(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// The link to a site's page.
pub(super) fn site_href(site: &str) -> String {
    format!("/sites/{}", percent_encode(site))
}

/// Every byte but ASCII letters, digits and `-._~` as `%XX`.
pub(super) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            w!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `%XX` decoded (and `+` as a space when `plus_is_space`, as in a form's query); `None` when
/// an escape is malformed or the result is not UTF-8.
pub(super) fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// The decoded value of `key` in a query string (`a=1&q=store`).
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| percent_decode(value, true))
}

/// `12 s ago`, `4 min ago`, `3 h 5 min ago`, `2 d ago`.
pub(super) fn ago(at: Timestamp, now: Timestamp) -> String {
    format!("{} ago", duration(now.since(at)))
}

/// When a site was last heard from, or `never`.
pub(super) fn seen(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(|| "never".to_owned(), |at| ago(at, now))
}

/// `12 s`, `4 min`, `3 h 5 min`, `2 d 3 h`.
pub(super) fn duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => match (seconds % 3600) / 60 {
            0 => format!("{} h", seconds / 3600),
            minutes => format!("{} h {minutes} min", seconds / 3600),
        },
        _ => match (seconds % 86_400) / 3600 {
            0 => format!("{} d", seconds / 86_400),
            hours => format!("{} d {hours} h", seconds / 86_400),
        },
    }
}

/// `10,000`.
pub(super) fn number(value: usize) -> String {
    number_u64(u64::try_from(value).unwrap_or(u64::MAX))
}

pub(super) fn number_u64(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

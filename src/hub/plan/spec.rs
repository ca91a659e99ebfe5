//! A plan file (`*.plan.toml` next to the hub's documents), validated into a [`PlanSpec`].
//!
//! Owns the keys of a plan file, their defaults and every check that can be made without the
//! fleet: thresholds in range, waves that could never have a member of their own (a wave inside
//! an earlier one), the release and previous documents valid (parsed with the agent's own
//! parser). Every problem of a file is reported at once as `FILE:LINE:COLUMN`. It reads the
//! files when asked to and never writes anything; it decides nothing about a running plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::spec::parse::parse_tree;
use crate::spec::parse::reader::{index_path, Reader, Table};
use crate::spec::parse::tree::{Format, Node, Source, Value};

/// The suffix of a plan file in the documents directory.
pub const PLAN_SUFFIX: &str = ".plan.toml";
/// The largest plan file read, in bytes.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;
/// Default `unknownAfter`.
pub const DEFAULT_UNKNOWN_AFTER: Duration = Duration::from_secs(600);

/// A share of a wave's reachable members, or a count of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Threshold {
    /// A percentage, 0 to 100.
    Percent(f64),
    /// A number of sites.
    Count(u64),
}

impl Threshold {
    /// How many of `of` sites this is: a percentage rounds up (90 % of 7 is 7), so a wave is
    /// never called healthy on less than it asked for.
    pub fn of_ceil(self, of: u64) -> u64 {
        match self {
            Threshold::Count(count) => count,
            Threshold::Percent(percent) => {
                // Exact for any fleet size that fits in f64's 53 bits.
                let share = (of as f64) * percent / 100.0;
                let rounded = share.ceil();
                // Guard against 0.1 + 0.2 style noise pushing an exact share up by one.
                if rounded - share > 1.0 - 1e-9 {
                    share.floor() as u64
                } else {
                    rounded as u64
                }
            }
        }
    }

    /// How many of `of` sites this allows: a percentage rounds down (2 % of 49 is 0), so a
    /// limit is never looser than it says.
    pub fn of_floor(self, of: u64) -> u64 {
        match self {
            Threshold::Count(count) => count,
            Threshold::Percent(percent) => {
                let share = (of as f64) * percent / 100.0;
                let floored = share.floor();
                if share - floored > 1.0 - 1e-9 {
                    share.ceil() as u64
                } else {
                    floored as u64
                }
            }
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Percent(percent) => write!(f, "{percent}%"),
            Threshold::Count(count) => write!(f, "{count}"),
        }
    }
}

/// A manual or timed gate before a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    /// `pause = {}`: until `edgeroll hub promote PLAN`.
    Manual,
    /// `pause = { duration = "1h" }`: this long after the previous wave completed (or
    /// `hub promote`, whichever comes first).
    For(Duration),
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveSpec {
    /// Its name (unique in the plan).
    pub name: String,
    /// Its label selector (`site` matches the site's name): empty selects every site.
    pub selector: BTreeMap<String, String>,
    /// Healthy members needed, of the reachable ones.
    pub min_healthy: Threshold,
    /// Aborted members allowed, of the reachable ones; one more stops the plan.
    pub max_aborted: Threshold,
    /// How long the wave must meet `min_healthy` before the next starts.
    pub bake: Duration,
    /// A member not heard from for this long is Unknown.
    pub unknown_after: Duration,
    /// A gate before the wave starts.
    pub pause: Option<Gate>,
}

/// A desired document a plan refers to, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseDocument {
    /// The file.
    pub path: PathBuf,
    /// Its serial (the lowest serial the plan publishes it under).
    pub serial: u64,
    /// Each service's template version, by service name.
    pub versions: BTreeMap<String, String>,
    /// The document as JSON, from which each wave's document is made.
    pub json: serde_json::Value,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSpec {
    /// Its name.
    pub name: String,
    /// The plan file.
    pub file: PathBuf,
    /// The release it rolls out.
    pub release: ReleaseDocument,
    /// What `hub abort` gives the started waves back.
    pub previous: Option<ReleaseDocument>,
    /// The waves, in order.
    pub waves: Vec<WaveSpec>,
    /// A digest of the plan file and the documents it names: a new digest is a new run.
    pub digest: String,
}

impl PlanSpec {
    /// The index of the wave `site` with `labels` belongs to: the first that selects it.
    pub fn wave_of(&self, site: &str, labels: &BTreeMap<String, String>) -> Option<usize> {
        self.waves
            .iter()
            .position(|wave| crate::wire::selects(&wave.selector, site, labels))
    }
}

/// Whether `path` names a plan file.
pub fn is_plan_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(PLAN_SUFFIX) && !name.starts_with('.'))
}

/// Load and validate the plan file at `path` (and the documents it names).
pub fn load(path: &Path) -> Result<PlanSpec, Vec<Diagnostic>> {
    let text = read_limited(path, MAX_PLAN_BYTES)?;
    parse(path, &text)
}

fn at_start(path: &Path, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message,
    }]
}

fn read_limited(path: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
    let metadata =
        std::fs::metadata(path).map_err(|error| at_start(path, format!("cannot read: {error}")))?;
    if metadata.len() > limit {
        return Err(at_start(
            path,
            format!(
                "the file is {} bytes, more than the limit of {limit}",
                metadata.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|error| at_start(path, format!("cannot read: {error}")))
}

/// Validate the text of a plan file found at `path`; the documents it names are read relative
/// to its directory.
pub fn parse(path: &Path, text: &str) -> Result<PlanSpec, Vec<Diagnostic>> {
    let source = Source::new(path, text, Format::Toml);
    let root = parse_tree(&source, 0)?;
    let mut reader = Reader::new(vec![source]);
    let mut documents = Vec::new();
    let plan = read_root(&mut reader, &root, path, &mut documents);
    let mut diagnostics = if reader.has_errors() {
        reader.into_diagnostics()
    } else {
        Vec::new()
    };
    // Problems inside the named documents come last, each with its own file and line.
    diagnostics.append(&mut documents);
    match plan {
        Some(plan) if diagnostics.is_empty() => Ok(plan),
        _ => Err(diagnostics),
    }
}

fn read_root(
    reader: &mut Reader<'_>,
    root: &Value,
    file: &Path,
    document_problems: &mut Vec<Diagnostic>,
) -> Option<PlanSpec> {
    let base = crate::hub::config::directory_of(file);
    let mut table = reader.table("", root)?;
    let default_name = file
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(PLAN_SUFFIX))
        .unwrap_or("plan")
        .to_owned();
    let name = match table.get("name") {
        Some((path, value)) => read_name(reader, &path, value),
        None => {
            if crate::hub::http::valid_site(&default_name) {
                Some(default_name)
            } else {
                reader.error(
                    root,
                    "name",
                    format!("the file name gives the plan the name {default_name:?}, which is not usable in a URL: set `name`"),
                );
                None
            }
        }
    };
    let release = table
        .required(reader, "document")
        .and_then(|(path, value)| read_document(reader, &path, value, &base, document_problems));
    let previous = match table.get("previous") {
        Some((path, value)) => {
            read_document(reader, &path, value, &base, document_problems).map(Some)
        }
        None => Some(None),
    };
    let unknown_after = match table.get("unknownAfter") {
        Some((path, value)) => reader.duration(&path, value),
        None => Some(DEFAULT_UNKNOWN_AFTER),
    };
    let waves = table
        .required(reader, "waves")
        .and_then(|(path, value)| read_waves(reader, &path, value, unknown_after));
    table.finish(reader);
    let (name, release, previous, waves) = (name?, release?, previous?, waves?);
    if let Some(previous) = &previous {
        let mine: Vec<&String> = release.versions.keys().collect();
        let theirs: Vec<&String> = previous.versions.keys().collect();
        if mine != theirs {
            reader.error(
                root,
                "previous",
                format!(
                    "the previous document has the services {theirs:?} and the release {mine:?}: a rollback must name the same services"
                ),
            );
            return None;
        }
    }
    let digest = digest_of(file, &release, previous.as_ref());
    Some(PlanSpec {
        name,
        file: file.to_path_buf(),
        release,
        previous,
        waves,
        digest,
    })
}

fn read_name(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<String> {
    let text = reader.non_empty_string(path, value)?;
    if crate::hub::http::valid_site(text) {
        Some(text.to_owned())
    } else {
        reader.error(
            value,
            path,
            format!("{text:?} is not a usable plan name: letters, digits, `-`, `_` and `.`, at most 253"),
        );
        None
    }
}

fn read_document(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    base: &Path,
    problems: &mut Vec<Diagnostic>,
) -> Option<ReleaseDocument> {
    let relative = reader.non_empty_string(path, value)?;
    let file = base.join(relative);
    if file.parent() == Some(base) {
        reader.error(
            value,
            path,
            format!(
                "{relative:?} is in the documents directory itself, so the hub would serve it to every site it selects as well; put it in a subdirectory such as releases/"
            ),
        );
        return None;
    }
    let text = match read_limited(&file, crate::spec::parse::MAX_DOCUMENT_BYTES as u64) {
        Ok(text) => text,
        Err(_) => {
            reader.error(
                value,
                path,
                format!("cannot read the document {}", file.display()),
            );
            return None;
        }
    };
    let document = match crate::spec::parse::parse_document(&file, &text) {
        Ok(document) => document,
        Err(mut diagnostics) => {
            problems.append(&mut diagnostics);
            return None;
        }
    };
    if document.services.is_empty() {
        reader.error(
            value,
            path,
            format!(
                "{} has no services: a plan rolls out services",
                file.display()
            ),
        );
        return None;
    }
    let format = if file
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        Format::Json
    } else {
        Format::Toml
    };
    let source = Source::new(&file, &text, format);
    let tree = match parse_tree(&source, 0) {
        Ok(tree) => tree,
        Err(mut diagnostics) => {
            problems.append(&mut diagnostics);
            return None;
        }
    };
    Some(ReleaseDocument {
        path: file,
        serial: document.serial,
        versions: document
            .services
            .iter()
            .map(|service| (service.name.clone(), service.template.version.clone()))
            .collect(),
        json: to_json(&tree.node),
    })
}

/// A parsed tree as JSON (a TOML datetime becomes its text: no document field takes one).
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as Json;
    match node {
        Node::String(text) | Node::Datetime(text) => Json::String(text.clone()),
        Node::Integer(integer) => i64::try_from(*integer)
            .map(Json::from)
            .or_else(|_| u64::try_from(*integer).map(Json::from))
            .unwrap_or(Json::Null),
        Node::Float(float) => serde_json::Number::from_f64(*float).map_or(Json::Null, Json::Number),
        Node::Boolean(boolean) => Json::Bool(*boolean),
        Node::Null => Json::Null,
        Node::Array(values) => {
            Json::Array(values.iter().map(|value| to_json(&value.node)).collect())
        }
        Node::Table(entries) => Json::Object(
            entries
                .iter()
                .map(|entry| (entry.key.clone(), to_json(&entry.value.node)))
                .collect(),
        ),
    }
}

fn read_waves(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    unknown_after: Option<Duration>,
) -> Option<Vec<WaveSpec>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "a plan needs at least one wave");
        return None;
    }
    let mut waves = Vec::new();
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let wave_path = index_path(path, index);
        match read_wave(reader, &wave_path, element, unknown_after) {
            Some(wave) => {
                if let Some(earlier) = waves
                    .iter()
                    .find(|earlier: &&WaveSpec| earlier.name == wave.name)
                {
                    reader.error(
                        element,
                        &wave_path,
                        format!(
                            "two waves are named {:?}: every wave needs its own name",
                            earlier.name
                        ),
                    );
                    complete = false;
                } else if let Some(earlier) = waves
                    .iter()
                    .find(|earlier: &&WaveSpec| contains(&earlier.selector, &wave.selector))
                {
                    reader.error(
                        element,
                        &wave_path,
                        format!(
                            "wave {:?} lies inside the earlier wave {:?} (every site it selects, {:?} selects first), so it could never have a member",
                            wave.name, earlier.name, earlier.name
                        ),
                    );
                    complete = false;
                } else {
                    waves.push(wave);
                }
            }
            None => complete = false,
        }
    }
    complete.then_some(waves)
}

/// Whether every site `inner` selects is selected by `outer` too: `outer`'s every key is in
/// `inner` with the same value.
fn contains(outer: &BTreeMap<String, String>, inner: &BTreeMap<String, String>) -> bool {
    outer
        .iter()
        .all(|(key, value)| inner.get(key) == Some(value))
}

fn read_wave(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    unknown_after: Option<Duration>,
) -> Option<WaveSpec> {
    let mut table = reader.table(path, value)?;
    let name = table
        .required(reader, "name")
        .and_then(|(path, value)| read_name(reader, &path, value));
    let selector = match table.get("selector") {
        Some((path, value)) => reader.string_map(&path, value),
        None => Some(BTreeMap::new()),
    };
    let min_healthy = threshold(reader, &mut table, "minHealthy", Threshold::Percent(100.0));
    let max_aborted = threshold(reader, &mut table, "maxAborted", Threshold::Count(0));
    let bake = match table.get("bake") {
        Some((path, value)) => zero_or_duration(reader, &path, value),
        None => Some(Duration::ZERO),
    };
    let own_unknown_after = match table.get("unknownAfter") {
        Some((path, value)) => reader.duration(&path, value).map(Some),
        None => Some(None),
    };
    let pause = match table.get("pause") {
        Some((path, value)) => read_gate(reader, &path, value).map(Some),
        None => Some(None),
    };
    table.finish(reader);
    Some(WaveSpec {
        name: name?,
        selector: selector?,
        min_healthy: min_healthy?,
        max_aborted: max_aborted?,
        bake: bake?,
        unknown_after: own_unknown_after?.or(unknown_after)?,
        pause: pause?,
    })
}

/// A duration, or zero (`0`, `"0"`, `"0s"`, `"0m"`, `"0h"`): a wave need not bake.
fn zero_or_duration(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Duration> {
    let zero = match &value.node {
        Node::Integer(0) => true,
        Node::String(text) => {
            let digits = text.trim().trim_end_matches(['s', 'm', 'h']);
            !digits.is_empty() && digits.bytes().all(|byte| byte == b'0')
        }
        _ => false,
    };
    if zero {
        Some(Duration::ZERO)
    } else {
        reader.duration(path, value)
    }
}

fn read_gate(reader: &mut Reader<'_>, path: &str, value: &Value) -> Option<Gate> {
    let mut table = reader.table(path, value)?;
    let duration = match table.get("duration") {
        Some((path, value)) => reader.duration(&path, value).map(Some),
        None => Some(None),
    };
    table.finish(reader);
    Some(duration?.map_or(Gate::Manual, Gate::For))
}

/// `key` as a percentage (`"90%"`) or a count (`3`), or `default`.
fn threshold(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    key: &'static str,
    default: Threshold,
) -> Option<Threshold> {
    let Some((path, value)) = table.get(key) else {
        return Some(default);
    };
    match &value.node {
        Node::Integer(_) => reader
            .int::<u64>(&path, value, 0..=i64::MAX)
            .map(Threshold::Count),
        Node::String(text) => {
            let parsed = text
                .trim()
                .strip_suffix('%')
                .and_then(|number| number.trim().parse::<f64>().ok());
            match parsed {
                Some(percent) if (0.0..=100.0).contains(&percent) => {
                    Some(Threshold::Percent(percent))
                }
                Some(percent) => {
                    reader.error(value, &path, format!("{percent}% is outside 0%–100%"));
                    None
                }
                None => {
                    reader.error(
                        value,
                        &path,
                        format!("{text:?} is not a percentage such as \"90%\"; a count is an integer (3)"),
                    );
                    None
                }
            }
        }
        _ => {
            reader.error(
                value,
                &path,
                "expected a percentage such as \"90%\" or a count such as 3",
            );
            None
        }
    }
}

/// A digest of the plan file's bytes and of the documents it names.
fn digest_of(file: &Path, release: &ReleaseDocument, previous: Option<&ReleaseDocument>) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(&std::fs::read(file).unwrap_or_default());
    for document in std::iter::once(release).chain(previous) {
        hasher.update(&[0]);
        hasher.update(document.json.to_string().as_bytes());
    }
    hasher
        .finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_round_towards_safety() {
        assert_eq!(Threshold::Percent(90.0).of_ceil(7), 7);
        assert_eq!(Threshold::Percent(90.0).of_ceil(10), 9);
        assert_eq!(Threshold::Percent(100.0).of_ceil(3), 3);
        assert_eq!(Threshold::Percent(0.0).of_ceil(3), 0);
        assert_eq!(Threshold::Percent(2.0).of_floor(49), 0);
        assert_eq!(Threshold::Percent(2.0).of_floor(50), 1);
        assert_eq!(Threshold::Percent(10.0).of_floor(30), 3);
        assert_eq!(Threshold::Count(3).of_floor(1), 3);
    }

    #[test]
    fn a_bake_of_zero_is_allowed_and_a_unit_alone_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("releases")).expect("releases");
        let release = "apiVersion = \"edgeroll/v1\"\n[[services]]\nname = \"web\"\n\
            traffic = { http = \"127.0.0.1:18080\" }\n[services.template]\nversion = \"1\"\n\
            command = [\"/bin/true\"]\n[services.strategy.canary]\nsteps = [{ setWeight = 50 }]\n";
        std::fs::write(dir.path().join("releases/r.toml"), release).expect("release");
        let path = dir.path().join("p.plan.toml");
        let plan = |bake: &str| {
            format!("document = \"releases/r.toml\"\n[[waves]]\nname = \"all\"\nbake = {bake}\n")
        };
        for zero in ["0", "\"0\"", "\"0s\"", "\"00m\""] {
            let spec =
                parse(&path, &plan(zero)).unwrap_or_else(|errors| panic!("{zero}: {errors:?}"));
            assert_eq!(spec.waves[0].bake, Duration::ZERO, "{zero}");
        }
        for bad in ["\"s\"", "\"\"", "\"soon\""] {
            assert!(parse(&path, &plan(bad)).is_err(), "{bad} must be refused");
        }
        let spec = parse(&path, &plan("\"90s\"")).expect("90s");
        assert_eq!(spec.waves[0].bake, Duration::from_secs(90));
    }

    #[test]
    fn containment_is_by_selector_keys() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect()
        };
        assert!(contains(&map(&[]), &map(&[("cohort", "pilot")])));
        assert!(contains(
            &map(&[("cohort", "pilot")]),
            &map(&[("cohort", "pilot"), ("region", "eu")])
        ));
        assert!(!contains(
            &map(&[("cohort", "pilot")]),
            &map(&[("region", "eu")])
        ));
        assert!(!contains(&map(&[("cohort", "pilot")]), &map(&[])));
    }
}

//! Template arguments: resolving `{{args.name}}` in a template's metrics.
//!
//! A value comes from the analysis step's `args`, else from the template's default; an argument
//! with neither is an error naming it. Substitution applies to the two conditions and to the
//! builtin provider's `version`. Pure: no clock, no I/O.

use std::collections::BTreeMap;

use crate::spec::{AnalysisTemplate, Metric, Provider};

/// What opens a placeholder.
const PLACEHOLDER_OPEN: &str = "{{";
/// What closes a placeholder.
const PLACEHOLDER_CLOSE: &str = "}}";
/// The prefix of an argument reference inside a placeholder.
const ARGUMENT_PREFIX: &str = "args.";

/// The value of every argument `template` declares, from `step_args` or the defaults.
pub fn resolve_arguments(
    template: &AnalysisTemplate,
    step_args: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for argument in &template.args {
        let value = step_args
            .get(&argument.name)
            .or(argument.value.as_ref())
            .ok_or_else(|| missing_argument(&template.name, &argument.name))?;
        values.insert(argument.name.clone(), value.clone());
    }
    Ok(values)
}

fn missing_argument(template: &str, argument: &str) -> String {
    format!(
        "analysis template \"{template}\": argument \"{argument}\" has no value \
         (pass it in the analysis step's args or give it a default)"
    )
}

/// `metric` with every `{{args.name}}` replaced by its value.
pub fn substitute_metric(
    template: &AnalysisTemplate,
    metric: &Metric,
    values: &BTreeMap<String, String>,
) -> Result<Metric, String> {
    let substitute = |text: &str| {
        substitute(text, values).map_err(|name| missing_argument(&template.name, &name))
    };
    let mut metric = metric.clone();
    if let Some(condition) = &metric.success_condition {
        metric.success_condition = Some(substitute(condition)?);
    }
    if let Some(condition) = &metric.failure_condition {
        metric.failure_condition = Some(substitute(condition)?);
    }
    match &mut metric.provider {
        Provider::Builtin(query) => query.version = substitute(&query.version)?,
        Provider::Prometheus(query) => {
            query.address = substitute(&query.address)?;
            query.query = substitute(&query.query)?;
        }
        Provider::Web(query) => {
            query.url = substitute(&query.url)?;
            for (_, value) in &mut query.headers {
                *value = substitute(value)?;
            }
            if let Some(body) = &query.body {
                query.body = Some(substitute(body)?);
            }
            if let Some(path) = &query.json_path {
                query.json_path = Some(substitute(path)?);
            }
        }
        Provider::Job(job) => {
            for argument in &mut job.command {
                *argument = substitute(argument)?;
            }
        }
        Provider::Judge(_) => {}
    }
    Ok(metric)
}

/// `text` with every `{{args.name}}` (spaces inside the braces allowed) replaced; the name of
/// the first argument without a value is the error. Other `{{…}}` text is left alone, since a
/// condition may legitimately contain a map inside braces.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
        let after_open = &rest[start + PLACEHOLDER_OPEN.len()..];
        let reference = after_open
            .find(PLACEHOLDER_CLOSE)
            .map(|end| (&after_open[..end], end))
            .and_then(|(inside, end)| {
                inside
                    .trim()
                    .strip_prefix(ARGUMENT_PREFIX)
                    .map(|name| (name, end))
            });
        match reference {
            Some((name, end)) => {
                let value = values.get(name).ok_or_else(|| name.to_owned())?;
                output.push_str(&rest[..start]);
                output.push_str(value);
                rest = &after_open[end + PLACEHOLDER_CLOSE.len()..];
            }
            None => {
                output.push_str(&rest[..start + PLACEHOLDER_OPEN.len()]);
                rest = after_open;
            }
        }
    }
    output.push_str(rest);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("threshold".to_owned(), "0.95".to_owned()),
            ("version".to_owned(), "2.0.0".to_owned()),
        ])
    }

    #[test]
    fn replaces_argument_references() {
        assert_eq!(
            substitute("result[0] >= {{args.threshold}}", &values()),
            Ok("result[0] >= 0.95".to_owned())
        );
        assert_eq!(
            substitute("{{ args.version }}-{{args.version}}", &values()),
            Ok("2.0.0-2.0.0".to_owned())
        );
    }

    #[test]
    fn leaves_other_braces_alone() {
        assert_eq!(
            substitute("all(result, {{a: 1}.a == #})", &values()),
            Ok("all(result, {{a: 1}.a == #})".to_owned())
        );
        assert_eq!(substitute("{{args.x", &values()), Ok("{{args.x".to_owned()));
    }

    #[test]
    fn names_a_missing_argument() {
        assert_eq!(
            substitute("{{args.missing}}", &values()),
            Err("missing".to_owned())
        );
    }
}

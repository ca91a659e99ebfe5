//! Rollout strategies: canary steps (and the capacity check that no step sends traffic to no
//! instance), background analysis, blue-green, and the `analysis` references checked against the
//! templates. Nothing here reads files.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;

pub(super) fn read_strategy<'v>(
    reader: &mut Reader<'_>,
    path: &str,
    value: &'v Value,
    templates: &BTreeMap<String, TemplateInfo>,
    service: &ServiceContext<'_>,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<Strategy> {
    let (kind, kind_path, kind_value) =
        one_of(reader, path, value, ("strategy", &STRATEGIES), &[], |_| {
            String::new()
        })?;
    if kind == "blueGreen" {
        return read_blue_green(
            reader, &kind_path, kind_value, templates, service, listeners,
        )
        .map(Strategy::BlueGreen);
    }
    let mut table = reader.table(&kind_path, kind_value)?;
    let steps = match table.get("steps") {
        Some((steps_path, steps_value)) => read_steps(
            reader,
            &steps_path,
            steps_value,
            templates,
            service.replicas,
        ),
        None => Some(Vec::new()),
    };
    let analysis = optional(table.get("analysis"), |path, value| {
        read_background_analysis(reader, path, value, templates, steps.as_deref())
    });
    table.finish(reader);
    Some(Strategy::Canary(CanaryStrategy {
        steps: steps?,
        analysis: analysis?,
    }))
}

/// `strategy.canary.analysis`: an analysis step plus `startingStep`, which must name a step
/// when the canary has steps.
pub(super) fn read_background_analysis(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    steps: Option<&[CanaryStep]>,
) -> Option<BackgroundAnalysis> {
    let mut table = reader.table(path, value)?;
    let starting_step = match table.get("startingStep") {
        Some((step_path, step_value)) => reader
            .int::<usize>(&step_path, step_value, 0..=i64::from(u32::MAX))
            .and_then(|index| match steps {
                Some(steps) if !steps.is_empty() && index >= steps.len() => {
                    reader.error(
                        step_value,
                        &step_path,
                        format!(
                            "step {index} does not exist: the canary has {} steps, numbered \
                             from 0",
                            steps.len()
                        ),
                    );
                    None
                }
                _ => Some(index),
            }),
        None => Some(0),
    };
    let analysis =
        read_analysis_fields(reader, &mut table, (path, value), templates, "the analysis");
    table.finish(reader);
    Some(BackgroundAnalysis {
        analysis: analysis?,
        starting_step: starting_step?,
    })
}

/// `strategy.blueGreen`. The active listener is the service's `traffic.http`: `activeService`
/// may repeat it (Argo requires the field) but never name another address.
pub(super) fn read_blue_green<'v>(
    reader: &mut Reader<'_>,
    path: &str,
    value: &'v Value,
    templates: &BTreeMap<String, TemplateInfo>,
    service: &ServiceContext<'_>,
    listeners: &mut Vec<Listener<'v>>,
) -> Option<BlueGreenStrategy> {
    let mut table = reader.table(path, value)?;
    let active = optional(table.get("activeService"), |active_path, active_value| {
        let text = reader.string(active_path, active_value)?;
        let address = read_listen_address(reader, active_path, active_value, text)?;
        let listen = service.listen?;
        let same = listen
            .parse::<SocketAddr>()
            .is_ok_and(|traffic| traffic == address);
        if !same {
            reader.error(
                active_value,
                active_path,
                format!(
                    "must equal traffic.http ({listen:?}): the active service is the \
                     service's traffic listener; leave activeService out or repeat it"
                ),
            );
            return None;
        }
        Some(())
    });
    let preview_listen = match table.get("previewService") {
        None => Some(None),
        Some((preview_path, preview_value)) => reader
            .string(&preview_path, preview_value)
            .and_then(|text| {
                let address = read_listen_address(reader, &preview_path, preview_value, text)?;
                listeners.push(Listener {
                    service_path: format!("{} (previewService)", service.path),
                    address,
                    value: preview_value,
                    path: preview_path.clone(),
                });
                Some(Some(text.to_string()))
            }),
    };
    let preview_replica_count = optional(
        table.get("previewReplicaCount"),
        |count_path, count_value| {
            let count = reader.int::<u32>(count_path, count_value, 1..=MAX_REPLICAS)?;
            match service.replicas {
                Some(replicas) if count > replicas => {
                    reader.error(
                        count_value,
                        count_path,
                        format!("{count} is more than the service's replicas ({replicas})"),
                    );
                    None
                }
                _ => Some(count),
            }
        },
    );
    let auto_promotion_entry = table.get("autoPromotionEnabled");
    let auto_promotion_enabled = match &auto_promotion_entry {
        Some((enabled_path, enabled_value)) => reader.boolean(enabled_path, enabled_value),
        None => Some(true),
    };
    let auto_promotion_seconds = optional(
        table.get("autoPromotionSeconds"),
        |seconds_path, seconds_value| {
            let seconds =
                reader.int::<u32>(seconds_path, seconds_value, 0..=i64::from(u32::MAX))?;
            if auto_promotion_enabled == Some(false) {
                reader.error(
                    seconds_value,
                    seconds_path,
                    "has no effect when autoPromotionEnabled is false: remove one of them",
                );
                return None;
            }
            Some(seconds)
        },
    );
    let pre_promotion_analysis = optional(
        table.get("prePromotionAnalysis"),
        |analysis_path, analysis_value| {
            read_analysis_step(
                reader,
                analysis_path,
                analysis_value,
                templates,
                "the analysis",
            )
        },
    );
    let post_promotion_analysis = optional(
        table.get("postPromotionAnalysis"),
        |analysis_path, analysis_value| {
            read_analysis_step(
                reader,
                analysis_path,
                analysis_value,
                templates,
                "the analysis",
            )
        },
    );
    let scale_down_delay_seconds = match table.get("scaleDownDelaySeconds") {
        Some((delay_path, delay_value)) => {
            reader.int::<u32>(&delay_path, delay_value, 0..=i64::from(u32::MAX))
        }
        None => Some(DEFAULT_SCALE_DOWN_DELAY_SECONDS),
    };
    let abort_scale_down_delay_seconds = match table.get("abortScaleDownDelaySeconds") {
        Some((delay_path, delay_value)) => {
            reader.int::<u32>(&delay_path, delay_value, 0..=i64::from(u32::MAX))
        }
        None => Some(DEFAULT_SCALE_DOWN_DELAY_SECONDS),
    };
    if let Some((steps_path, steps_value)) = table.get("steps") {
        reader.error(
            steps_value,
            &steps_path,
            "blue-green has no steps: use `canary` for a stepwise rollout",
        );
    }
    table.finish(reader);
    active?;
    Some(BlueGreenStrategy {
        preview_listen: preview_listen?,
        preview_replica_count: preview_replica_count?,
        auto_promotion_enabled: auto_promotion_enabled?,
        auto_promotion_seconds: auto_promotion_seconds?,
        pre_promotion_analysis: pre_promotion_analysis?,
        post_promotion_analysis: post_promotion_analysis?,
        scale_down_delay_seconds: scale_down_delay_seconds?,
        abort_scale_down_delay_seconds: abort_scale_down_delay_seconds?,
    })
}

pub(super) fn read_steps(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    replicas: Option<u32>,
) -> Option<Vec<CanaryStep>> {
    let elements = reader.array(path, value)?;
    let mut steps = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let step_path = index_path(path, index);
        if let Some(step) = read_step(reader, &step_path, element, templates) {
            steps.push((step, step_path, element));
        }
    }
    let complete = steps.len() == elements.len();
    if let Some(replicas) = replicas {
        check_canary_capacity(reader, replicas, &steps);
    }
    complete.then(|| steps.into_iter().map(|(step, _, _)| step).collect())
}

/// Report the first step after which the canary would take traffic with no instance to serve
/// it. The canary scale follows the weight (`ceil(replicas × weight / 100)`) unless a
/// `setCanaryScale` overrides it, until `matchTrafficWeight` restores the default.
pub(super) fn check_canary_capacity(
    reader: &mut Reader<'_>,
    replicas: u32,
    steps: &[(CanaryStep, String, &Value)],
) {
    let mut weight_percent: u8 = 0;
    let mut scale: Option<CanaryScale> = None;
    for (step, path, value) in steps {
        match step {
            CanaryStep::SetWeight(weight) => weight_percent = *weight,
            CanaryStep::SetCanaryScale(CanaryScale::MatchTrafficWeight) => scale = None,
            CanaryStep::SetCanaryScale(explicit) => scale = Some(*explicit),
            CanaryStep::Pause { .. } | CanaryStep::Analysis(_) => continue,
        }
        let instances = match scale {
            Some(CanaryScale::Replicas(count)) => u64::from(count),
            Some(CanaryScale::Weight(percent)) => scaled(replicas, percent),
            Some(CanaryScale::MatchTrafficWeight) | None => scaled(replicas, weight_percent),
        };
        if weight_percent > 0 && instances == 0 {
            reader.error(
                value,
                path,
                format!(
                    "the canary would take {weight_percent}% of traffic with 0 instances; \
                     scale the canary above 0 first"
                ),
            );
            return;
        }
    }
}

/// `ceil(replicas × percent / 100)`.
pub(super) fn scaled(replicas: u32, percent: u8) -> u64 {
    (u64::from(replicas) * u64::from(percent)).div_ceil(MAX_WEIGHT_PERCENT as u64)
}

pub(super) fn read_step(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
) -> Option<CanaryStep> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("step", &STEP_KINDS),
        &UNSUPPORTED_STEP_KINDS,
        |key| format!("`{key}` steps are not supported yet"),
    )?;
    match kind {
        "setWeight" => reader
            .int::<u8>(&kind_path, kind_value, 0..=MAX_WEIGHT_PERCENT)
            .map(CanaryStep::SetWeight),
        "pause" => {
            let mut table = reader.table(&kind_path, kind_value)?;
            let duration = table
                .get("duration")
                .map(|(path, value)| reader.duration(&path, value));
            table.finish(reader);
            match duration {
                None => Some(CanaryStep::Pause { duration: None }),
                Some(duration) => Some(CanaryStep::Pause {
                    duration: Some(duration?),
                }),
            }
        }
        "analysis" => read_analysis_step(reader, &kind_path, kind_value, templates, "the step")
            .map(CanaryStep::Analysis),
        _ => read_canary_scale(reader, &kind_path, kind_value).map(CanaryStep::SetCanaryScale),
    }
}

pub(super) fn read_canary_scale(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
) -> Option<CanaryScale> {
    let (kind, kind_path, kind_value) = one_of(
        reader,
        path,
        value,
        ("field", &["replicas", "weight", "matchTrafficWeight"]),
        &[],
        |_| String::new(),
    )?;
    match kind {
        "replicas" => reader
            .int::<u32>(&kind_path, kind_value, 0..=MAX_REPLICAS)
            .map(CanaryScale::Replicas),
        "weight" => reader
            .int::<u8>(&kind_path, kind_value, 0..=MAX_WEIGHT_PERCENT)
            .map(CanaryScale::Weight),
        _ => {
            if reader.boolean(&kind_path, kind_value)? {
                Some(CanaryScale::MatchTrafficWeight)
            } else {
                reader.error(kind_value, &kind_path, "must be true when given");
                None
            }
        }
    }
}

pub(super) fn read_analysis_step(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
    what: &str,
) -> Option<AnalysisStep> {
    let mut table = reader.table(path, value)?;
    let step = read_analysis_fields(reader, &mut table, (path, value), templates, what);
    table.finish(reader);
    step
}

/// `templates` and `args` of an analysis (a step, background analysis, or a blue-green
/// promotion analysis), checked against the templates: each must exist and get every argument
/// it has no default for.
pub(super) fn read_analysis_fields(
    reader: &mut Reader<'_>,
    table: &mut Table<'_>,
    (path, value): (&str, &Value),
    templates: &BTreeMap<String, TemplateInfo>,
    what: &str,
) -> Option<AnalysisStep> {
    let names = table
        .required(reader, "templates")
        .and_then(|(path, value)| read_template_refs(reader, &path, value, templates));
    let args = match table.get("args") {
        Some((path, value)) => read_args(reader, &path, value, true).map(|args| {
            args.into_iter()
                .filter_map(|arg| arg.value.map(|value| (arg.name, value)))
                .collect::<BTreeMap<_, _>>()
        }),
        None => Some(BTreeMap::new()),
    };
    let (names, args) = (names?, args?);
    let mut complete = true;
    for name in &names {
        let Some(TemplateInfo {
            args: Some(declared),
        }) = templates.get(name)
        else {
            continue;
        };
        for missing in declared
            .iter()
            .filter(|arg| arg.value.is_none() && !args.contains_key(&arg.name))
        {
            reader.error(
                value,
                path,
                format!(
                    "template `{name}` needs argument `{}`, which {what} does not set in `args`",
                    missing.name
                ),
            );
            complete = false;
        }
    }
    complete.then_some(AnalysisStep {
        templates: names,
        args,
    })
}

pub(super) fn read_template_refs(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    templates: &BTreeMap<String, TemplateInfo>,
) -> Option<Vec<String>> {
    let elements = reader.array(path, value)?;
    if elements.is_empty() {
        reader.error(value, path, "must name at least one template");
        return None;
    }
    let known: Vec<&str> = templates.keys().map(String::as_str).collect();
    let mut names = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            continue;
        };
        let name = table
            .required(reader, "templateName")
            .and_then(|(path, value)| {
                let name = reader.string(&path, value)?;
                if templates.contains_key(name) {
                    return Some(name.to_string());
                }
                let hint = suggest(name, &known)
                    .map(|close| format!(", did you mean `{close}`?"))
                    .unwrap_or_default();
                reader.error(
                    value,
                    &path,
                    format!("no analysis template named `{name}`{hint}"),
                );
                None
            });
        table.finish(reader);
        names.extend(name);
    }
    (names.len() == elements.len()).then_some(names)
}

/// `args = [{ name, value }]`; with `value_required`, every arg must carry a value (a step's
/// args), otherwise the value is a default (a template's args).
pub(super) fn read_args(
    reader: &mut Reader<'_>,
    path: &str,
    value: &Value,
    value_required: bool,
) -> Option<Vec<TemplateArg>> {
    let elements = reader.array(path, value)?;
    let mut args: Vec<TemplateArg> = Vec::with_capacity(elements.len());
    let mut complete = true;
    for (index, element) in elements.iter().enumerate() {
        let element_path = index_path(path, index);
        let Some(mut table) = reader.table(&element_path, element) else {
            complete = false;
            continue;
        };
        let name = table.required(reader, "name").and_then(|(path, value)| {
            let name = reader.non_empty_string(&path, value)?;
            if args.iter().any(|arg| arg.name == name) {
                reader.error(value, &path, format!("duplicate argument `{name}`"));
                return None;
            }
            Some(name.to_string())
        });
        let arg_value = if value_required {
            table.required(reader, "value").and_then(|(path, value)| {
                reader
                    .string(&path, value)
                    .map(|text| Some(text.to_string()))
            })
        } else {
            match table.get("value") {
                Some((path, value)) => reader
                    .string(&path, value)
                    .map(|text| Some(text.to_string())),
                None => Some(None),
            }
        };
        if let Some((value_from_path, value_from)) = table.get("valueFrom") {
            reader.error(
                value_from,
                &value_from_path,
                "valueFrom is not supported yet",
            );
            complete = false;
        }
        table.finish(reader);
        match (name, arg_value) {
            (Some(name), Some(value)) => args.push(TemplateArg { name, value }),
            _ => complete = false,
        }
    }
    complete.then_some(args)
}

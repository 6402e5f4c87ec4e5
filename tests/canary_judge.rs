//! One test (or more) per rule of the canary judge specification (Part B), through the
//! request format of `bowline canary judge`.

use bowline::canary::input::parse_request;
use bowline::canary::judge::judge;
use bowline::canary::{JudgeError, report};
use serde_json::{Value, json};

/// Judges a request; the result as JSON.
fn run(request: Value) -> Result<Value, JudgeError> {
    let r = parse_request(&request.to_string())?;
    let result = judge(&r.config, r.thresholds, &r.pairs)?;
    Ok(report::json::judge_result(&result))
}

fn metric(name: &str, groups: &[&str], canary: Value) -> Value {
    json!({"name": name, "groups": groups, "analysisConfigurations": {"canary": canary}})
}

fn request(metrics: Vec<Value>, weights: Value, data: Value) -> Value {
    json!({
        "config": {"metrics": metrics, "classifier": {"groupWeights": weights}},
        "thresholds": {"pass": 95.0, "marginal": 75.0},
        "data": data,
    })
}

fn one(canary: Value, control: Value, experiment: Value) -> Value {
    let r = run(request(
        vec![metric("m", &["g"], canary)],
        json!({}),
        json!({"m": {"control": control, "experiment": experiment}}),
    ))
    .expect("judged");
    r["results"][0].clone()
}

fn base() -> Vec<f64> {
    (0..50).map(|i| 100.0 + ((i * 37) % 17) as f64).collect()
}

fn scaled(k: f64) -> Vec<f64> {
    base().iter().map(|v| v * k).collect()
}

// ---------------------------------------------------------------- §1 inputs

#[test]
fn unknown_metric_in_pairs_fails_the_whole_call() {
    let e = run(json!({
        "config": {"metrics": [metric("a", &["g"], json!({}))]},
        "thresholds": {"pass": 95, "marginal": 75},
        "data": [{"name": "zzz", "values": {"control": [1], "experiment": [1]}}],
    }))
    .expect_err("unknown metric");
    assert_eq!(e.to_string(), "Could not find metric config for zzz");
    let e = run(request(vec![], json!({}), json!({"zzz": {}}))).expect_err("unknown");
    assert!(matches!(e, JudgeError::UnknownMetric(_)));
}

#[test]
fn pairs_match_the_first_config_metric_and_keep_input_order() {
    let r = run(json!({
        "config": {"metrics": [
            metric("m", &["first"], json!({"direction": "decrease"})),
            metric("m", &["second"], json!({})),
            metric("n", &["n"], json!({})),
        ]},
        "thresholds": {"pass": 95, "marginal": 75},
        "data": [
            {"name": "n", "id": "p1", "tags": {"zone": "a"}, "values": {"control": base(), "experiment": base()}},
            {"name": "m", "id": "p2", "values": {"control": base(), "experiment": scaled(1.5)}},
        ],
    }))
    .expect("judged");
    assert_eq!(r["results"][0]["name"], "n");
    assert_eq!(r["results"][0]["id"], "p1");
    assert_eq!(r["results"][0]["tags"]["zone"], "a");
    assert_eq!(r["results"][1]["groups"], json!(["first"]));
    // direction decrease (first config) lets the increase pass
    assert_eq!(r["results"][1]["classification"], "Pass");
}

#[test]
fn lenient_settings_parse_like_kayenta() {
    let high =
        |canary: Value| one(canary, json!(base()), json!(scaled(1.5)))["classification"].clone();
    // unknown direction → either
    assert_eq!(high(json!({"direction": "upwards"})), "High");
    // measure other than "cles" → meanRatio (1.5 ≥ 1.4)
    assert_eq!(
        high(json!({"effectSize": {"measure": "ratio", "allowedIncrease": 1.4}})),
        "High"
    );
    // cles defaults are 0.5 and CLES is 1.0 here
    assert_eq!(high(json!({"effectSize": {"measure": "cles"}})), "High");
    // explicit null number reads 0.0: allowedIncrease 0 lets any High through
    assert_eq!(
        high(json!({"effectSize": {"allowedIncrease": null}})),
        "High"
    );
    // explicit null boolean reads false
    let r = one(json!({"critical": null}), json!(base()), json!(scaled(1.5)));
    assert_eq!(r["critical"], false);
    // unknown nanStrategy → remove, unknown outlier strategy → keep
    let r = one(
        json!({"nanStrategy": "none", "outliers": {"strategy": "clip"}}),
        json!([1.0, "NaN", 2.0, 1000.0]),
        json!([1.0, 2.0, null]),
    );
    assert_eq!(r["controlMetadata"]["stats"]["count"], 3);
    assert_eq!(r["experimentMetadata"]["stats"]["count"], 2);
}

#[test]
fn type_errors_in_settings_fail_the_whole_call() {
    for canary in [
        json!({"critical": "true"}),
        json!({"mustHaveData": 1}),
        json!({"direction": null}),
        json!({"effectSize": {"allowedIncrease": "1.2"}}),
        json!({"effectSize": {"allowedIncrease": 3_000_000_000_i64}}),
    ] {
        let e = run(request(
            vec![metric("m", &["g"], canary.clone())],
            json!({}),
            json!({}),
        ))
        .expect_err("type error");
        assert!(matches!(e, JudgeError::Config(_)), "{canary}: {e}");
    }
    // integers within int range and floats are fine
    let r = one(
        json!({"effectSize": {"allowedIncrease": 1}}),
        json!(base()),
        json!(scaled(1.5)),
    );
    assert_eq!(r["classification"], "High");
}

#[test]
fn outlier_factor_must_be_positive_when_removing() {
    let e = run(request(
        vec![metric(
            "m",
            &["g"],
            json!({"outliers": {"strategy": "remove", "outlierFactor": 0}}),
        )],
        json!({}),
        json!({"m": {"control": [1, 2], "experiment": [1, 2]}}),
    ))
    .expect_err("factor 0");
    assert!(matches!(e, JudgeError::OutlierFactor { .. }));
    // with keep the factor is not looked at
    one(
        json!({"outliers": {"strategy": "keep", "outlierFactor": 0}}),
        json!([1]),
        json!([1]),
    );
}

#[test]
fn thresholds_come_from_the_request_then_the_config() {
    let data = json!({"m": {"control": base(), "experiment": base()}});
    let mut r = json!({
        "config": {"metrics": [metric("m", &["g"], json!({}))],
                   "classifier": {"scoreThresholds": {"pass": 101, "marginal": 50}}},
        "data": data,
    });
    assert_eq!(
        run(r.clone()).expect("judged")["score"]["classification"],
        "Marginal"
    );
    r["thresholds"] = json!({"pass": 100, "marginal": 50});
    assert_eq!(
        run(r.clone()).expect("judged")["score"]["classification"],
        "Pass"
    );
    r["config"]["classifier"] = json!({});
    r.as_object_mut().expect("object").remove("thresholds");
    assert!(matches!(run(r), Err(JudgeError::Input(_))));
}

#[test]
fn null_group_weights_are_empty() {
    let r = run(json!({
        "config": {"metrics": [metric("m", &["g"], json!({}))], "classifier": {"groupWeights": null}},
        "thresholds": {"pass": 95, "marginal": 75},
        "data": {"m": {"control": base(), "experiment": base()}},
    }))
    .expect("judged");
    assert_eq!(r["score"]["score"], 100.0);
}

#[test]
fn nan_can_be_null_string_or_bare_token() {
    let text = r#"{"config": {"metrics": [{"name": "m", "groups": ["g"]}]},
        "thresholds": {"pass": 95, "marginal": 75},
        "data": {"m": {"control": [1, NaN, 2, null, "NaN", 3], "experiment": [1, 2, 3]}}}"#;
    let r = parse_request(text).expect("parses");
    assert_eq!(r.pairs[0].control.len(), 6);
    assert_eq!(r.pairs[0].control.iter().filter(|v| v.is_nan()).count(), 3);
    assert!(parse_request(&text.replace("null", "\"x\"")).is_err());
}

#[test]
fn config_metrics_without_data_are_empty_series() {
    let r = run(request(
        vec![
            metric("a", &["g"], json!({})),
            metric("b", &["g"], json!({})),
        ],
        json!({}),
        json!({"a": {"control": base(), "experiment": base()}}),
    ))
    .expect("judged");
    assert_eq!(r["results"][1]["classification"], "Nodata");
    assert_eq!(
        r["results"][1]["classificationReason"],
        "Missing data for b"
    );
}

#[test]
fn bowline_canary_config_documents_are_accepted_and_validated() {
    let doc = json!({
        "apiVersion": "bowline/v1", "kind": "CanaryConfig",
        "metadata": {"name": "c"},
        "spec": {
            "metrics": [{"name": "lat", "groups": ["latency"], "query": "up", "direction": "increase",
                         "effectSize": {"allowedIncrease": 1.6}}],
            "classifier": {"groupWeights": {"latency": 100}, "scoreThresholds": {"marginal": 75, "pass": 95}}
        }
    });
    let data = json!({"lat": {"control": base(), "experiment": scaled(1.5)}});
    let r = run(json!({"config": doc, "data": data})).expect("judged");
    // effect 1.5 < allowedIncrease 1.6 → Pass; thresholds from the document
    assert_eq!(r["results"][0]["classification"], "Pass");
    let mut bad = doc.clone();
    bad["spec"]["metrics"][0]["direction"] = json!("upwards");
    assert!(matches!(
        run(json!({"config": bad, "data": data})),
        Err(JudgeError::Config(_))
    ));
}

// ---------------------------------------------------------------- §2 preprocessing

#[test]
fn stats_describe_the_transformed_series() {
    let r = one(
        json!({"nanStrategy": "replace"}),
        json!([1.0, null, 3.0]),
        json!([]),
    );
    assert_eq!(
        r["controlMetadata"]["stats"],
        json!({"min": 0.0, "max": 3.0, "mean": 4.0 / 3.0, "std": 1.5275252316519468, "count": 3})
    );
    assert_eq!(
        r["experimentMetadata"]["stats"],
        json!({"min": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0, "count": 0})
    );
}

#[test]
fn outlier_removal_drops_only_far_points() {
    let mut control: Vec<f64> = (0..200).map(|i| 10.0 + (i % 7) as f64).collect();
    control.push(10_000.0);
    let r = one(
        json!({"outliers": {"strategy": "remove"}}),
        json!(control),
        json!(control),
    );
    assert_eq!(r["controlMetadata"]["stats"]["count"], 200);
    assert_eq!(r["controlMetadata"]["stats"]["max"], 16.0);
}

// ---------------------------------------------------------------- §3 classification

#[test]
fn nodata_rules() {
    let empty = json!([]);
    let data = json!(base());
    let r = one(json!({}), data.clone(), empty.clone());
    assert_eq!(
        (r["classification"].clone(), r["critical"].clone()),
        (json!("Nodata"), json!(false))
    );
    assert_eq!(r["resultMetadata"]["ratio"], 1.0);
    let r = one(json!({"critical": true}), data.clone(), empty.clone());
    assert_eq!(
        (r["classification"].clone(), r["critical"].clone()),
        (json!("Nodata"), json!(true))
    );
    let r = one(json!({"mustHaveData": true}), empty.clone(), data.clone());
    assert_eq!(
        (r["classification"].clone(), r["critical"].clone()),
        (json!("NodataFailMetric"), json!(false))
    );
    let r = one(
        json!({"mustHaveData": true, "critical": true}),
        data.clone(),
        empty.clone(),
    );
    assert_eq!(
        (r["classification"].clone(), r["critical"].clone()),
        (json!("Nodata"), json!(true))
    );
    // all-NaN under remove is empty too
    let r = one(json!({}), data.clone(), json!([null, null]));
    assert_eq!(r["classification"], "Nodata");
    // replace: Pass without reason, even for critical + mustHaveData
    let r = one(
        json!({"nanStrategy": "replace", "critical": true, "mustHaveData": true}),
        data,
        empty,
    );
    assert_eq!(r["classification"], "Pass");
    assert!(r.get("classificationReason").is_none());
    assert_eq!(r["critical"], false);
}

#[test]
fn identical_and_single_valued_data_pass() {
    let r = one(json!({}), json!([3.0, 1.0, 2.0]), json!([1.0, 2.0, 3.0]));
    assert_eq!(
        r["classificationReason"],
        "The Canary and Baseline data are identical"
    );
    let r = one(json!({}), json!([5.0, 5.0, 5.0]), json!([5.0, 5.0]));
    assert_eq!(r["classification"], "Pass");
    assert!(r.get("classificationReason").is_none());
    assert_eq!(r["resultMetadata"]["ratio"], 1.0);
}

#[test]
fn constant_series_get_tie_breaking_noise() {
    let r = one(json!({}), json!(vec![5.0; 20]), json!(vec![10.0; 20]));
    assert_eq!(r["classification"], "High");
    let ratio = r["resultMetadata"]["ratio"].as_f64().expect("ratio");
    assert!((ratio - 2.0).abs() < 1e-3 && ratio != 2.0, "{ratio}");
    // stats are taken before the noise
    assert_eq!(r["experimentMetadata"]["stats"]["std"], 0.0);
}

#[test]
fn direction_decides_which_change_fails() {
    let cases = [
        ("increase", 1.5, "High"),
        ("increase", 0.7, "Pass"),
        ("decrease", 1.5, "Pass"),
        ("decrease", 0.7, "Low"),
        ("either", 1.5, "High"),
        ("either", 0.7, "Low"),
    ];
    for (direction, k, label) in cases {
        let r = one(
            json!({"direction": direction}),
            json!(base()),
            json!(scaled(k)),
        );
        assert_eq!(r["classification"], label, "{direction} ×{k}");
    }
    let r = one(json!({}), json!(base()), json!(scaled(0.7)));
    assert_eq!(r["classificationReason"], "m was classified as Low");
}

#[test]
fn effect_size_gates_high_and_low() {
    let r = one(
        json!({"effectSize": {"allowedIncrease": 1.6}}),
        json!(base()),
        json!(scaled(1.5)),
    );
    assert_eq!(r["classification"], "Pass");
    let r = one(
        json!({"effectSize": {"allowedDecrease": 0.6}}),
        json!(base()),
        json!(scaled(0.7)),
    );
    assert_eq!(r["classification"], "Pass");
    let r = one(
        json!({"effectSize": {"allowedDecrease": 0.8}}),
        json!(base()),
        json!(scaled(0.7)),
    );
    assert_eq!(r["classification"], "Low");
}

#[test]
fn critical_escalation_follows_the_critical_gates() {
    let r = one(json!({"critical": true}), json!(base()), json!(scaled(1.5)));
    assert_eq!(r["critical"], true);
    assert_eq!(
        r["classificationReason"],
        "The metric m was classified as High (Critical)"
    );
    let r = one(
        json!({"critical": true, "effectSize": {"criticalIncrease": 2.0}}),
        json!(base()),
        json!(scaled(1.5)),
    );
    assert_eq!(
        (r["classification"].clone(), r["critical"].clone()),
        (json!("High"), json!(false))
    );
    assert_eq!(r["classificationReason"], "m was classified as High");
    let r = one(json!({"critical": true}), json!(base()), json!(scaled(0.5)));
    assert_eq!(
        r["classificationReason"],
        "The metric m was classified as Low (Critical)"
    );
}

#[test]
fn all_tied_one_vs_one_is_an_error() {
    let r = one(json!({"critical": true}), json!([1.0]), json!([1.5]));
    assert_eq!(r["classification"], "Error");
    assert_eq!(r["classificationReason"], "Metric Classification Failed");
    assert_eq!(r["critical"], false);
    assert!(r.get("resultMetadata").is_none());
    assert_eq!(r["experimentMetadata"]["stats"]["count"], 1);
}

#[test]
fn small_separated_samples_are_high() {
    let r = one(
        json!({}),
        json!([10.0, 11.0, 12.0]),
        json!([20.0, 21.0, 22.0]),
    );
    assert_eq!(r["classification"], "High");
}

// ---------------------------------------------------------------- §5 effect size

#[test]
fn zero_mean_makes_the_ratio_nan_and_disables_the_gates() {
    let control: Vec<f64> = (0..30)
        .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
        .collect();
    let experiment: Vec<f64> = (0..30).map(|i| 5.0 + (i % 3) as f64).collect();
    let r = one(
        json!({"effectSize": {"allowedIncrease": 100.0}}),
        json!(control),
        json!(experiment),
    );
    assert_eq!(r["resultMetadata"]["ratio"], "NaN");
    assert_eq!(r["classification"], "High");
}

#[test]
fn negative_metrics_invert_the_ratio() {
    let control: Vec<f64> = base().iter().map(|v| -v).collect();
    let experiment: Vec<f64> = base().iter().map(|v| -v * 0.5).collect();
    // canary is significantly higher (less negative) but the ratio is 0.5 < allowedIncrease 1
    let r = one(
        json!({"direction": "increase"}),
        json!(control),
        json!(experiment),
    );
    assert_eq!(r["classification"], "Pass");
    assert_eq!(r["resultMetadata"]["ratio"], 0.5);
}

#[test]
fn cles_is_the_gate_but_the_ratio_is_reported() {
    let r = one(
        json!({"effectSize": {"measure": "cles", "allowedIncrease": 0.9}}),
        json!(base()),
        json!(scaled(1.5)),
    );
    // fully separated: CLES 1.0 ≥ 0.9
    assert_eq!(r["classification"], "High");
    assert!((r["resultMetadata"]["ratio"].as_f64().expect("ratio") - 1.5).abs() < 1e-12);
}

// ---------------------------------------------------------------- §6 scoring

fn scored(metrics: Vec<Value>, weights: Value, data: Value) -> Value {
    run(request(metrics, weights, data)).expect("judged")
}

fn pass_data() -> Value {
    json!({"control": base(), "experiment": base()})
}

fn high_data() -> Value {
    json!({"control": base(), "experiment": scaled(1.5)})
}

fn group_score(r: &Value, name: &str) -> f64 {
    r["groupScores"]
        .as_array()
        .expect("list")
        .iter()
        .find(|g| g["name"] == name)
        .and_then(|g| g["score"].as_f64())
        .expect("group")
}

#[test]
fn muted_metrics_are_reported_but_not_scored() {
    let r = scored(
        vec![
            metric("a", &["g"], json!({"muted": true, "critical": true})),
            metric("b", &["g"], json!({})),
        ],
        json!({}),
        json!({"a": high_data(), "b": pass_data()}),
    );
    assert_eq!(r["results"][0]["muted"], true);
    assert_eq!(r["results"][0]["classification"], "High");
    assert_eq!(r["score"]["score"], 100.0);
}

#[test]
fn a_metric_in_two_groups_counts_in_both() {
    let r = scored(
        vec![
            metric("a", &["x", "y"], json!({})),
            metric("b", &["y"], json!({})),
        ],
        json!({"x": 50, "y": 50}),
        json!({"a": high_data(), "b": pass_data()}),
    );
    assert_eq!(group_score(&r, "x"), 0.0);
    assert_eq!(group_score(&r, "y"), 50.0);
    assert_eq!(r["score"]["score"], 25.0);
    assert_eq!(r["groupScores"][0]["classification"], "");
}

#[test]
fn groups_with_only_nodata_or_error_count_as_100() {
    let r = scored(
        vec![
            metric("a", &["empty"], json!({})),
            metric("e", &["empty"], json!({})),
            metric("b", &["ok"], json!({})),
            metric("c", &["ok"], json!({})),
            metric("d", &["ok"], json!({})),
        ],
        json!({"empty": 50, "ok": 50}),
        json!({"a": {"control": base()}, "e": {"control": [1.0], "experiment": [1.5]},
               "b": pass_data(), "c": pass_data(), "d": high_data()}),
    );
    assert_eq!(r["results"][1]["classification"], "Error");
    assert_eq!(group_score(&r, "empty"), 0.0);
    // 1 Nodata of 5 (< 50%): 100·0.5 + (2/3·100)·0.5
    assert_eq!(r["score"]["score"], 83.33);
}

#[test]
fn first_critical_failure_zeroes_the_score() {
    let r = scored(
        vec![
            metric("a", &["g"], json!({})),
            metric("b", &["g"], json!({"critical": true})),
            metric("c", &["g"], json!({"critical": true})),
        ],
        json!({}),
        json!({"a": high_data(), "b": {"control": base()}, "c": high_data()}),
    );
    assert_eq!(r["score"]["score"], 0.0);
    assert_eq!(r["score"]["classification"], "Fail");
    assert_eq!(
        r["score"]["classificationReason"],
        "Canary Failed: Missing data for b"
    );
}

#[test]
fn half_or_more_nodata_zeroes_the_score_but_nodatafailmetric_does_not_count() {
    let r = scored(
        vec![
            metric("a", &["g"], json!({})),
            metric("b", &["g"], json!({})),
        ],
        json!({}),
        json!({"a": {"control": base()}, "b": pass_data()}),
    );
    assert_eq!(
        r["score"]["classificationReason"],
        "Canary Failed: 50% or more metrics returned NODATA"
    );
    let r = scored(
        vec![
            metric("a", &["g"], json!({"mustHaveData": true})),
            metric("b", &["g"], json!({})),
        ],
        json!({}),
        json!({"a": {"control": base()}, "b": pass_data()}),
    );
    assert_eq!(r["score"]["classificationReason"], "");
    assert_eq!(r["score"]["score"], 50.0);
}

#[test]
fn zero_scored_results_do_not_trigger_the_nodata_rule() {
    let r = scored(
        vec![metric("a", &["g"], json!({"muted": true}))],
        json!({}),
        json!({"a": {"control": base()}}),
    );
    assert_eq!(r["score"]["score"], 0.0);
    assert_eq!(r["score"]["classificationReason"], "");
    assert_eq!(r["groupScores"], json!([]));
}

#[test]
fn unweighted_groups_share_the_rest_and_missing_groups_lose_their_weight() {
    let r = scored(
        vec![
            metric("a", &["w"], json!({})),
            metric("b", &["u1"], json!({})),
            metric("c", &["u2"], json!({})),
        ],
        json!({"w": 40, "absent": 20}),
        json!({"a": pass_data(), "b": pass_data(), "c": high_data()}),
    );
    // w: 100·0.4, u1: 100·0.2, u2: 0·0.2 (the absent group's 20 is lost)
    assert_eq!(r["score"]["score"], 60.0);
    assert_eq!(r["score"]["classification"], "Fail");
}

#[test]
fn verdict_thresholds_and_half_up_rounding() {
    use bowline::canary::judge::round_half_up_2;
    assert_eq!(round_half_up_2(49.99999999999999), 50.0);
    assert_eq!(round_half_up_2(1.005), 1.01); // decimal string "1.005", not the binary value
    assert_eq!(round_half_up_2(83.33333333333333), 83.33);
    assert_eq!(round_half_up_2(0.004), 0.0);
    assert_eq!(round_half_up_2(-2.675), -2.68);
    let data = json!({"a": pass_data(), "b": pass_data(), "c": pass_data(), "d": high_data()});
    let metrics = || {
        vec![
            metric("a", &["g"], json!({})),
            metric("b", &["g"], json!({})),
            metric("c", &["g"], json!({})),
            metric("d", &["g"], json!({})),
        ]
    };
    let mut req = request(metrics(), json!({}), data);
    for (pass, marginal, verdict) in [
        (75.0, 50.0, "Pass"),
        (80.0, 75.0, "Marginal"),
        (80.0, 76.0, "Fail"),
    ] {
        req["thresholds"] = json!({"pass": pass, "marginal": marginal});
        let r = run(req.clone()).expect("judged");
        assert_eq!(r["score"]["score"], 75.0);
        assert_eq!(r["score"]["classification"], verdict, "{pass}/{marginal}");
    }
}

// ---------------------------------------------------------------- §7 result object

#[test]
fn result_object_shape() {
    let mut tweaked = base();
    tweaked[0] += 0.5;
    let r = scored(
        vec![metric("m", &["g"], json!({}))],
        json!({}),
        json!({"m": {"control": base(), "experiment": tweaked}}),
    );
    assert_eq!(r["judgeName"], "NetflixACAJudge-v1.0");
    let m = &r["results"][0];
    assert!(m.get("classificationReason").is_none());
    assert!(m.get("id").is_none());
    assert_eq!(m["tags"], json!({}));
    for key in [
        "experimentMetadata",
        "controlMetadata",
        "resultMetadata",
        "critical",
        "muted",
        "groups",
    ] {
        assert!(m.get(key).is_some(), "{key}");
    }
    assert_eq!(
        r["score"],
        json!({"score": 100.0, "classification": "Pass", "classificationReason": ""})
    );
}

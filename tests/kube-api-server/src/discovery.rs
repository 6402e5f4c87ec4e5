//! Discovery documents, OpenAPI documents and `Table` output.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// The media type of aggregated discovery responses.
pub(crate) const AGGREGATED: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery (v2).
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=APIGroupDiscoveryList") && p.contains("v=v2") && !p.contains("v=v2beta1")
    })
}

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": crate::KUBERNETES_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-02-12T21:17:52Z",
        "goVersion": "go1.23.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn api_versions(host: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    })
}

/// The groups (other than core) with their versions, in registration order.
fn groups(types: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) => {
                if !versions.contains(&t.version) {
                    versions.push(t.version.clone());
                }
            }
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    out
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub(crate) fn api_group_list(types: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if the group exists.
pub(crate) fn api_group(types: &[ResourceType], group: &str) -> Option<Value> {
    groups(types)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, v)| {
            let mut doc = group_json(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub(crate) fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in &served {
        resources.push(t.discovery_entry());
        resources.extend(t.subresource_discovery_entries());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// Aggregated discovery for `/api` (core) or `/apis` (named groups).
pub(crate) fn aggregated(types: &[ResourceType], core: bool) -> Value {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for t in types.iter().filter(|t| t.group.is_empty() == core) {
        let versions = by_group.entry(t.group.clone()).or_insert_with(|| {
            order.push(t.group.clone());
            Vec::new()
        });
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    let items: Vec<Value> = order
        .iter()
        .map(|group| {
            let versions: Vec<Value> = by_group[group]
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = types
                        .iter()
                        .filter(|t| &t.group == group && &t.version == version)
                        .map(|t| {
                            let mut r = json!({
                                "resource": t.plural,
                                "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular,
                                "verbs": t.verbs(),
                            });
                            if !t.short_names.is_empty() {
                                r["shortNames"] = json!(t.short_names);
                            }
                            if !t.categories.is_empty() {
                                r["categories"] = json!(t.categories);
                            }
                            let subresources = t.aggregated_subresources();
                            if !subresources.is_empty() {
                                r["subresources"] = json!(subresources);
                            }
                            r
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/openapi/v2`: a valid document without paths or definitions.
pub(crate) fn openapi_v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": {},
        "definitions": {},
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group/version documents.
pub(crate) fn openapi_v3_index(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types {
        let p = gv_path(&t.group, &t.version);
        let hash = hash_hex(&format!("{p}{}", types.len()));
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    paths.insert(
        "version".into(),
        json!({"serverRelativeURL": "/openapi/v3/version?hash=0"}),
    );
    json!({"paths": paths})
}

fn hash_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "description": name, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(t: &ResourceType, action: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params.iter().map(|p| param(p)).collect();
    json!({
        "description": format!("{action} {}", t.kind),
        "operationId": format!("{action}{}", t.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
    })
}

/// `/openapi/v3/<api|apis/group>/<version>`: operations and parameters, minimal schemas.
pub(crate) fn openapi_v3_doc(types: &[ResourceType], path: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| gv_path(&t.group, &t.version) == path)
        .collect();
    if served.is_empty() {
        return None;
    }
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut patch_params = write.to_vec();
    patch_params.push("force");
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for t in &served {
        let prefix = format!("/{path}");
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(t, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion"]),
                "post": operation(t, "post", &write),
                "delete": operation(t, "deletecollection", &["dryRun", "labelSelector"]),
            }),
        );
        let item = json!({
            "get": operation(t, "get", &["pretty"]),
            "put": operation(t, "put", &write),
            "patch": operation(t, "patch", &patch_params),
            "delete": operation(t, "delete", &["dryRun", "propagationPolicy", "gracePeriodSeconds"]),
        });
        paths.insert(format!("{collection}/{{name}}"), item.clone());
        if t.has_status {
            paths.insert(format!("{collection}/{{name}}/status"), item);
        }
        let schema_name = if t.group.is_empty() {
            format!("io.k8s.api.core.{}.{}", t.version, t.kind)
        } else {
            format!("{}.{}.{}", t.group, t.version, t.kind)
        };
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": t.group, "version": t.version, "kind": t.kind}],
                "x-kubernetes-preserve-unknown-fields": true,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Whether the `Accept` header asks for `PartialObjectMetadata` (metadata-only reads).
pub(crate) fn wants_metadata(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| {
        let p = first.replace(' ', "");
        p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io")
    })
}

/// The `PartialObjectMetadata` of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    })
}

/// Whether the `Accept` header asks for a `meta.k8s.io/v1` `Table`.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table")
            && p.contains("v=v1")
            && !p.contains("v=v1beta1")
            && p.contains("g=meta.k8s.io")
    })
}

fn age(obj: &Value) -> String {
    let Some(created) = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - created.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn column(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": 0})
}

/// Computes the cells of one table row.
type CellsFn = dyn Fn(&Value) -> Vec<Value>;

/// A `Table` of the objects, with the usual kubectl columns for deployments and pods.
pub(crate) fn table(t: &ResourceType, objects: &[Value], resource_version: &str) -> Value {
    let (columns, cells): (Vec<Value>, Box<CellsFn>) = match (t.group.as_str(), t.kind.as_str()) {
        ("apps", "Deployment") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Ready", "string", "Number of the pod with ready state"),
                column(
                    "Up-to-date",
                    "string",
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                column(
                    "Available",
                    "string",
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                let s = &o["status"];
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!(
                        "{}/{}",
                        s["readyReplicas"].as_i64().unwrap_or(0),
                        o["spec"]["replicas"].as_i64().unwrap_or(0)
                    )),
                    json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                    json!(s["availableReplicas"].as_i64().unwrap_or(0)),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "Pod") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column(
                    "Ready",
                    "string",
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                column(
                    "Status",
                    "string",
                    "The aggregate status of the containers in this pod.",
                ),
                column(
                    "Restarts",
                    "string",
                    "The number of times the containers in this pod have been restarted.",
                ),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                let statuses = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                let waiting = statuses
                    .iter()
                    .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
                let phase = o["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string();
                let restarts: i64 = statuses
                    .iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum();
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{ready}/{total}")),
                    json!(waiting.unwrap_or(phase)),
                    json!(restarts),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "Namespace") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Status", "string", "The status of the namespace"),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(o["status"]["phase"].as_str().unwrap_or("Active")),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "Service") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Type", "string", "The type of the service."),
                column("Cluster-IP", "string", "The IP address of the service."),
                column(
                    "External-IP",
                    "string",
                    "The external IP address of the service.",
                ),
                column("Port(s)", "string", "The ports of the service."),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let proto = p["protocol"].as_str().unwrap_or("TCP");
                        match p["nodePort"].as_i64() {
                            Some(np) => format!("{}:{np}/{proto}", p["port"]),
                            None => format!("{}/{proto}", p["port"]),
                        }
                    })
                    .collect();
                let external = if o["spec"]["type"] == "LoadBalancer" {
                    "<pending>"
                } else {
                    "<none>"
                };
                vec![
                    o["metadata"]["name"].clone(),
                    o["spec"]["type"].clone(),
                    json!(o["spec"]["clusterIP"].as_str().unwrap_or("None")),
                    json!(external),
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    }),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "ConfigMap" | "Secret") => {
            let secret = t.kind == "Secret";
            let mut cols = vec![column(
                "Name",
                "string",
                "Name must be unique within a namespace.",
            )];
            if secret {
                cols.push(column("Type", "string", "The type of the secret"));
            }
            cols.push(column("Data", "string", "Number of data entries"));
            cols.push(column("Age", "string", "CreationTimestamp"));
            (
                cols,
                Box::new(move |o: &Value| {
                    let count = o["data"].as_object().map_or(0, |m| m.len())
                        + o["binaryData"].as_object().map_or(0, |m| m.len());
                    let mut row = vec![o["metadata"]["name"].clone()];
                    if secret {
                        row.push(o["type"].clone());
                    }
                    row.push(json!(count));
                    row.push(json!(age(o)));
                    row
                }),
            )
        }
        ("apps", "ReplicaSet") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Desired", "integer", "Number of desired pods."),
                column("Current", "integer", "Number of actually running pods."),
                column("Ready", "integer", "Number of pods ready."),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(o["spec"]["replicas"].as_i64().unwrap_or(0)),
                    json!(o["status"]["replicas"].as_i64().unwrap_or(0)),
                    json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0)),
                    json!(age(o)),
                ]
            }),
        ),
        ("apps", "StatefulSet") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Ready", "string", "Number of the pod with ready state"),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!(
                        "{}/{}",
                        o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                        o["spec"]["replicas"].as_i64().unwrap_or(0)
                    )),
                    json!(age(o)),
                ]
            }),
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Created At", "date", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o["metadata"]["creationTimestamp"].clone(),
                ]
            }),
        ),
        _ => (
            vec![
                column("Name", "string", "Name must be unique within a namespace."),
                column("Age", "string", "CreationTimestamp"),
            ],
            Box::new(|o: &Value| vec![o["metadata"]["name"].clone(), json!(age(o))]),
        ),
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "cells": cells(o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

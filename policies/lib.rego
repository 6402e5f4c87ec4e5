# Helpers shared by the built-in policies; repository policies may use them too
# (`import data.bowline.lib`).
package bowline.lib

# Kinds whose pods are described by spec.template.spec.
template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}

# Kinds that run the application's long-lived pods.
workload_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

# The pod spec of the object, with the dotted path of the field holding it.
pod_spec := {"path": "spec", "spec": input.object.spec} if {
	input.object.kind == "Pod"
	is_object(input.object.spec)
}

pod_spec := {"path": "spec.template.spec", "spec": input.object.spec.template.spec} if {
	input.object.kind in template_kinds
	is_object(input.object.spec.template.spec)
}

pod_spec := {"path": "spec.jobTemplate.spec.template.spec", "spec": input.object.spec.jobTemplate.spec.template.spec} if {
	input.object.kind == "CronJob"
	is_object(input.object.spec.jobTemplate.spec.template.spec)
}

# Every container and init container of the object: the container, the path of its field,
# and whether it is an init container.
containers contains {"container": c, "path": sprintf("%s.%s[%d]", [pod_spec.path, group, i]), "init": group == "initContainers"} if {
	some group in ["initContainers", "containers"]
	some i, c in pod_spec.spec[group]
}

# True in a production environment.
production if input.environment.production == true

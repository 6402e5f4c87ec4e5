# Objects stay in the namespace of their application in their environment.
package bowline.policies.namespace

deny contains {"field": "metadata.namespace", "msg": msg} if {
	ns := input.object.metadata.namespace
	ns != input.environment.namespace
	msg := sprintf("is in namespace %q, but the app deploys to %q in %s", [ns, input.environment.namespace, input.environment.name])
}

deny contains {"field": "metadata.name", "msg": msg} if {
	input.object.kind == "Namespace"
	input.object.metadata.name != input.environment.namespace
	msg := sprintf("creates namespace %q, but the app deploys to %q in %s", [input.object.metadata.name, input.environment.namespace, input.environment.name])
}
